package ws_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
	"github.com/wsgateway/wsgateway/internal/ws"
)

// maskedFrame encodes one client frame (FIN set, masked as clients must) of opcode op.
func maskedFrame(op byte, payload []byte) []byte {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	f := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	default:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

func dialRaw(t *testing.T, addr, user string) *wsclient.Conn {
	t.Helper()
	return wsclient.MustDial(t, addr, wsclient.Options{User: user, Timeout: 30 * time.Second})
}

// readPongs reads n text frames, each of which must be "pong".
func readPongs(t *testing.T, c *wsclient.Conn, n int) {
	t.Helper()
	for range n {
		c.Expect(t, "pong")
	}
}

// Many frames in one TCP segment: the first read takes several of them into the read buffer,
// so the socket has nothing more to report. Each must still be answered: the read burst goes
// on while a frame is buffered instead of parking the connection.
func TestFramesInOneSegment(t *testing.T) {
	srv := startServer(t)
	c := dialRaw(t, srv.Addr(), "burst")
	const n = 40 // below max-inbound-rate's burst (2 × 50)
	var all []byte
	for i := 0; i < n; i++ {
		all = append(all, maskedFrame(websocket.TextMessage, []byte("ping"))...)
	}
	if _, err := c.NetConn().Write(all); err != nil {
		t.Fatal(err)
	}
	readPongs(t, c, n)
}

// A frame split over two writes: the burst that sees the first half waits for the rest.
func TestFrameSplitAcrossSegments(t *testing.T) {
	srv := startServer(t)
	c := dialRaw(t, srv.Addr(), "split")
	f := maskedFrame(websocket.TextMessage, []byte("ping"))
	for round := 0; round < 3; round++ {
		if _, err := c.NetConn().Write(f[:3]); err != nil {
			t.Fatal(err)
		}
		// The gap lets the server's read of the first half happen alone (Nagle is off on
		// Go's TCP sockets); the test asserts the answer either way.
		time.Sleep(20 * time.Millisecond)
		if _, err := c.NetConn().Write(f[3:]); err != nil {
			t.Fatal(err)
		}
		readPongs(t, c, 1)
	}
}

// A message larger than the read buffer (512 B) between two pings, all in one write: the
// burst reads it whole and answers both pings.
func TestMessageLargerThanReadBuffer(t *testing.T) {
	srv := startServer(t)
	c := dialRaw(t, srv.Addr(), "large")
	var all []byte
	all = append(all, maskedFrame(websocket.TextMessage, []byte("ping"))...)
	all = append(all, maskedFrame(websocket.BinaryMessage, bytes.Repeat([]byte{7}, 5000))...)
	all = append(all, maskedFrame(websocket.TextMessage, []byte("ping"))...)
	if _, err := c.NetConn().Write(all); err != nil {
		t.Fatal(err)
	}
	readPongs(t, c, 2)
}

// Idle connections hold no goroutine of their own on Linux: the poller waits for them.
func TestIdleConnectionsHaveNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" || os.Getenv(ws.EnvNoEpoll) == "1" {
		t.Skip("epoll parking is Linux-only and disabled by " + ws.EnvNoEpoll)
	}
	srv := startServer(t)
	// One connection first, so the poller's own goroutine is running before the count.
	readPongsAfterPing(t, dialRaw(t, srv.Addr(), "warm"))
	settleGoroutines()
	g0 := runtime.NumGoroutine()
	const n = 200
	conns := make([]*wsclient.Conn, n)
	for i := range conns {
		conns[i] = dialRaw(t, srv.Addr(), "idle"+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	wait.For(t, 30*time.Second, func() bool { return srv.ForTest().Hub().Conns() == n+1 }, "all connections registered")
	settleGoroutines()
	if d := runtime.NumGoroutine() - g0; d > n/10 {
		t.Fatalf("%d idle connections added %d goroutines, want almost none", n, d)
	}
	// Control frames do not keep a goroutine either: gorilla would handle a pong and then
	// block waiting for a data frame, which is what heartbeat traffic looks like.
	for _, c := range conns {
		if err := c.WriteControl(websocket.PongMessage, []byte("hb"), time.Now().Add(10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns[:20] {
		readPongsAfterPing(t, c) // also proves the pongs before it were read
	}
	settleGoroutines()
	if d := runtime.NumGoroutine() - g0; d > n/10 {
		t.Fatalf("after a pong from each, %d idle connections hold %d goroutines, want almost none", n, d)
	}
}

func readPongsAfterPing(t *testing.T, c *wsclient.Conn) {
	t.Helper()
	c.Send(t, "ping")
	c.Expect(t, "pong")
}

// settleGoroutines gives short-lived goroutines (writers, read bursts) time to end.
func settleGoroutines() {
	prev := -1
	for i := 0; i < 50; i++ {
		n := runtime.NumGoroutine()
		if n == prev {
			return
		}
		prev = n
		time.Sleep(20 * time.Millisecond)
	}
}

// A connection closed by the client while parked ends on the server: the poller reports the
// hang-up and the read burst ends the connection.
func TestParkedConnectionClosedByPeer(t *testing.T) {
	srv := startServer(t)
	c := dialRaw(t, srv.Addr(), "leaver")
	wait.For(t, 30*time.Second, func() bool { return srv.ForTest().Hub().Conns() == 1 }, "connection registered")
	if tc, ok := c.NetConn().(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // RST: no close frame, no FIN handshake
	}
	c.NetConn().Close()
	wait.For(t, 30*time.Second, func() bool { return srv.ForTest().Hub().Conns() == 0 }, "connection released")
}

// Every connection gets a ping per ping-interval from the shard timers, the first within one
// interval, and the first pings are spread over the interval. (That a round pings only its
// slot of a shard is TestPingRoundsPartitionTheShard.)
func TestPingsSpreadOverInterval(t *testing.T) {
	interval := 640 * time.Millisecond // 10 rounds per shard per interval
	srv := startServerWith(t, func(c *config.Config) { c.PingInterval = interval })
	const n = 20
	type pinged struct {
		mu    sync.Mutex
		times []time.Time
	}
	ps := make([]*pinged, n)
	began := time.Now()
	for i := range ps {
		c := dialRaw(t, srv.Addr(), fmt.Sprintf("pinged%d", i))
		p := &pinged{}
		ps[i] = p
		c.SetPingHandler(func(data string) error {
			p.mu.Lock()
			p.times = append(p.times, time.Now())
			p.mu.Unlock()
			return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(10*time.Second))
		})
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	// Three intervals: every connection gets its first ping within one and then one per
	// interval; a loaded machine may delay a round, so the bounds are loose.
	wait.For(t, 30*time.Second, func() bool {
		for _, p := range ps {
			p.mu.Lock()
			k := len(p.times)
			p.mu.Unlock()
			if k < 2 {
				return false
			}
		}
		return true
	}, "two pings on every connection")
	var firsts []time.Duration
	for i, p := range ps {
		p.mu.Lock()
		k, first := len(p.times), p.times[0].Sub(began)
		p.mu.Unlock()
		if k > 2+int(time.Since(began)/interval)+1 {
			t.Fatalf("connection %d got %d pings within %v, more than one per %v", i, k, time.Since(began), interval)
		}
		firsts = append(firsts, first)
	}
	slices.Sort(firsts)
	if spread := firsts[len(firsts)-1] - firsts[0]; spread < interval/10 {
		t.Fatalf("first pings of %d connections all within %v: not spread over the interval", n, spread)
	}
}
