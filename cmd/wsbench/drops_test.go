package main

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// silent reports whether nothing arrives on c within d: no byte, no EOF.
func silent(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	n, err := c.Read(make([]byte, 64))
	var ne net.Error
	return n == 0 && errors.As(err, &ne) && ne.Timeout()
}

func TestFreezeConn(t *testing.T) {
	nc, peer := tcpPair(t)
	var sniffed bytes.Buffer
	hold := newHolder(200 * time.Millisecond)
	fc := newFreezeConn(nc, hold, func(p []byte) { sniffed.Write(p) })

	// Before the freeze it is the socket.
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := io.ReadFull(fc, buf[:5]); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read before the freeze: %q, %v", buf[:n], err)
	}
	if sniffed.String() != "hello" {
		t.Fatalf("sniffed %q, want hello", sniffed.String())
	}
	if _, err := fc.Write([]byte("up")); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(peer, buf[:2]); err != nil || string(buf[:n]) != "up" {
		t.Fatalf("peer read before the freeze: %q, %v", buf[:n], err)
	}

	// A read blocked when the freeze comes gets nothing the peer sends afterwards: it waits
	// for its deadline.
	_ = fc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	type readResult struct {
		n   int
		err error
		at  time.Time
	}
	got := make(chan readResult, 1)
	go func() {
		n, err := fc.Read(buf)
		got <- readResult{n, err, time.Now()}
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if !fc.freeze() {
		t.Fatal("freeze reported false on a live connection")
	}
	if fc.freeze() || fc.live() {
		t.Fatal("a second freeze reported true, or the connection still counts as live")
	}
	_, _ = peer.Write([]byte("lost"))
	r := <-got
	var ne net.Error
	if r.n != 0 || !errors.As(r.err, &ne) || !ne.Timeout() {
		t.Fatalf("frozen read: %d bytes, %v; want a timeout and nothing", r.n, r.err)
	}
	if waited := r.at.Sub(start); waited < 150*time.Millisecond {
		t.Fatalf("frozen read returned after %v, before its deadline", waited)
	}
	// A new deadline makes a new wait; writes vanish without an error.
	_ = fc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := fc.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second frozen read: %d, %v", n, err)
	}
	if n, err := fc.Write([]byte("into the void")); n != 13 || err != nil {
		t.Fatalf("frozen write: %d, %v; want 13, nil", n, err)
	}
	if sniffed.String() != "hello" {
		t.Fatalf("sniffed %q after the freeze, want only hello", sniffed.String())
	}
	if !silent(t, peer, 100*time.Millisecond) {
		t.Fatal("the peer received something after the freeze")
	}

	// Close: the user's side is closed, a pending read ends, but the peer sees no FIN until
	// the holder lets the socket go.
	_ = fc.SetReadDeadline(time.Time{})
	go func() {
		n, err := fc.Read(buf)
		got <- readResult{n, err, time.Now()}
	}()
	time.Sleep(20 * time.Millisecond)
	if err := fc.Close(); err != nil {
		t.Fatalf("close of a frozen connection: %v", err)
	}
	if r := <-got; !errors.Is(r.err, net.ErrClosed) {
		t.Fatalf("read pending at close: %v, want net.ErrClosed", r.err)
	}
	if _, err := fc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if hold.held() != 1 {
		t.Fatalf("held %d sockets, want 1", hold.held())
	}
	if !silent(t, peer, 100*time.Millisecond) {
		t.Fatal("the peer saw the close of a frozen connection")
	}
	_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	// A reset rather than a FIN: the socket is closed with "lost" unread in it.
	if _, err := peer.Read(buf); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the hold the peer read %v, want EOF or a reset", err)
	}
	if hold.held() != 0 {
		t.Fatalf("held %d sockets after the hold, want 0", hold.held())
	}
}

func TestFreezeConnCloseUnfrozen(t *testing.T) {
	nc, peer := tcpPair(t)
	hold := newHolder(time.Hour)
	fc := newFreezeConn(nc, hold, nil)
	if err := fc.Close(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("peer read %v after a plain close, want EOF", err)
	}
	if fc.freeze() {
		t.Fatal("froze a closed connection")
	}
	if hold.held() != 0 {
		t.Fatal("a connection closed before any freeze was held")
	}
}

func TestHolderCloseAll(t *testing.T) {
	nc, peer := tcpPair(t)
	hold := newHolder(time.Hour)
	fc := newFreezeConn(nc, hold, nil)
	fc.freeze()
	fc.Close()
	hold.closeAll()
	_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("peer read %v after closeAll, want EOF", err)
	}
	// Handed over after the end: closed at once.
	nc2, peer2 := tcpPair(t)
	hold.keep(nc2)
	_ = peer2.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := peer2.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("peer read %v for a socket kept after closeAll, want EOF", err)
	}
}

// frame encodes one unmasked server frame.
func frame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, byte(n))
	case n < 1<<16:
		out = append(out, 126, byte(n>>8), byte(n))
	default:
		out = append(out, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, payload...)
}

func TestSniffer(t *testing.T) {
	long := "7 " + strings.Repeat("y", 300)
	huge := strings.Repeat("z", 70000)
	var stream []byte
	stream = append(stream, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: wsgateway.v1\r\n\r\n"...)
	stream = append(stream, frame(true, 1, []byte(`5 {"p":1,"s":9}`))...)
	stream = append(stream, frame(true, 9, []byte("ping"))...)
	stream = append(stream, frame(true, 1, []byte(long))...)
	stream = append(stream, frame(true, 1, nil)...)
	// A fragmented message with a control frame between its fragments.
	stream = append(stream, frame(false, 1, []byte("8 part"))...)
	stream = append(stream, frame(true, 10, []byte("pong"))...)
	stream = append(stream, frame(true, 0, []byte(" two"))...)
	stream = append(stream, frame(true, 2, []byte(huge))...)
	want := []string{`5 {"p":1,"s":9}`, long[:sniffHead], "", "8 part two", huge[:sniffHead]}

	for _, chunk := range []int{len(stream), 1, 3, 7, 1000} {
		var got []string
		s := &sniffer{seen: func(h []byte) { got = append(got, string(h)) }}
		rng := rand.New(rand.NewPCG(uint64(chunk), 1))
		for p := stream; len(p) > 0; {
			n := min(len(p), 1+rng.IntN(chunk))
			s.feed(p[:n])
			p = p[n:]
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("chunks up to %d: seen %q, want %q", chunk, got, want)
		}
	}
}

func TestLedgerCount(t *testing.T) {
	l := newLedger(7)
	s := time.Second
	for k := range 6 {
		l.sending(k, k%2, time.Duration(k)*s)
	}
	l.answered(0, 1) // delivered once, on the wire once
	l.received(0, 1, 10*s)
	l.onWire(0)
	l.answered(1, 1) // missing
	l.answered(2, 2) // delivered twice, three times on the wire
	l.received(2, 2, 11*s)
	l.received(2, 2, 12*s)
	l.onWire(2)
	l.onWire(2)
	l.onWire(2)
	l.answered(3, -1) // refused, delivered anyway
	l.received(3, 0, 13*s)
	l.answered(4, 3) // arrived with another seq
	l.received(4, 9, 14*s)
	// 5: sent, no answer yet, not received; 6: never sent.
	got := l.count(true)
	want := tally{Sent: 6, Accepted: 4, Delivered: 3, Missing: 1, Duplicates: 1, OnWire: 2, WireDuplicates: 2,
		Mismatched: 1, Unaccepted: 1, Outstanding: 1, lastArrival: 14 * s}
	if got.Sent != want.Sent || got.Accepted != want.Accepted || got.Delivered != want.Delivered ||
		got.Missing != want.Missing || got.Duplicates != want.Duplicates || got.OnWire != want.OnWire ||
		got.WireDuplicates != want.WireDuplicates ||
		got.Mismatched != want.Mismatched || got.Unaccepted != want.Unaccepted || got.lastArrival != want.lastArrival {
		t.Fatalf("count = %+v\nwant    %+v", got, want)
	}
	if raw := l.count(false); raw.Mismatched != 0 {
		t.Fatalf("raw mode checked seqs: %+v", raw)
	}
}

func TestLedgerReplays(t *testing.T) {
	ms := time.Millisecond
	l := newLedger(6)
	// User 0, frozen at 7 s, back at 10 s: push 0 arrived before the freeze, 1 and 2 were
	// sent meanwhile and replayed, 3 is live after the reconnect.
	for k, sent := range []time.Duration{5000, 8000, 9000, 11000} {
		l.sending(k, 0, sent*ms)
		l.answered(k, int64(k)+1)
	}
	l.received(0, 1, 5001*ms)
	l.received(1, 2, 10200*ms)
	l.received(2, 3, 10300*ms)
	l.received(3, 4, 11001*ms)
	l.reconnected(reconnect{user: 0, at: 10000 * ms, frozenAt: 7000 * ms})
	// User 1 came back with nothing to catch up on; push 4 went to it long before.
	l.sending(4, 1, 1000*ms)
	l.answered(4, 1)
	l.received(4, 1, 1001*ms)
	l.reconnected(reconnect{user: 1, at: 20000 * ms, frozenAt: 17500 * ms})
	var tl tally
	l.replays(&tl)
	if tl.Replays != 1 || tl.Replayed != 2 || tl.NothingPending != 1 {
		t.Fatalf("replays %d, replayed %d, nothing pending %d; want 1, 2, 1", tl.Replays, tl.Replayed, tl.NothingPending)
	}
	if len(tl.ReplayDelays) != 1 || tl.ReplayDelays[0] != 300 {
		t.Fatalf("replay delays %v ms, want [300]", tl.ReplayDelays)
	}
	if len(tl.Outages) != 2 || tl.Outages[0] != 3000 || tl.Outages[1] != 2500 {
		t.Fatalf("outages %v ms, want [3000 2500]", tl.Outages)
	}
}

func TestQuantile(t *testing.T) {
	vals := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, c := range []struct{ q, want float64 }{{0.5, 5}, {0.99, 10}, {1, 10}, {0, 1}, {0.1, 1}, {0.11, 2}} {
		if got := quantile(vals, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing is not 0")
	}
	if vals[0] != 5 {
		t.Error("quantile sorted its argument")
	}
}

func TestFreezePlan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	plan := freezePlan(rng, 1000, 0.2, time.Second, 10*time.Second)
	if len(plan) != 200 {
		t.Fatalf("planned %d freezes, want 200", len(plan))
	}
	seen := map[int]bool{}
	for i, p := range plan {
		if seen[p.client] || p.client < 0 || p.client >= 1000 {
			t.Fatalf("client %d planned twice or out of range", p.client)
		}
		seen[p.client] = true
		if p.at < time.Second || p.at >= 10*time.Second || (i > 0 && p.at < plan[i-1].at) {
			t.Fatalf("freeze %d at %v: out of [1s, 10s) or out of order", i, p.at)
		}
	}
	if n := len(freezePlan(rng, 10, 0, 0, time.Second)); n != 0 {
		t.Fatalf("fraction 0 planned %d freezes", n)
	}
}

func TestAnsweredSeq(t *testing.T) {
	for _, c := range []struct {
		resp string
		want int64
	}{
		{`{"results":[{"user_id":"u1","seq":17,"online":true,"queued":false}]}`, 17},
		{`{"results":[{"user_id":"u1","online":true,"queued":false}]}`, 0},
		{`{"results":[{"user_id":"u1","seq":x}]}`, 0},
	} {
		if got := answeredSeq([]byte(c.resp)); got != c.want {
			t.Errorf("answeredSeq(%s) = %d, want %d", c.resp, got, c.want)
		}
	}
}

func TestStripSeq(t *testing.T) {
	for in, want := range map[string]string{
		`17 {"p":1}`: `{"p":1}`, `- {"p":1}`: `{"p":1}`, `{"p":1}`: `{"p":1}`, "gap 3 4": "gap 3 4", "17": "17",
	} {
		if got := string(stripSeq([]byte(in))); got != want {
			t.Errorf("stripSeq(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseFlagsDrops(t *testing.T) {
	c, err := parseFlags([]string{"--scenario", "drops"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != modeV1 || c.Silence != 3*time.Second || c.Frozen != 0.2 || c.Publishers != 256 {
		t.Fatalf("drops defaults: mode %s, silence %v, frozen %v, publishers %d", c.Mode, c.Silence, c.Frozen, c.Publishers)
	}
	if c, err = parseFlags([]string{"--scenario", "memory"}, io.Discard); err != nil || c.Silence != 35*time.Second || c.Mode != modeV1 {
		t.Fatalf("memory: silence %v, mode %s, %v; want the client's 35s, v1", c.Silence, c.Mode, err)
	}
	if c, err = parseFlags([]string{"--scenario", "latency"}, io.Discard); err != nil || c.Mode != modeRaw {
		t.Fatalf("latency: mode %s, %v; want raw", c.Mode, err)
	}
	for _, args := range [][]string{
		{"--scenario", "drops", "--mode", "v2"},
		{"--scenario", "drops", "--frozen", "1.5"},
		{"--scenario", "drops", "--duration", "4s"},
		{"--scenario", "drops", "--via", "redis", "--redis", "x:1"},
		{"--scenario", "drops", "--silence", "soon"},
		{"--scenario", "memory", "--history", "-1"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}
