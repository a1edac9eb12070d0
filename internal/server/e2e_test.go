package server_test

// End-to-end tests of the single-node, in-memory gateway (issue 2, item 9): each test boots the
// real server on 127.0.0.1:0 and talks to it with gorilla WebSocket dialers and net/http, as a
// browser and a backend would. Conditions are polled with a deadline (wait.For), never slept on.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// TestMain fails the package when any goroutine outlives the tests: every server is shut down
// by its test, and Shutdown must leave nothing of it running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The data of a push arrives as the exact bytes of the JSON value that was sent: escapes stay
// escapes, whitespace inside the value stays, nothing is re-encoded. JSON is UTF-8, so it is
// always a text frame.
func TestPushArrivesByteForByte(t *testing.T) {
	g := start(t, devConfig())
	c := g.dial(t, "alice")
	cases := []struct {
		name string
		raw  string // the value of "data" in the request body
		want string // what the client must receive; raw unless the body had space around it
	}{
		{name: "object with unicode and escapes",
			raw: `{"text":"héllo wörld ✓ 😀","esc":"\u00e9\ud83d\ude00 \"q\" \\ \/ \n\t","html":"<a href='x'>&amp;</a>"}`},
		{name: "string", raw: `"just a string"`},
		{name: "empty string", raw: `""`},
		{name: "integer", raw: `42`},
		{name: "number with exponent", raw: `-1.50e+10`},
		{name: "big number beyond float64", raw: `123456789012345678901234567890.000000000000000000001`},
		{name: "array with whitespace inside", raw: "[ 1,\n\t2 ,  {\"x\" : null} , \"a\"\r\n]"},
		{name: "nested and empty", raw: `{"a":[],"b":{},"c":[[[]]],"d":false}`},
		{name: "true", raw: `true`},
		{name: "keys in their original order", raw: `{"z":1,"a":2,"m":3}`},
		{name: "space around the value is not part of it", raw: " \n {\"k\": 1 }\t \n", want: `{"k": 1 }`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.raw
			}
			res := g.pushBody(t, `{"user_id":"alice","data":`+tc.raw+`}`)
			if len(res) != 1 || !res[0].Online || res[0].Queued {
				t.Fatalf("results %+v, want alice online and not queued", res)
			}
			typ, data := read(t, c)
			if typ != websocket.TextMessage {
				t.Fatalf("frame type %d, want text (%d)", typ, websocket.TextMessage)
			}
			if string(data) != want {
				t.Fatalf("received %q\nwant      %q", data, want)
			}
		})
	}
}

// A payload that is not valid UTF-8 (only possible through the bus, e.g. redis-cli PUBLISH)
// goes out as a binary frame, to one connection, to several devices (the prepared-message
// path) and as a broadcast; a valid one as text.
func TestDeliverFrameType(t *testing.T) {
	g := start(t, devConfig())
	alice := g.dial(t, "alice")
	bob1, bob2 := g.dial(t, "bob"), g.dial(t, "bob")
	hub := g.srv.ForTest().Hub()
	cases := []struct {
		name    string
		send    func(data []byte)
		conns   []*websocket.Conn
		payload []byte
		typ     int
	}{
		{"binary to one connection", func(d []byte) { hub.Deliver("alice", 0, d) }, []*websocket.Conn{alice}, []byte{0xff, 0xfe}, websocket.BinaryMessage},
		{"truncated UTF-8 is binary", func(d []byte) { hub.Deliver("alice", 0, d) }, []*websocket.Conn{alice}, []byte("caf\xc3"), websocket.BinaryMessage},
		{"binary to two devices", func(d []byte) { hub.Deliver("bob", 0, d) }, []*websocket.Conn{bob1, bob2}, []byte{0, 1, 2, 0xff}, websocket.BinaryMessage},
		{"UTF-8 to one connection is text", func(d []byte) { hub.Deliver("alice", 0, d) }, []*websocket.Conn{alice}, []byte("plain ✓"), websocket.TextMessage},
		{"UTF-8 to two devices is text", func(d []byte) { hub.Deliver("bob", 0, d) }, []*websocket.Conn{bob1, bob2}, []byte("not JSON at all"), websocket.TextMessage},
		{"binary broadcast", hub.Broadcast, []*websocket.Conn{alice, bob1, bob2}, []byte{0x80, 0x81}, websocket.BinaryMessage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.send(tc.payload)
			for i, c := range tc.conns {
				typ, data := read(t, c)
				if typ != tc.typ || string(data) != string(tc.payload) {
					t.Fatalf("connection %d got type %d %q, want type %d %q", i, typ, data, tc.typ, tc.payload)
				}
			}
		})
	}
}

// Every connection of a user receives each push; other users receive none of it.
func TestMultiDevice(t *testing.T) {
	g := start(t, devConfig())
	alice := []*websocket.Conn{g.dial(t, "alice"), g.dial(t, "alice"), g.dial(t, "alice")}
	bob := g.dial(t, "bob")
	if n := g.srv.ForTest().Hub().Conns(); n != 4 {
		t.Fatalf("hub holds %d connections, want 4", n)
	}
	for i := range 3 {
		if r := g.push(t, "alice", fmt.Sprintf(`{"n":%d}`, i)); !r.Online {
			t.Fatalf("push %d: %+v, want online", i, r)
		}
	}
	for d, c := range alice {
		for i := range 3 {
			if got, want := readText(t, c), fmt.Sprintf(`{"n":%d}`, i); got != want {
				t.Fatalf("device %d message %d: %q, want %q", d, i, got, want)
			}
		}
	}
	g.push(t, "bob", `"for bob"`)
	expectNext(t, bob, `"for bob"`) // nothing of alice's came first
}

// Pushes to an offline user are stored and flushed on connect, in order, exactly once, before
// anything pushed after the connect; what is pushed while the user is away again comes on
// the next connect, and only that.
func TestOffline(t *testing.T) {
	g := start(t, devConfig())
	const n = 5
	for i := range n {
		r := g.push(t, "alice", itoa(i))
		if r.Online || !r.Queued {
			t.Fatalf("push %d to an offline user: %+v, want online false, queued true", i, r)
		}
	}
	if got := g.metric(t, "wsgateway_offline_stored_total", "source", "push"); got != n {
		t.Fatalf("offline_stored_total{source=push} = %v, want %d", got, n)
	}

	c := g.dial(t, "alice")
	for i := range n {
		expectNext(t, c, itoa(i))
	}
	if r := g.push(t, "alice", `"live"`); !r.Online || r.Queued {
		t.Fatalf("live push: %+v, want online", r)
	}
	expectNext(t, c, `"live"`)

	// Away again: a clean close, then the gateway must notice before the next pushes.
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
	if _, code := readUntilClose(t, c); code != websocket.CloseNormalClosure {
		t.Fatalf("close answered with %d, want 1000", code)
	}
	wait.For(t, patience, func() bool { return !g.presence(t, "alice") }, "alice still online after closing")
	for i := n; i < 2*n; i++ {
		if r := g.push(t, "alice", itoa(i)); !r.Queued {
			t.Fatalf("push %d: %+v, want queued", i, r)
		}
	}
	c2 := g.dial(t, "alice")
	for i := n; i < 2*n; i++ {
		expectNext(t, c2, itoa(i))
	}
	g.push(t, "alice", `"end"`)
	expectNext(t, c2, `"end"`) // nothing flushed twice, nothing left behind
	if got := g.metric(t, "wsgateway_offline_flushed_total"); got != 2*n {
		t.Fatalf("offline_flushed_total = %v, want %d", got, 2*n)
	}
}

// offline-max keeps the newest messages of a user and drops the oldest.
func TestOfflineCap(t *testing.T) {
	cfg := devConfig()
	cfg.OfflineMax = 3
	g := start(t, cfg)
	for i := range 7 {
		g.push(t, "alice", itoa(i))
	}
	c := g.dial(t, "alice")
	for _, want := range []string{"4", "5", "6"} {
		expectNext(t, c, want)
	}
	g.push(t, "alice", `"end"`)
	expectNext(t, c, `"end"`)
}

// One user with several pushes through user_ids: each listed user gets one copy (duplicates
// in the list count once) and the results tell who was online.
func TestPushToManyUsers(t *testing.T) {
	g := start(t, devConfig())
	alice := g.dial(t, "alice")
	res := g.pushBody(t, `{"user_ids":["alice","bob","alice"],"data":{"m":1}}`)
	want := []pushResult{{UserID: "alice", Online: true}, {UserID: "bob", Queued: true}}
	if len(res) != len(want) {
		t.Fatalf("results %+v, want %+v", res, want)
	}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("results %+v, want %+v", res, want)
		}
	}
	expectNext(t, alice, `{"m":1}`)
	g.push(t, "alice", `"end"`)
	expectNext(t, alice, `"end"`) // one copy although listed twice
	bob := g.dial(t, "bob")
	expectNext(t, bob, `{"m":1}`)
}

// The core guarantee: a client that keeps reconnecting while one publisher pushes gets every
// message exactly once and in publish order across all its connections — whether a message
// reached it live, waited in its send queue when it left (stored back offline), arrived while
// its last connection was unsubscribing, or was pushed while it was away.
func TestOrderAcrossReconnects(t *testing.T) {
	const total = 2000
	cfg := devConfig()
	cfg.OfflineMax = total // the cap must not drop anything here
	g := start(t, cfg)

	// One publisher: publish order is the order the client must see.
	ctx, cancel := context.WithCancel(context.Background())
	pushed := make(chan struct{})
	var pushErr error
	var queued, online int
	go func() {
		defer close(pushed)
		for i := range total {
			body := fmt.Sprintf(`{"user_id":"alice","data":{"seq":%d}}`, i)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.base+"/api/v1/push", strings.NewReader(body))
			resp, err := g.client.Do(req)
			if err != nil {
				pushErr = fmt.Errorf("push %d: %w", i, err)
				return
			}
			var r struct{ Results []pushResult }
			err = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || len(r.Results) != 1 {
				pushErr = fmt.Errorf("push %d: HTTP %d, %+v, %v", i, resp.StatusCode, r, err)
				return
			}
			if r.Results[0].Queued {
				queued++
			} else {
				online++
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-pushed })

	rng := mrand.New(mrand.NewPCG(1, 2))
	deadline := time.Now().Add(3 * patience)
	var got []int
	conns, serverClosed := 0, 0
	for len(got) < total {
		select {
		case <-pushed:
			if pushErr != nil {
				t.Fatal(pushErr)
			}
		default:
		}
		if time.Now().After(deadline) {
			t.Logf("after %d connections only %d of %d messages arrived", conns, len(got), total)
			checkSequence(t, got, total) // says which are missing
		}
		c := g.dial(t, "alice")
		conns++
		// Read a random number of messages (each arrives, live or from the backlog: while
		// this connection lives, every push goes to it), then leave cleanly: send a close
		// and keep reading until the server's close, so that what the server wrote before
		// it saw the close is read, and what it had not written is stored back.
		target := min(len(got)+1+rng.IntN(60), total)
		ended := false
		for len(got) < target {
			_ = c.SetReadDeadline(time.Now().Add(patience))
			_, data, err := c.ReadMessage()
			if err != nil {
				// The server may close first (a 1013 when this reader fell behind);
				// that is one more reconnect, and nothing may be lost by it.
				serverClosed++
				ended = true
				break
			}
			got = append(got, seqOf(t, data))
		}
		if !ended {
			_ = c.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
			msgs, _ := readUntilClose(t, c)
			for _, m := range msgs {
				got = append(got, seqOf(t, m))
			}
		}
		c.Close()
	}
	<-pushed
	if pushErr != nil {
		t.Fatal(pushErr)
	}
	checkSequence(t, got, total)

	// Nothing is left over anywhere: the next message after a reconnect is a new one.
	c := g.dial(t, "alice")
	g.push(t, "alice", `{"seq":"end"}`)
	expectNext(t, c, `{"seq":"end"}`)
	t.Logf("%d connections (%d closed by the server); pushes: %d live, %d waited in the inbox",
		conns, serverClosed, online, queued)
}

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
		wait.For(t, patience, func() bool { return g.srv.ForTest().Hub().Conns() == 0 }, "silent peer never dropped")
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
			return g.metric(t, "wsgateway_disconnects_total", "reason", "heartbeat_timeout") == 1
		}, "disconnect not counted with reason heartbeat_timeout")
		if g.presence(t, "alice") {
			t.Fatal("alice still online after her only connection was dropped")
		}
		if n := g.metric(t, "wsgateway_connections"); n != 0 {
			t.Fatalf("wsgateway_connections = %v, want 0", n)
		}
	})

	t.Run("peer that answers pings stays", func(t *testing.T) {
		cfg := devConfig()
		// pong-timeout leaves room for a pong delayed by a busy CI machine; the client
		// stays for several times ping-interval + pong-timeout, which it could not without
		// its pongs moving the server's deadline.
		cfg.PingInterval, cfg.PongTimeout = 50*time.Millisecond, time.Second
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
			return pings >= 70
		}, "fewer than 70 pings arrived")
		if stayed, limit := time.Since(began), 3*(cfg.PingInterval+cfg.PongTimeout); stayed < limit {
			t.Fatalf("70 pings came within %v, want them spread over at least %v", stayed, limit)
		}
		if g.srv.ForTest().Hub().Conns() != 1 || !g.presence(t, "alice") {
			t.Fatal("a peer that answers every ping was dropped")
		}
		if n := g.metric(t, "wsgateway_disconnects_total", "reason", "heartbeat_timeout"); n != 0 {
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
			if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			expectNext(t, c, "pong")
		}
		if n := g.metric(t, "wsgateway_inbound_messages_total"); n != 0 {
			t.Fatalf(`"ping" counted as %v inbound messages, want 0 (never forwarded)`, n)
		}
		// Only exactly "ping" is special.
		for _, m := range []string{"PING", "ping ", "hello"} {
			if err := c.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		wait.For(t, patience, func() bool { return g.metric(t, "wsgateway_inbound_messages_total") == 3 },
			"other text frames not counted as inbound")
		if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		expectNext(t, c, "pong") // and no answer to the three others came first
	})
}

// A client that stops reading while messages pile up is closed with 1013 once its send queue
// is full. It still reads what was written before the close frame; everything else waits in
// the inbox, unacknowledged, and comes on the reconnect: both connections together get every
// message once, in order.
func TestSlowConsumer(t *testing.T) {
	cfg := devConfig()
	cfg.SendQueue = 8
	cfg.OfflineMax = 5000
	cfg.WriteTimeout = 2 * patience // the blocked write must outlast the test's pushing
	g := startWith(t, cfg, server.Options{CloseGrace: patience})
	c := g.dialWith(t, &smallBufferDialer, "alice")

	// Fill the socket buffers and the queue. The messages go in as the API's push puts them
	// (Server.Push): megabytes of JSON through HTTP under -race cost seconds and test nothing
	// more. The pushes after the verdict go through the API.
	const pad = 64 << 10
	pushed := 0
	for g.metric(t, "wsgateway_slow_consumers_total") == 0 {
		if pushed == 2000 {
			t.Fatalf("%d messages of 64 KiB sent to a client that reads nothing, and it is still not a slow consumer", pushed)
		}
		if _, err := g.srv.Push(context.Background(), "alice", []byte(seqData(pushed, pad))); err != nil {
			t.Fatal(err)
		}
		pushed++
	}
	// Pushes after the verdict, before the connection is gone, must not be lost either.
	for range 20 {
		g.push(t, "alice", seqData(pushed, pad))
		pushed++
	}

	msgs, code := readUntilClose(t, c)
	if code != websocket.CloseTryAgainLater {
		t.Fatalf("slow consumer closed with %d, want 1013", code)
	}
	var got []int
	for _, m := range msgs {
		got = append(got, seqOf(t, m))
	}
	first := len(got)

	// Reconnect at once, as 1013 asks: the backlog must already be waiting, complete.
	c2 := g.dial(t, "alice")
	for len(got) < pushed {
		_, data := read(t, c2)
		got = append(got, seqOf(t, data))
	}
	checkSequence(t, got, pushed)
	if first == 0 || first == pushed {
		t.Fatalf("first connection got %d of %d messages; the test needs a split", first, pushed)
	}
	g.push(t, "alice", `"end"`)
	expectNext(t, c2, `"end"`)

	if n := g.metric(t, "wsgateway_slow_consumers_total"); n != 1 {
		t.Fatalf("slow_consumers_total = %v, want 1", n)
	}
	if n := g.metric(t, "wsgateway_disconnects_total", "reason", "slow_consumer"); n != 1 {
		t.Fatalf("disconnects_total{reason=slow_consumer} = %v, want 1", n)
	}
	t.Logf("%d messages: %d on the first connection, %d after the reconnect", pushed, first, pushed-first)
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
			cfg := devConfig()
			cfg.MaxMessageBytes = 1024
			g := start(t, cfg)
			c := g.dial(t, "alice")
			err := c.WriteMessage(tc.typ, tc.data)
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
					t.Fatal(err)
				}
				expectNext(t, c, "pong")
				if n := g.metric(t, "wsgateway_inbound_bytes_total"); n != float64(len(tc.data)) {
					t.Fatalf("inbound_bytes_total = %v, want %d", n, len(tc.data))
				}
				return
			}
			// The server may hang up while a large frame is still being sent (the write then
			// fails with a reset); its close frame is still there to read.
			if err != nil && len(tc.data) <= int(cfg.MaxMessageBytes)+1 {
				t.Fatal(err)
			}
			expectClose(t, c, tc.code)
			wait.For(t, patience, func() bool {
				return g.metric(t, "wsgateway_disconnects_total", "reason", "protocol") == 1
			}, "disconnect not counted with reason protocol")
			if n := g.metric(t, "wsgateway_inbound_messages_total"); n != 0 {
				t.Fatalf("a refused frame counted as inbound (%v)", n)
			}
		})
	}
}

func TestClientAuth(t *testing.T) {
	g := start(t, prodConfig())
	rsaKey := jwttest.NewRSA(t).Private
	ecKey := jwttest.NewEC(t)
	noExp := jwt.MapClaims{"sub": "alice"}
	expired := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()}
	cases := []struct {
		name  string
		path  string
		hdr   http.Header
		token string // checked never to appear in the error body
		ok    bool
	}{
		{name: "token in query", path: "/ws?token=" + hsToken(t, jwttest.Claims("alice")), ok: true},
		{name: "token in header", path: "/ws", hdr: http.Header{"Authorization": {"Bearer " + hsToken(t, jwttest.Claims("alice"))}}, ok: true},
		{name: "no token", path: "/ws"},
		{name: "empty token", path: "/ws?token="},
		{name: "garbage", path: "/ws?token=not.a.jwt", token: "not.a.jwt"},
		{name: "wrong secret", token: jwttest.Sign(t, jwt.SigningMethodHS256, []byte("another-secret"), jwttest.Claims("alice"))},
		{name: "expired", token: hsToken(t, expired)},
		{name: "no exp", token: hsToken(t, noExp)},
		{name: "alg none", token: jwttest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwttest.Claims("alice"))},
		{name: "RS256 on an HS256 server", token: jwttest.Sign(t, jwt.SigningMethodRS256, rsaKey, jwttest.Claims("alice"))},
		{name: "ES256 on an HS256 server", token: jwttest.Sign(t, jwt.SigningMethodES256, ecKey, jwttest.Claims("alice"))},
		{name: "HS512 with the right secret", token: jwttest.Sign(t, jwt.SigningMethodHS512, []byte(testSecret), jwttest.Claims("alice"))},
		{name: "no sub", token: hsToken(t, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()})},
		{name: "invalid sub", token: hsToken(t, jwttest.Claims("al ice"))},
		{name: "user_id without --dev", path: "/ws?user_id=alice"},
		{name: "user_id next to a bad token", path: "/ws?user_id=alice&token=bad", token: "bad"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = "/ws?token=" + tc.token
			}
			if tc.ok {
				c, resp, err := g.dialRaw(t, &dialer, path, tc.hdr)
				if err != nil {
					t.Fatalf("dial: %v (%s)", err, describe(resp))
				}
				if !g.presence(t, "alice") {
					t.Fatal("connected, but alice (the token's sub) is not online")
				}
				c.Close()
				wait.For(t, patience, func() bool { return !g.presence(t, "alice") }, "alice still online")
				return
			}
			c, resp, err := g.dialRaw(t, &dialer, path, tc.hdr)
			if err == nil {
				c.Close()
				t.Fatal("connected, want 401")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%v (%s), want HTTP 401", err, describe(resp))
			}
			body, _ := io.ReadAll(resp.Body)
			if tc.token != "" && strings.Contains(string(body), tc.token) {
				t.Fatalf("the refusal quotes the token: %s", body)
			}
			errorField(t, body)
		})
	}
	if n := g.metric(t, "wsgateway_connects_total"); n != 2 {
		t.Fatalf("connects_total = %v, want 2 (only the valid tokens)", n)
	}
}

// A server configured with an RSA public key accepts RS256 only: above all not an HS256
// token whose "secret" is that public key's PEM, the classic algorithm-confusion attack.
func TestClientAuthPublicKey(t *testing.T) {
	rk := jwttest.NewRSA(t)
	key, der, pubPEM := rk.Private, rk.DER, rk.PEM
	cfg, err := config.Parse([]string{"--addr=127.0.0.1:0", "--jwt-public-key=" + rk.Path, "--api-keys=" + testKey1}, nil, nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	g := start(t, cfg)
	other := jwttest.NewRSA(t).Private
	cases := []struct {
		name  string
		token string
		ok    bool
	}{
		{"RS256 with the key", jwttest.Sign(t, jwt.SigningMethodRS256, key, jwttest.Claims("alice")), true},
		{"HS256 signed with the public key PEM", jwttest.Sign(t, jwt.SigningMethodHS256, pubPEM, jwttest.Claims("alice")), false},
		{"HS256 signed with the public key DER", jwttest.Sign(t, jwt.SigningMethodHS256, der, jwttest.Claims("alice")), false},
		{"RS256 with another key", jwttest.Sign(t, jwt.SigningMethodRS256, other, jwttest.Claims("alice")), false},
		{"PS256 with the key", jwttest.Sign(t, jwt.SigningMethodPS256, key, jwttest.Claims("alice")), false},
		{"RS512 with the key", jwttest.Sign(t, jwt.SigningMethodRS512, key, jwttest.Claims("alice")), false},
		{"alg none", jwttest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwttest.Claims("alice")), false},
		{"RS256 expired", jwttest.Sign(t, jwt.SigningMethodRS256, key, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}), false},
		{"RS256 without exp", jwttest.Sign(t, jwt.SigningMethodRS256, key, jwt.MapClaims{"sub": "alice"}), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				g.expectRefused(t, "/ws?token="+tc.token, nil, http.StatusUnauthorized)
				return
			}
			c, resp, err := g.dialRaw(t, &dialer, "/ws?token="+tc.token, nil)
			if err != nil {
				t.Fatalf("dial: %v (%s)", err, describe(resp))
			}
			g.push(t, "alice", `"hi"`)
			expectNext(t, c, `"hi"`)
		})
	}
}

func TestOrigin(t *testing.T) {
	cases := []struct {
		name    string
		allowed []string
		origin  string // "self" is the server's own http://host:port
		status  int    // 0: connects
	}{
		{"same host, default policy", nil, "self", 0},
		{"no Origin (not a browser), default policy", nil, "", 0},
		{"foreign origin, default policy", nil, "http://evil.example", http.StatusForbidden},
		{"same host name on another port", nil, "http://127.0.0.1:1", http.StatusForbidden},
		{"opaque origin null", nil, "null", http.StatusForbidden},
		{"listed origin", []string{"https://app.example.com", "https://admin.example.com"}, "https://admin.example.com", 0},
		{"listed origin, case differs", []string{"https://app.example.com"}, "https://APP.example.com", 0},
		{"unlisted origin", []string{"https://app.example.com"}, "https://evil.example", http.StatusForbidden},
		{"listed host, other scheme", []string{"https://app.example.com"}, "http://app.example.com", http.StatusForbidden},
		{"listed suffix is not a match", []string{"https://app.example.com"}, "https://app.example.com.evil.example", http.StatusForbidden},
		{"own host is not implied by a list", []string{"https://app.example.com"}, "self", http.StatusForbidden},
		{"wildcard", []string{"*"}, "http://anything.example", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := devConfig()
			cfg.AllowedOrigins = tc.allowed
			g := start(t, cfg)
			hdr := http.Header{}
			switch tc.origin {
			case "":
			case "self":
				hdr.Set("Origin", g.base)
			default:
				hdr.Set("Origin", tc.origin)
			}
			if tc.status != 0 {
				g.expectRefused(t, "/ws?user_id=alice", hdr, tc.status)
				if n := g.metric(t, "wsgateway_refused_total", "status", itoa(tc.status)); n != 1 {
					t.Fatalf("refused_total{status=%d} = %v, want 1", tc.status, n)
				}
				return
			}
			if _, resp, err := g.dialRaw(t, &dialer, "/ws?user_id=alice", hdr); err != nil {
				t.Fatalf("dial with Origin %q: %v (%s)", hdr.Get("Origin"), err, describe(resp))
			}
		})
	}
}

// max-conns-per-user: the next connect of that user gets 429, other users are not affected,
// and a freed slot can be taken again.
func TestMaxConnsPerUser(t *testing.T) {
	cfg := devConfig()
	cfg.MaxConnsPerUser = 2
	g := start(t, cfg)
	a1 := g.dial(t, "alice")
	g.dial(t, "alice")
	g.expectRefused(t, "/ws?user_id=alice", nil, http.StatusTooManyRequests)
	g.dial(t, "bob")
	a1.Close()
	wait.For(t, patience, func() bool { return g.srv.ForTest().Hub().Conns() == 2 }, "closed connection not released")
	c := g.dial(t, "alice")
	g.push(t, "alice", `"still works"`)
	expectNext(t, c, `"still works"`)
}

// Every malformed or oversized API request is refused with its status and a JSON error body,
// and nothing of it is delivered.
func TestAPIRequestErrors(t *testing.T) {
	g := start(t, devConfig())
	c := g.dial(t, "alice")
	ids := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf(`"u%d"`, i)
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	big := `{"user_id":"alice","data":"` + strings.Repeat("a", 1<<20) + `"}`
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		status int
	}{
		{"push body over 1 MiB", "POST", "/api/v1/push", big, 413},
		{"broadcast body over 1 MiB", "POST", "/api/v1/broadcast", `{"data":"` + strings.Repeat("a", 1<<20) + `"}`, 413},
		{"malformed JSON", "POST", "/api/v1/push", `{"user_id":"alice","data":`, 400},
		{"not JSON", "POST", "/api/v1/push", `hello`, 400},
		{"empty body", "POST", "/api/v1/push", ``, 400},
		{"JSON array", "POST", "/api/v1/push", `[1,2]`, 400},
		{"trailing garbage", "POST", "/api/v1/push", `{"user_id":"alice","data":1} x`, 400},
		{"two values", "POST", "/api/v1/push", `{"user_id":"alice","data":1}{"user_id":"alice","data":2}`, 400},
		{"missing data", "POST", "/api/v1/push", `{"user_id":"alice"}`, 400},
		{"null data", "POST", "/api/v1/push", `{"user_id":"alice","data":null}`, 400},
		{"missing user", "POST", "/api/v1/push", `{"data":1}`, 400},
		{"empty user_ids", "POST", "/api/v1/push", `{"user_ids":[],"data":1}`, 400},
		{"user_id not a string", "POST", "/api/v1/push", `{"user_id":7,"data":1}`, 400},
		{"user id with a space", "POST", "/api/v1/push", `{"user_id":"al ice","data":1}`, 400},
		{"user id with a brace", "POST", "/api/v1/push", `{"user_id":"a}b","data":1}`, 400},
		{"user id non-ASCII", "POST", "/api/v1/push", `{"user_id":"zoë","data":1}`, 400},
		{"user id of 129 bytes", "POST", "/api/v1/push", `{"user_id":"` + strings.Repeat("a", 129) + `","data":1}`, 400},
		{"both user_id and user_ids", "POST", "/api/v1/push", `{"user_id":"alice","user_ids":["bob"],"data":1}`, 400},
		{"one bad id in user_ids", "POST", "/api/v1/push", `{"user_ids":["bob","b b"],"data":1}`, 400},
		{"1001 user_ids", "POST", "/api/v1/push", `{"user_ids":` + ids(1001) + `,"data":1}`, 400},
		{"broadcast without data", "POST", "/api/v1/broadcast", `{}`, 400},
		{"broadcast malformed", "POST", "/api/v1/broadcast", `{"data":`, 400},
		{"presence of a bad id", "GET", "/api/v1/users/a%20b/presence", ``, 400},
		{"kick of a bad id", "DELETE", "/api/v1/users/" + strings.Repeat("a", 129) + "/connections", ``, 400},
		{"unknown route", "GET", "/api/v1/nothing", ``, 404},
		{"wrong method", "GET", "/api/v1/push", ``, 405},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := g.api(t, tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("HTTP %d %.200s, want %d", status, body, tc.status)
			}
			errorField(t, body)
		})
	}
	// The boundaries that are allowed: 1000 user ids, a 128-byte id, every allowed byte.
	if res := g.pushBody(t, `{"user_ids":`+ids(1000)+`,"data":1}`); len(res) != 1000 {
		t.Fatalf("1000 user_ids: %d results, want 1000", len(res))
	}
	g.push(t, strings.Repeat("a", 128), `1`)
	g.push(t, "Az09_.:@-", `1`)
	// Space after the one value is no "trailing garbage".
	if res := g.pushBody(t, "{\"user_id\":\"alice\",\"data\":\"ws\"} \r\n\t"); len(res) != 1 || !res[0].Online {
		t.Fatalf("push with trailing whitespace: %+v", res)
	}
	expectNext(t, c, `"ws"`)
	g.push(t, "alice", `"end"`)
	expectNext(t, c, `"end"`) // none of the refused pushes reached alice
}

// Outside --dev every /api call needs one of the API keys; both keys of a rotation work.
func TestAPIKeys(t *testing.T) {
	g := start(t, prodConfig())
	c, resp, err := g.dialRaw(t, &dialer, "/ws?token="+hsToken(t, jwttest.Claims("alice")), nil)
	if err != nil {
		t.Fatalf("dial: %v (%s)", err, describe(resp))
	}
	cases := []struct {
		name   string
		auth   string
		status int
	}{
		{"no header", "", 401},
		{"wrong key", "Bearer nope", 401},
		{"key prefix only", "Bearer " + testKey1[:5], 401},
		{"key with extra", "Bearer " + testKey1 + "x", 401},
		{"not bearer", "Basic " + testKey1, 401},
		{"bearer without space", "Bearer" + testKey1, 401},
		{"client JWT is no API key", "Bearer " + hsToken(t, jwttest.Claims("alice")), 401},
		{"first key", "Bearer " + testKey1, 200},
		{"second key", "Bearer " + testKey2, 200},
		{"scheme case-insensitive", "bearer " + testKey2, 200},
	}
	n := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.auth != "" {
				hdr.Set("Authorization", tc.auth)
			}
			for _, r := range []struct{ method, path, body string }{
				{"POST", "/api/v1/push", fmt.Sprintf(`{"user_id":"alice","data":%d}`, n)},
				{"POST", "/api/v1/broadcast", `{"data":"b"}`},
				{"GET", "/api/v1/users/alice/presence", ""},
			} {
				status, body := g.request(t, r.method, r.path, r.body, hdr)
				if status != tc.status {
					t.Fatalf("%s %s: HTTP %d %s, want %d", r.method, r.path, status, body, tc.status)
				}
				if status != 200 {
					errorField(t, body)
				}
			}
			if tc.status == 200 {
				expectNext(t, c, itoa(n)) // the push went through
				expectNext(t, c, `"b"`)   // and the broadcast
				n++
			}
		})
	}
	// The refused calls delivered nothing: the next message is the next accepted one.
	g.push(t, "alice", `"end"`)
	expectNext(t, c, `"end"`)
}

// DELETE /api/v1/users/{id}/connections closes every connection of that user with 4001, and
// no one else's.
func TestKick(t *testing.T) {
	g := start(t, devConfig())
	alice := []*websocket.Conn{g.dial(t, "alice"), g.dial(t, "alice")}
	bob := g.dial(t, "bob")
	status, body := g.api(t, http.MethodDelete, "/api/v1/users/alice/connections", "")
	if status != http.StatusOK || strings.TrimSpace(string(body)) != "{}" {
		t.Fatalf("kick: HTTP %d %s, want 200 {}", status, body)
	}
	for _, c := range alice {
		expectClose(t, c, 4001)
	}
	wait.For(t, patience, func() bool { return !g.presence(t, "alice") }, "alice online after the kick")
	wait.For(t, patience, func() bool { return g.metric(t, "wsgateway_disconnects_total", "reason", "kicked") == 2 },
		"kicks not counted")
	g.push(t, "bob", `"still here"`)
	expectNext(t, bob, `"still here"`)
	// Kicking someone who is not connected is fine, and a kicked user may come back.
	if status, body := g.api(t, http.MethodDelete, "/api/v1/users/nobody/connections", ""); status != http.StatusOK {
		t.Fatalf("kick of an offline user: HTTP %d %s", status, body)
	}
	c := g.dial(t, "alice")
	g.push(t, "alice", `"welcome back"`)
	expectNext(t, c, `"welcome back"`)
}

func TestPresence(t *testing.T) {
	g := start(t, devConfig())
	if g.presence(t, "alice") {
		t.Fatal("alice online before connecting")
	}
	c1 := g.dial(t, "alice")
	if !g.presence(t, "alice") {
		t.Fatal("alice offline after connecting")
	}
	c2 := g.dial(t, "alice")
	if g.presence(t, "bob") {
		t.Fatal("bob online, he never connected")
	}
	c1.Close()
	wait.For(t, patience, func() bool { return g.srv.ForTest().Hub().Conns() == 1 }, "first connection not released")
	if !g.presence(t, "alice") {
		t.Fatal("alice offline while her second connection is open")
	}
	c2.Close()
	wait.For(t, patience, func() bool { return !g.presence(t, "alice") }, "alice online after closing everything")
}

// A broadcast reaches every connection of every user and is stored for nobody.
func TestBroadcast(t *testing.T) {
	g := start(t, devConfig())
	conns := []*websocket.Conn{g.dial(t, "alice"), g.dial(t, "alice"), g.dial(t, "bob")}
	status, body := g.api(t, http.MethodPost, "/api/v1/broadcast", `{"data": {"news" : "ünïcode"} }`)
	if status != http.StatusOK || strings.TrimSpace(string(body)) != "{}" {
		t.Fatalf("broadcast: HTTP %d %s, want 200 {}", status, body)
	}
	for _, c := range conns {
		expectNext(t, c, `{"news" : "ünïcode"}`)
	}
	if n := g.metric(t, "wsgateway_offline_stored_total", "source", "push"); n != 0 {
		t.Fatalf("a broadcast stored %v messages offline", n)
	}
	carol := g.dial(t, "carol") // connects after the broadcast: gets none of it
	g.push(t, "carol", `"first"`)
	expectNext(t, carol, `"first"`)
}

func TestProbesAndMetrics(t *testing.T) {
	g := start(t, devConfig())
	for _, path := range []string{"/healthz", "/readyz"} {
		status, body := g.request(t, http.MethodGet, path, "", nil)
		if status != http.StatusOK || !json.Valid(body) {
			t.Fatalf("%s: HTTP %d %s, want 200 and JSON", path, status, body)
		}
	}
	status, body := g.request(t, http.MethodGet, "/readyz", "", nil)
	if status != 200 || !strings.Contains(string(body), `"e2e"`) {
		t.Fatalf("/readyz does not name the node: %s", body)
	}

	c := g.dial(t, "alice")
	g.push(t, "alice", `1`)
	expectNext(t, c, `1`)
	g.push(t, "bob", `2`) // stored offline
	metrics := func() string {
		status, body := g.request(t, http.MethodGet, "/metrics", "", nil)
		if status != http.StatusOK {
			t.Fatalf("/metrics: HTTP %d", status)
		}
		return string(body)
	}
	text := metrics()
	for _, want := range []string{
		`wsgateway_connections 1`,
		`wsgateway_messages_delivered_total 1`,
		`wsgateway_offline_stored_total{source="push"} 1`,
		`wsgateway_slow_consumers_total 0`,
		`wsgateway_connects_total 1`,
		`wsgateway_build_info{node_id="e2e",version="`,
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want)).MatchString(text) {
			t.Errorf("/metrics has no line starting %q", want)
		}
	}
	if !strings.Contains(text, "# TYPE wsgateway_delivery_latency_seconds histogram") {
		t.Error("/metrics lacks the delivery latency histogram")
	}
	c.Close()
	wait.For(t, patience, func() bool { return strings.Contains(metrics(), "\nwsgateway_connections 0\n") },
		"wsgateway_connections does not go back to 0")
}

// Shutdown: /readyz and /ws answer 503 while draining, every client gets 1001, Shutdown
// returns in time, and nothing of the server keeps running afterwards.
func TestShutdown(t *testing.T) {
	g := startWith(t, devConfig(), server.Options{CloseGrace: patience})
	// These clients read nothing until the test says so: the drain waits for their answer
	// to the close frame, which keeps the server draining while the test looks at it.
	clients := []*websocket.Conn{g.dial(t, "alice"), g.dial(t, "alice"), g.dial(t, "bob")}
	echo, resp, err := g.dialRaw(t, &dialer, "/ws/echo", nil)
	if err != nil {
		t.Fatalf("dial /ws/echo: %v (%s)", err, describe(resp))
	}

	g.closed = true
	done := make(chan error, 1)
	began := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		done <- g.srv.Shutdown(ctx)
	}()
	wait.For(t, patience, func() bool {
		status, _ := g.request(t, http.MethodGet, "/readyz", "", nil)
		return status == http.StatusServiceUnavailable
	}, "/readyz never said 503 while draining")
	status, body := g.request(t, http.MethodGet, "/readyz", "", nil)
	if errorField(t, body) != "draining" {
		t.Fatalf("/readyz while draining: HTTP %d %s", status, body)
	}
	g.expectRefused(t, "/ws?user_id=carol", nil, http.StatusServiceUnavailable)

	for _, c := range clients {
		expectClose(t, c, websocket.CloseGoingAway)
	}
	if _, code := readUntilClose(t, echo); code != websocket.CloseGoingAway {
		t.Errorf("/ws/echo connection ended with %d at shutdown, want 1001", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("Shutdown did not return")
	}
	t.Logf("drained in %v", time.Since(began))
	if n := g.metric(t, "wsgateway_disconnects_total", "reason", "shutdown"); n != 3 {
		t.Errorf("disconnects_total{reason=shutdown} = %v, want 3", n)
	}
	if _, err := http.Get(g.base + "/healthz"); err == nil {
		t.Error("/healthz still answers after Shutdown")
	}
	for _, c := range append(clients, echo) {
		c.Close()
	}
	goleak.VerifyNone(t)
}

// /ws/echo is the tutorial's connectivity check: on in --dev only.
func TestEcho(t *testing.T) {
	t.Run("dev", func(t *testing.T) {
		g := start(t, devConfig())
		c, resp, err := g.dialRaw(t, &dialer, "/ws/echo", nil)
		if err != nil {
			t.Fatalf("dial: %v (%s)", err, describe(resp))
		}
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
			typ, data := read(t, c)
			if typ != m.typ || string(data) != string(m.data) {
				t.Fatalf("echo of type %d %q: type %d %q", m.typ, m.data, typ, data)
			}
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte{0xc3}); err != nil {
			t.Fatal(err)
		}
		expectClose(t, c, websocket.CloseInvalidFramePayloadData)
	})
	t.Run("not without dev", func(t *testing.T) {
		g := start(t, prodConfig())
		g.expectRefused(t, "/ws/echo", nil, http.StatusNotFound)
		g.expectRefused(t, "/ws/echo?token="+hsToken(t, jwttest.Claims("alice")), nil, http.StatusNotFound)
	})
}

// Why a connection ended is counted by reason. A client that goes away — with a close frame
// or by just dropping the TCP connection, as a killed tab or a lost network does — is
// "normal"; only frames that break the rules are "protocol".
func TestDisconnectReasons(t *testing.T) {
	cases := []struct {
		name   string
		end    func(t *testing.T, c *websocket.Conn)
		reason string
	}{
		{"close 1000", func(t *testing.T, c *websocket.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
			if _, code := readUntilClose(t, c); code != websocket.CloseNormalClosure {
				t.Fatalf("close answered with %d, want 1000", code)
			}
		}, "normal"},
		{"close 1001", func(t *testing.T, c *websocket.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(patience))
			readUntilClose(t, c)
		}, "normal"},
		{"close without status", func(t *testing.T, c *websocket.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, nil, time.Now().Add(patience))
			readUntilClose(t, c)
		}, "normal"},
		{"TCP dropped without a close frame", func(t *testing.T, c *websocket.Conn) { c.Close() }, "normal"},
		{"close 1002 from the client", func(t *testing.T, c *websocket.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseProtocolError, ""), time.Now().Add(patience))
			readUntilClose(t, c)
		}, "protocol"},
		{"frame too big", func(t *testing.T, c *websocket.Conn) {
			_ = c.WriteMessage(websocket.BinaryMessage, make([]byte, 2048))
			readUntilClose(t, c)
		}, "protocol"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := devConfig()
			cfg.MaxMessageBytes = 1024
			g := start(t, cfg)
			c := g.dial(t, "alice")
			tc.end(t, c)
			wait.For(t, patience, func() bool { return g.metricSum(t, "wsgateway_disconnects_total") == 1 },
				"disconnect not counted")
			for _, r := range []string{"normal", "protocol", "heartbeat_timeout", "error"} {
				want := 0.0
				if r == tc.reason {
					want = 1
				}
				if n := g.metric(t, "wsgateway_disconnects_total", "reason", r); n != want {
					t.Errorf("disconnects_total{reason=%q} = %v, want %v", r, n, want)
				}
			}
		})
	}
}

// A client whose socket stalls reconnects on its own timer while the server still holds the
// old connection, already condemned as a slow consumer but stuck in a write. What the old
// connection had not written is older than anything pushed after the reconnect, so it must
// reach the new connection first (docs/protocol.md: 1013 "reconnect; what it did not get is still in the inbox";
// order after a reconnect), and nothing may be left behind for a later connect.
func TestReconnectWhileOldConnectionStalls(t *testing.T) {
	cfg := devConfig()
	cfg.SendQueue = 4
	cfg.OfflineMax = 5000
	cfg.WriteTimeout = 2 * patience // the old writer stays stuck until the client drops it
	g := startWith(t, cfg, server.Options{CloseGrace: patience})
	old := g.dialWith(t, &smallBufferDialer, "alice")
	pushed := 0
	for g.metric(t, "wsgateway_slow_consumers_total") == 0 {
		if pushed == 2000 {
			t.Fatal("no slow consumer after 2000 pushes")
		}
		if _, err := g.srv.Push(context.Background(), "alice", []byte(seqData(pushed, 64<<10))); err != nil { // as in TestSlowConsumer
			t.Fatal(err)
		}
		pushed++
	}
	// At the verdict the queue was full and the message that overflowed it was kept: at
	// least that many were never written.
	unwritten := cfg.SendQueue + 1
	verdict := pushed

	type dialed struct {
		c   *websocket.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
		defer cancel()
		c, _, err := dialer.DialContext(ctx, g.wsBase+"/ws?user_id=alice", nil)
		ch <- dialed{c, err}
	}()
	var b dialed
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	select {
	case b = <-ch:
		// It joined while the old connection is still stuck: push something live now.
		g.push(t, "alice", seqData(pushed, 0))
		pushed++
		old.Close()
	case <-timer.C:
		// It waits for the old connection to be gone, which the client now brings about.
		old.Close()
		b = <-ch
	}
	if b.err != nil {
		t.Fatalf("reconnect: %v", b.err)
	}
	t.Cleanup(func() { b.c.Close() })
	g.push(t, "alice", seqData(pushed, 0))
	pushed++

	// Read to the last push, then leave and come back once more: anything still stored (or
	// stored late) would come now, before the next push.
	var got []int
	for len(got) == 0 || got[len(got)-1] != pushed-1 {
		_, data := read(t, b.c)
		got = append(got, seqOf(t, data))
	}
	_ = b.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
	msgs, _ := readUntilClose(t, b.c)
	for _, m := range msgs {
		got = append(got, seqOf(t, m))
	}
	c := g.dial(t, "alice")
	g.push(t, "alice", seqData(pushed, 0))
	for got[len(got)-1] != pushed {
		_, data := read(t, c)
		got = append(got, seqOf(t, data))
	}

	// What the old connection could not write continues, without a gap, duplicate or
	// reordering, on the new ones.
	for i, s := range got {
		if s != got[0]+i {
			t.Fatalf("after the reconnect the messages must go on from where the old connection stopped, "+
				"each once and in order; got %v", got)
		}
	}
	if got[0] > verdict-unwritten {
		t.Fatalf("the reconnect began at %d, but at least %d..%d were never written to the old connection: %v",
			got[0], verdict-unwritten, verdict-1, got)
	}
}
