package ws_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
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
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
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
	canary *websocket.Conn
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
		if g.canary != nil {
			g.canary.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), fzPatience)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			f.Errorf("shutdown: %v", err)
		}
		tr.CloseIdleConnections()
	})
	c, _, err := websocket.DefaultDialer.Dial("ws://"+g.addr+"/ws?user_id=fz-canary", nil)
	if err != nil {
		f.Fatal(err)
	}
	g.canary = c
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
	_ = g.canary.SetReadDeadline(time.Now().Add(fzPatience))
	_, got, err := g.canary.ReadMessage()
	if err != nil || string(got) != want {
		t.Fatalf("canary: got %q, %v; want %s", got, err, want)
	}
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

// --- what the gateway sent ---

// fzOutcome is a WebSocket exchange as seen from the client: the control pongs in order, the
// number of text "pong" answers, and the close frame (code 1005 for an empty one, 0 for none).
type fzOutcome struct {
	Pongs     []string
	TextPongs int
	Close     int
}

// fzParseServer parses what the gateway sent, which must be well-formed server frames:
// unmasked, no RSV bits, known opcodes, control frames final and short, valid close codes,
// text only "pong", nothing after the close frame.
func fzParseServer(out []byte) (fzOutcome, error) {
	var o fzOutcome
	for len(out) > 0 {
		if o.Close != 0 {
			return o, fmt.Errorf("%d bytes after the close frame", len(out))
		}
		if len(out) < 2 {
			return o, io.ErrUnexpectedEOF
		}
		b0, b1 := out[0], out[1]
		op, n := b0&0x0F, uint64(b1&0x7F)
		out = out[2:]
		if b0&0x70 != 0 || b1&0x80 != 0 {
			return o, fmt.Errorf("RSV bits or mask in % x", []byte{b0, b1})
		}
		switch n {
		case 126, 127:
			w := 2
			if n == 127 {
				w = 8
			}
			if len(out) < w {
				return o, io.ErrUnexpectedEOF
			}
			if w == 2 {
				n = uint64(binary.BigEndian.Uint16(out))
			} else {
				n = binary.BigEndian.Uint64(out)
			}
			out = out[w:]
		}
		if uint64(len(out)) < n {
			return o, io.ErrUnexpectedEOF
		}
		p := out[:n]
		out = out[n:]
		if op >= 8 && (n > 125 || b0&0x80 == 0) {
			return o, fmt.Errorf("control frame %x: fin %v, %d bytes", op, b0&0x80 != 0, n)
		}
		switch {
		case op == 0x1 && b0&0x80 != 0 && string(p) == "pong":
			o.TextPongs++
		case op == 0xA:
			o.Pongs = append(o.Pongs, string(p))
		case op == 0x8:
			o.Close = 1005
			if len(p) == 1 {
				return o, errors.New("close frame with a 1-byte payload")
			}
			if len(p) >= 2 {
				o.Close = int(binary.BigEndian.Uint16(p))
				if !fzValidCloseCode(o.Close) || !utf8.Valid(p[2:]) {
					return o, fmt.Errorf("close frame %q", p)
				}
			}
		default:
			return o, fmt.Errorf("unexpected frame op %x fin %v: %q", op, b0&0x80 != 0, p)
		}
	}
	return o, nil
}

// matches compares what the gateway sent with the model. A reset may have cut the output
// short, so without exact only a prefix is required. Text pongs may be fewer than asked for:
// a close decided meanwhile takes precedence over queued messages.
func (o fzOutcome) matches(want fzOutcome, exact bool) error {
	if len(o.Pongs) > len(want.Pongs) || (exact && len(o.Pongs) != len(want.Pongs)) {
		return fmt.Errorf("%d pongs; want %d", len(o.Pongs), len(want.Pongs))
	}
	for i := range o.Pongs {
		if o.Pongs[i] != want.Pongs[i] {
			return fmt.Errorf("pong %d is %q; want %q", i, o.Pongs[i], want.Pongs[i])
		}
	}
	if o.TextPongs > want.TextPongs {
		return fmt.Errorf("%d text pongs; want at most %d", o.TextPongs, want.TextPongs)
	}
	if o.Close != want.Close && (exact || o.Close != 0) {
		return fmt.Errorf("close %d; want %d", o.Close, want.Close)
	}
	return nil
}

func fzValidCloseCode(c int) bool {
	return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999)
}

// --- what the gateway should send ---

// fzModel predicts the gateway's answer to the client bytes in, followed by the client's
// FIN, from RFC 6455 as gorilla implements it and docs/protocol.md: 1002 for a protocol
// violation, 1009 for a message over max-message-bytes (decided from the frame header),
// 1007 for a text message that is not UTF-8, the peer's own code echoed for a valid close,
// pongs for pings (control and the text "ping"), and no close frame when the input ends
// mid-frame or announces a length that does not fit in 63 bits.
func fzModel(in []byte) fzOutcome {
	var o fzOutcome
	inMessage, text := false, false
	var msg []byte
	msgLen := int64(0)
	for {
		if len(in) < 2 {
			return o // EOF at or inside a frame header: the read ends, no close frame
		}
		b0, b1 := in[0], in[1]
		in = in[2:]
		fin, op, masked, n7 := b0&0x80 != 0, b0&0x0F, b1&0x80 != 0, int64(b1&0x7F)
		control := op >= 8
		bad := b0&0x70 != 0 || !masked
		switch op {
		case 0x8, 0x9, 0xA:
			bad = bad || n7 > 125 || !fin
		case 0x1, 0x2:
			bad = bad || inMessage
		case 0x0:
			bad = bad || !inMessage
		default:
			bad = true
		}
		if bad {
			o.Close = 1002
			return o
		}
		n := n7
		if n7 == 126 || n7 == 127 {
			w := 2
			if n7 == 127 {
				w = 8
			}
			if len(in) < w {
				return o
			}
			if w == 2 {
				n = int64(binary.BigEndian.Uint16(in))
			} else {
				u := binary.BigEndian.Uint64(in)
				if u>>63 != 0 {
					return o // gorilla: ErrReadLimit, and no close frame
				}
				n = int64(u)
			}
			in = in[w:]
		}
		if len(in) < 4 {
			return o
		}
		key := [4]byte(in[:4])
		in = in[4:]
		if !control {
			if op != 0 {
				msgLen, msg, text = 0, msg[:0], op == 0x1
			}
			if msgLen+n < 0 {
				return o // overflow: ErrReadLimit without a close frame
			}
			msgLen += n
			if msgLen > fzMaxMessage {
				o.Close = 1009
				return o
			}
			inMessage = !fin
		}
		if int64(len(in)) < n {
			return o
		}
		p := bytes.Clone(in[:n])
		in = in[n:]
		for i := range p {
			p[i] ^= key[i%4]
		}
		switch op {
		case 0x9:
			o.Pongs = append(o.Pongs, string(p))
		case 0x8:
			switch {
			case len(p) < 2:
				o.Close = 1005 // answered with an empty close frame
			case !fzValidReceivedCode(int(binary.BigEndian.Uint16(p))) || !utf8.Valid(p[2:]):
				o.Close = 1002
			default:
				o.Close = int(binary.BigEndian.Uint16(p))
			}
			return o
		case 0x0, 0x1, 0x2:
			msg = append(msg, p...)
			if !fin {
				continue
			}
			if text && !utf8.Valid(msg) {
				o.Close = 1007
				return o
			}
			if text && string(msg) == "ping" {
				o.TextPongs++
			}
		}
	}
}

// fzValidReceivedCode is gorilla's set of close codes a peer may send.
func fzValidReceivedCode(c int) bool {
	switch c {
	case 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013:
		return true
	}
	return c >= 3000 && c <= 4999
}

// --- seeds ---

// fzFrame is a masked client frame with first byte b0.
func fzFrame(b0 byte, payload []byte) []byte {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	var f []byte
	switch n := len(payload); {
	case n <= 125:
		f = []byte{b0, 0x80 | byte(n)}
	case n <= 0xFFFF:
		f = binary.BigEndian.AppendUint16([]byte{b0, 0x80 | 126}, uint16(n))
	default:
		f = binary.BigEndian.AppendUint64([]byte{b0, 0x80 | 127}, uint64(n))
	}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i%4])
	}
	return f
}

func fzFrameSeeds() [][]byte {
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	closeBody := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	return [][]byte{
		{},
		fzFrame(0x81, []byte("hello")),
		fzFrame(0x81, []byte("ping")),
		cat(fzFrame(0x81, []byte("ping")), fzFrame(0x81, []byte("ping")), fzFrame(0x88, closeBody(1000, ""))),
		fzFrame(0x82, []byte{0, 1, 2, 0xff}),
		cat(fzFrame(0x89, []byte("are you there")), fzFrame(0x8A, nil)),
		fzFrame(0x88, closeBody(1000, "bye")),
		fzFrame(0x88, closeBody(4001, "")),
		fzFrame(0x88, nil),
		fzFrame(0x88, []byte{3}),
		fzFrame(0x88, closeBody(1005, "")),
		fzFrame(0x88, closeBody(999, "")),
		fzFrame(0x88, closeBody(5000, "")),
		fzFrame(0x88, closeBody(1000, "\xff")),
		fzFrame(0x81, []byte("\xff\xfe")),
		cat(fzFrame(0x01, []byte("h\xc3")), fzFrame(0x89, []byte("x")), fzFrame(0x80, []byte("\xa9llo"))),
		cat(fzFrame(0x01, []byte("a")), fzFrame(0x81, []byte("b"))),
		fzFrame(0x80, []byte("orphan continuation")),
		fzFrame(0x09, []byte("fragmented ping")),
		fzFrame(0x89, bytes.Repeat([]byte("p"), 126)),
		fzFrame(0x83, nil),
		fzFrame(0x8B, nil),
		fzFrame(0xC1, []byte("rsv1")),
		fzFrame(0xA2, []byte("rsv2")),
		{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'},                  // unmasked
		fzFrame(0x82, make([]byte, fzMaxMessage)),              // exactly the limit
		fzFrame(0x82, make([]byte, fzMaxMessage+1)),            // one over
		{0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4},    // 1 GiB announced
		{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},    // top bit set
		{0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}, // non-minimal length, cut short
		fzFrame(0x81, []byte("hello"))[:4],
	}
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
