package ws_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// The fuzzers write arbitrary bytes to a real gateway booted in-process (--dev, in memory):
// FuzzInboundFrames after a valid handshake, FuzzUpgradeRequest as the HTTP request itself.
// For every input the gateway must not panic, must answer only with well-formed frames or
// HTTP, must hang up once the client did, and must go on serving a well-behaved client (the
// canary) that is pushed a message after every input. FuzzInboundFrames also predicts the
// gateway's answer from RFC 6455 (fzModel) and checks it whenever the exchange ended cleanly.

const (
	fzMaxMessage = 1024 // max-message-bytes of the fuzzed gateway
	fzPatience   = 10 * time.Second
)

// fzGateway is the gateway under fuzzing with its canary.
type fzGateway struct {
	srv    *server.Server
	addr   string
	panics *fzPanicLog
	http   *http.Client
	canary *wsclient.Conn
	seq    atomic.Int64
	user   atomic.Int64
}

func fzStart(f *testing.F) *fzGateway {
	f.Helper()
	cfg := config.Default()
	cfg.Dev = true
	cfg.Addr = "127.0.0.1:0"
	cfg.NodeID = "fuzz"
	cfg.MaxMessageBytes = fzMaxMessage
	cfg.MaxInboundRate = 1e9 // the rate limit has its own tests (internal/attack); not here
	cfg.HandshakeTimeout = fzPatience
	cfg.ShutdownGrace = fzPatience
	if err := cfg.Validate(); err != nil {
		f.Fatal(err)
	}
	panics := &fzPanicLog{}
	srv, err := server.New(cfg, server.Options{Logger: slog.New(panics), CloseGrace: 100 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		f.Fatal(err)
	}
	tr := &http.Transport{}
	g := &fzGateway{srv: srv, addr: srv.Addr(), panics: panics, http: &http.Client{Transport: tr, Timeout: fzPatience}}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), fzPatience)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			f.Errorf("shutdown: %v", err)
		}
		tr.CloseIdleConnections()
	})
	// Its clean-up, registered last, closes it before the shutdown.
	g.canary = wsclient.MustDial(f, g.addr, wsclient.Options{User: "fz-canary", Timeout: fzPatience})
	return g
}

// check fails t when the gateway logged a panic or stopped serving the canary.
func (g *fzGateway) check(t *testing.T) {
	t.Helper()
	if msg := g.panics.first(); msg != "" {
		t.Fatalf("the gateway panicked: %s", msg)
	}
	want := fmt.Sprint(g.seq.Add(1))
	resp, err := g.http.Post("http://"+g.addr+"/api/v1/push", "application/json",
		strings.NewReader(`{"user_id":"fz-canary","data":`+want+`}`))
	if err != nil {
		t.Fatalf("push to the canary: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push to the canary: HTTP %d", resp.StatusCode)
	}
	g.canary.Expect(t, want)
}

// exchange connects (after a handshake as a fresh user when handshake is set), writes in,
// half-closes, and returns everything the gateway sent until it hung up. reset reports a
// TCP reset, after which the output may be cut short.
func (g *fzGateway) exchange(t *testing.T, handshake bool, in []byte) (out []byte, reset bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", g.addr, fzPatience)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(fzPatience))
	br := bufio.NewReader(conn)
	if handshake {
		fmt.Fprintf(conn, "GET /ws?user_id=fz-%d HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", g.user.Add(1), g.addr)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("handshake: %v %v", resp, err)
		}
	}
	// The gateway may stop reading (and answer) before it has read everything: write in the
	// background while reading.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if _, err := conn.Write(in); err == nil {
			_ = conn.(*net.TCPConn).CloseWrite()
		}
	}()
	out, err = io.ReadAll(br)
	<-wrote
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return out, true
	case err != nil:
		t.Fatalf("the gateway did not hang up within %v after the client did: %v (input %q)", fzPatience, err, fzShort(in))
	}
	return out, false
}

// FuzzInboundFrames: arbitrary bytes as the frames of an upgraded connection.
func FuzzInboundFrames(f *testing.F) {
	g := fzStart(f)
	for _, seed := range fzFrameSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, reset := g.exchange(t, true, in)
		got, err := fzParseServer(out)
		if err != nil && !(reset && errors.Is(err, io.ErrUnexpectedEOF)) {
			t.Fatalf("the gateway sent a malformed frame: %v\nin:  %q\nout: %q", err, fzShort(in), fzShort(out))
		}
		want := fzModel(in)
		if err := got.matches(want, !reset); err != nil {
			t.Fatalf("%v\nin:   %q\nwant: %+v\ngot:  %+v (reset %v)", err, fzShort(in), want, got, reset)
		}
		g.check(t)
	})
}

// FuzzUpgradeRequest: arbitrary bytes as the HTTP request. The answer, if any, must be HTTP
// and never a 500: the refusals before the upgrade are 4xx.
func FuzzUpgradeRequest(f *testing.F) {
	g := fzStart(f)
	host := g.addr
	for _, s := range []string{
		"GET /ws?user_id=alice HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		"GET /ws?user_id=alice HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://" + host + "\r\n\r\n",
		"GET /ws?user_id=alice HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n\r\n",
		"GET /ws?user_id=a%20b HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n",
		"GET /ws?token=a.b.c HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n",
		"GET /ws?user_id=alice HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer x.y.z\r\n\r\n",
		"GET /ws/echo HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
		"POST /api/v1/push HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 40\r\n\r\n{\"user_id\":\"alice\",\"data\":{\"text\":\"hi\"}}",
		"GET /readyz HTTP/1.0\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\nUpgrade: websocket\r\n\r\n0\r\n\r\n",
		"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
		"GET / HTTP/2.0\r\n\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, reset := g.exchange(t, false, in)
		br := bufio.NewReader(bytes.NewReader(out))
		for len(out) > 0 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				if reset || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					break // cut short by a reset, or frames after a 101
				}
				t.Fatalf("the gateway's answer is not HTTP: %v\nin:  %q\nout: %q", err, fzShort(in), fzShort(out))
			}
			// 500 is gin's recovery from a panic. (net/http itself may answer 501 or 505 to
			// a transfer encoding or protocol version it does not speak.)
			if resp.StatusCode == http.StatusInternalServerError {
				t.Fatalf("HTTP %d for %q", resp.StatusCode, fzShort(in))
			}
			if resp.StatusCode == http.StatusSwitchingProtocols {
				break // what follows is WebSocket
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		g.check(t)
	})
}

// --- helpers ---

// fzPanicLog is a slog.Handler that remembers the first record mentioning a panic (gin's
// recovery and net/http's "http: panic serving" both do) and discards the rest.
type fzPanicLog struct {
	mu  sync.Mutex
	msg string
}

func (h *fzPanicLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *fzPanicLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *fzPanicLog) WithGroup(string) slog.Handler            { return h }

func (h *fzPanicLog) Handle(_ context.Context, r slog.Record) error {
	if !strings.Contains(strings.ToLower(r.Message), "panic") {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msg == "" {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		h.msg = b.String()
	}
	return nil
}

func (h *fzPanicLog) first() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msg
}

func fzShort(b []byte) []byte {
	if len(b) > 300 {
		return b[:300]
	}
	return b
}
