package server_test

// End-to-end tests of one connection's life: heartbeats, inbound limits, why it ended, the
// --dev echo endpoint.

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

func TestHeartbeat(t *testing.T) {
	t.Run("silent peer is dropped", func(t *testing.T) {
		cfg := devConfig()
		cfg.PingInterval, cfg.PongTimeout = 50*time.Millisecond, 50*time.Millisecond
		g := start(t, cfg)
		// gorilla answers pings only while the application reads; this client never reads,
		// so the server hears nothing from it after the upgrade.
		g.dial(t, "alice")
		opened := time.Now()
		if !g.presence(t, "alice") {
			t.Fatal("alice not online after connecting")
		}
		wait.For(t, patience, func() bool { return g.Srv.ForTest().Hub().Conns() == 0 }, "silent peer never dropped")
		took := time.Since(opened)
		if limit := cfg.PingInterval + cfg.PongTimeout; took < limit {
			t.Fatalf("dropped after %v, before ping-interval + pong-timeout (%v)", took, limit)
		}
		// The slack covers scheduling on a loaded CI machine; a dead-peer check that does
		// not work at all (no read deadline) never drops the peer.
		if limit := cfg.PingInterval + cfg.PongTimeout + 3*time.Second; took > limit {
			t.Fatalf("dropped after %v, want within %v", took, limit)
		}
		wait.For(t, patience, func() bool {
			return g.Metric("wsgateway_disconnects_total", "reason", "heartbeat_timeout") == 1
		}, "disconnect not counted with reason heartbeat_timeout")
		if g.presence(t, "alice") {
			t.Fatal("alice still online after her only connection was dropped")
		}
		if n := g.Metric("wsgateway_connections"); n != 0 {
			t.Fatalf("wsgateway_connections = %v, want 0", n)
		}
	})

	t.Run("peer that answers pings stays", func(t *testing.T) {
		cfg := devConfig()
		// pong-timeout leaves room for a pong delayed by a busy CI machine (a second was
		// not always enough under -race next to other packages); the client stays for
		// several times ping-interval + pong-timeout, which it could not without its pongs
		// moving the server's deadline.
		cfg.PingInterval, cfg.PongTimeout = 50*time.Millisecond, 2*time.Second
		g := start(t, cfg)
		c := g.dial(t, "alice")
		var mu sync.Mutex
		pings := 0
		c.SetPingHandler(func(data string) error {
			mu.Lock()
			pings++
			mu.Unlock()
			return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(patience))
		})
		readErr := make(chan error, 1)
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					readErr <- err
					return
				}
			}
		}()
		began := time.Now()
		wait.For(t, 2*patience, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return pings >= 140
		}, "fewer than 140 pings arrived")
		if stayed, limit := time.Since(began), 3*(cfg.PingInterval+cfg.PongTimeout); stayed < limit {
			t.Fatalf("140 pings came within %v, want them spread over at least %v", stayed, limit)
		}
		if g.Srv.ForTest().Hub().Conns() != 1 || !g.presence(t, "alice") {
			t.Fatal("a peer that answers every ping was dropped")
		}
		if n := g.Metric("wsgateway_disconnects_total", "reason", "heartbeat_timeout"); n != 0 {
			t.Fatalf("heartbeat_timeout disconnects = %v, want 0", n)
		}
		select {
		case err := <-readErr:
			t.Fatalf("client read failed: %v", err)
		default:
		}
		c.Close()
		<-readErr
	})

	t.Run("text ping gets text pong", func(t *testing.T) {
		g := start(t, devConfig())
		c := g.dial(t, "alice")
		for range 3 {
			c.Send(t, "ping")
			c.Expect(t, "pong")
		}
		if n := g.Metric("wsgateway_inbound_messages_total"); n != 0 {
			t.Fatalf(`"ping" counted as %v inbound messages, want 0 (never forwarded)`, n)
		}
		// Only exactly "ping" is special.
		for _, m := range []string{"PING", "ping ", "hello"} {
			c.Send(t, m)
		}
		wait.For(t, patience, func() bool { return g.Metric("wsgateway_inbound_messages_total") == 3 },
			"other text frames not counted as inbound")
		c.Send(t, "ping")
		c.Expect(t, "pong") // and no answer to the three others came first
	})
}

// Inbound frames over max-message-bytes end the connection with 1009, text frames that are
// not UTF-8 with 1007; a frame of exactly the limit is fine.
func TestInboundLimits(t *testing.T) {
	cases := []struct {
		name string
		typ  int
		data []byte
		code int // 0: the connection stays
	}{
		{"text at the limit", websocket.TextMessage, []byte(strings.Repeat("a", 1024)), 0},
		{"binary at the limit", websocket.BinaryMessage, make([]byte, 1024), 0},
		{"binary non-UTF-8 is fine", websocket.BinaryMessage, []byte{0xff, 0xfe}, 0},
		{"text one byte over", websocket.TextMessage, []byte(strings.Repeat("a", 1025)), websocket.CloseMessageTooBig},
		{"binary far over", websocket.BinaryMessage, make([]byte, 64<<10), websocket.CloseMessageTooBig},
		{"invalid UTF-8 text", websocket.TextMessage, []byte{0xff}, websocket.CloseInvalidFramePayloadData},
		{"surrogate in UTF-8 text", websocket.TextMessage, []byte("a\xed\xa0\x80b"), websocket.CloseInvalidFramePayloadData},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, c := startSmall(t)
			err := c.WriteMessage(tc.typ, tc.data)
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				c.Send(t, "ping")
				c.Expect(t, "pong")
				if n := g.Metric("wsgateway_inbound_bytes_total"); n != float64(len(tc.data)) {
					t.Fatalf("inbound_bytes_total = %v, want %d", n, len(tc.data))
				}
				return
			}
			// The server may hang up while a large frame is still being sent (the write then
			// fails with a reset); its close frame is still there to read.
			if err != nil && len(tc.data) <= smallLimit+1 {
				t.Fatal(err)
			}
			c.ExpectClose(t, tc.code)
			wait.For(t, patience, func() bool {
				return g.Metric("wsgateway_disconnects_total", "reason", "protocol") == 1
			}, "disconnect not counted with reason protocol")
			if n := g.Metric("wsgateway_inbound_messages_total"); n != 0 {
				t.Fatalf("a refused frame counted as inbound (%v)", n)
			}
		})
	}
}

// Why a connection ended is counted by reason. A client that goes away — with a close frame
// or by just dropping the TCP connection, as a killed tab or a lost network does — is
// "normal"; only frames that break the rules are "protocol".
func TestDisconnectReasons(t *testing.T) {
	cases := []struct {
		name   string
		end    func(t *testing.T, c *wsclient.Conn)
		reason string
	}{
		{"close 1000", func(t *testing.T, c *wsclient.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
			if _, code := c.ReadUntilClose(t); code != websocket.CloseNormalClosure {
				t.Fatalf("close answered with %d, want 1000", code)
			}
		}, "normal"},
		{"close 1001", func(t *testing.T, c *wsclient.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(patience))
			c.ReadUntilClose(t)
		}, "normal"},
		{"close without status", func(t *testing.T, c *wsclient.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, nil, time.Now().Add(patience))
			c.ReadUntilClose(t)
		}, "normal"},
		{"TCP dropped without a close frame", func(t *testing.T, c *wsclient.Conn) { c.Close() }, "normal"},
		{"close 1002 from the client", func(t *testing.T, c *wsclient.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseProtocolError, ""), time.Now().Add(patience))
			c.ReadUntilClose(t)
		}, "protocol"},
		{"frame too big", func(t *testing.T, c *wsclient.Conn) {
			_ = c.WriteMessage(websocket.BinaryMessage, make([]byte, 2048))
			c.ReadUntilClose(t)
		}, "protocol"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, c := startSmall(t)
			tc.end(t, c)
			wait.For(t, patience, func() bool { return g.Metric("wsgateway_disconnects_total") == 1 },
				"disconnect not counted")
			for _, r := range []string{"normal", "protocol", "heartbeat_timeout", "error"} {
				want := 0.0
				if r == tc.reason {
					want = 1
				}
				if n := g.Metric("wsgateway_disconnects_total", "reason", r); n != want {
					t.Errorf("disconnects_total{reason=%q} = %v, want %v", r, n, want)
				}
			}
		})
	}
}

// /ws/echo is the tutorial's connectivity check: on in --dev only.
func TestEcho(t *testing.T) {
	t.Run("dev", func(t *testing.T) {
		g := start(t, devConfig())
		c := g.connect(t, wsclient.Options{Path: "/ws/echo"})
		for _, m := range []struct {
			typ  int
			data []byte
		}{
			{websocket.TextMessage, []byte("hello ✓")},
			{websocket.BinaryMessage, []byte{0, 0xff, 0xfe}},
			{websocket.TextMessage, []byte("ping")},
			{websocket.TextMessage, []byte{}},
		} {
			if err := c.WriteMessage(m.typ, m.data); err != nil {
				t.Fatal(err)
			}
			typ, data := c.Next(t)
			if typ != m.typ || string(data) != string(m.data) {
				t.Fatalf("echo of type %d %q: type %d %q", m.typ, m.data, typ, data)
			}
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte{0xc3}); err != nil {
			t.Fatal(err)
		}
		c.ExpectClose(t, websocket.CloseInvalidFramePayloadData)
	})
	t.Run("not without dev", func(t *testing.T) {
		g := start(t, prodConfig())
		g.expectRefused(t, "/ws/echo", nil, http.StatusNotFound)
		g.expectRefused(t, "/ws/echo?token="+hsToken(t, jwttest.Claims("alice")), nil, http.StatusNotFound)
	})
}

// smallLimit is the message size limit of startSmall's gateway.
const smallLimit = 1024

// startSmall starts a gateway that takes messages of up to smallLimit bytes and connects
// alice to it.
func startSmall(t *testing.T) (*gw, *wsclient.Conn) {
	cfg := devConfig()
	cfg.MaxMessageBytes = smallLimit
	g := start(t, cfg)
	return g, g.dial(t, "alice")
}
