package faultproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// patience bounds every wait; only a broken proxy, not a loaded machine, should reach it.
const patience = 15 * time.Second

// quiet is how long a test watches for bytes that must not arrive. Too short can only let a
// broken proxy pass, never fail a working one.
const quiet = 200 * time.Millisecond

// server is a TCP server for the tests: it echoes what it reads, or with sink only counts it.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	read  atomic.Int64
	close func() // stops it and waits for its goroutines; idempotent
}

func startServer(t *testing.T, sink bool) *server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conn.Close()
				var w io.Writer = conn
				if sink {
					w = io.Discard
				}
				buf := make([]byte, 32<<10)
				for {
					n, err := conn.Read(buf)
					s.read.Add(int64(n))
					if n > 0 {
						if _, err := w.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	var once sync.Once
	s.close = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
			s.wg.Wait()
		})
	}
	t.Cleanup(s.close)
	return s
}

func dial(t *testing.T, p *Proxy) *net.TCPConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", p.Addr(), patience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn.(*net.TCPConn)
}

// roundTrip writes msg and reads it back from the echo server.
func roundTrip(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	expectRead(t, conn, msg)
}

func expectRead(t *testing.T, conn net.Conn, want string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
		t.Fatalf("read %q (%v), want %q", got, err, want)
	}
}

// expectNothing checks that nothing arrives for a while, and that the connection stays open.
func expectNothing(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(quiet))
	n, err := conn.Read(make([]byte, 64))
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v: want nothing, connection open", n, err)
	}
}

// expectReset checks that the proxy ended the connection with a reset (or, if the reset
// raced a FIN, at least ended it).
func expectReset(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want the connection reset", err)
	}
}

// expectRefused dials and checks that the connection fails: the reset comes so fast that it
// may already fail the connect.
func expectRefused(t *testing.T, p *Proxy) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", p.Addr(), patience)
	if err != nil {
		return
	}
	defer conn.Close()
	expectReset(t, conn)
}

func TestForwardsAndCountsConnections(t *testing.T) {
	p := Start(t, startServer(t, false).ln.Addr().String())
	a, b := dial(t, p), dial(t, p)
	roundTrip(t, a, "hello")
	roundTrip(t, b, "world")
	if n := p.Conns(); n != 2 {
		t.Fatalf("Conns() = %d, want 2", n)
	}
	a.Close()
	wait.For(t, patience, func() bool { return p.Conns() == 1 }, "one connection left")
}

func TestPassesHalfCloseOn(t *testing.T) {
	p := Start(t, startServer(t, false).ln.Addr().String())
	conn := dial(t, p)
	if _, err := conn.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	got, err := io.ReadAll(conn) // the echo server sees EOF, finishes and closes: EOF here
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v", got, err)
	}
	wait.For(t, patience, func() bool { return p.Conns() == 0 }, "the connection to go")
}

func TestFreezeHoldsBytesUntilThaw(t *testing.T) {
	p := Start(t, startServer(t, false).ln.Addr().String())
	conn := dial(t, p)
	roundTrip(t, conn, "before")
	p.Freeze()
	if _, err := conn.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, conn)
	late := dial(t, p) // accepted while frozen, and frozen too
	if _, err := late.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, late)
	p.Thaw()
	expectRead(t, conn, "held")
	expectRead(t, late, "late")
	roundTrip(t, conn, "after")
}

func TestFreezeStopsReading(t *testing.T) {
	s := startServer(t, true)
	p := Start(t, s.ln.Addr().String())
	conn := dial(t, p)
	sunk := func(n int64) {
		wait.For(t, patience, func() bool { return s.read.Load() == n }, "the sink to read %d bytes", n)
	}
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	sunk(1)
	p.Freeze()
	// Nobody reads: the kernel buffers fill and the write blocks, as on a dead link.
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	n, err := conn.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a 64 MiB write into a frozen proxy: %d bytes, %v; want it to block", n, err)
	}
	if got := s.read.Load(); got != 1 {
		t.Fatalf("the target read %d bytes while frozen", got-1)
	}
	p.Thaw()
	sunk(1 + int64(n))
}

func TestBlackholeOneDirection(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  Direction
	}{{"downstream", Downstream}, {"upstream", Upstream}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, false)
			p := Start(t, s.ln.Addr().String())
			conn := dial(t, p)
			roundTrip(t, conn, "ok")
			p.Blackhole(tc.dir, true)
			if _, err := conn.Write([]byte("gone")); err != nil {
				t.Fatal(err)
			}
			wait.For(t, patience, func() bool { return p.Dropped(tc.dir) == 4 }, "4 bytes dropped")
			expectNothing(t, conn)
			// Downstream: the server got "gone" and echoed it into the hole; upstream it never
			// saw it.
			if want := map[Direction]int64{Downstream: 6, Upstream: 2}[tc.dir]; s.read.Load() != want {
				t.Fatalf("server read %d bytes, want %d", s.read.Load(), want)
			}
			p.Blackhole(tc.dir, false)
			roundTrip(t, conn, "back")
			if p.Dropped(Both) != 4 || p.Conns() != 1 {
				t.Fatalf("dropped %d, conns %d; want 4 and 1", p.Dropped(Both), p.Conns())
			}
		})
	}
}

// BlackholeMarked silences the connections that carried the mark, only those, while they stay
// open; a connection opened afterwards, even one that carries the mark, flows; Heal lifts it.
func TestBlackholeMarkedPicksConnections(t *testing.T) {
	p := Start(t, startServer(t, false).ln.Addr().String())
	p.Mark(Upstream, "subscribe")
	sub, other := dial(t, p), dial(t, p)
	roundTrip(t, sub, "SSUBSCRIBE a")
	roundTrip(t, other, "ping")
	if n := p.BlackholeMarked(Downstream); n != 1 {
		t.Fatalf("BlackholeMarked hit %d connections, want 1", n)
	}
	if _, err := sub.Write([]byte("gone")); err != nil {
		t.Fatal(err)
	}
	wait.For(t, patience, func() bool { return p.Dropped(Downstream) == 4 }, "4 bytes dropped")
	expectNothing(t, sub)
	roundTrip(t, other, "still")
	late := dial(t, p)
	roundTrip(t, late, "subscribe b")
	if n := p.BlackholedOpen(); n != 1 {
		t.Fatalf("BlackholedOpen = %d, want 1", n)
	}
	p.Heal()
	roundTrip(t, sub, "back")
	if n := p.BlackholedOpen(); n != 0 {
		t.Fatalf("BlackholedOpen after Heal = %d, want 0", n)
	}
	sub.Close()
	wait.For(t, patience, func() bool { return p.Conns() == 2 }, "the closed connection gone")
}

func TestDropNextDiscardsOneChunk(t *testing.T) {
	p := Start(t, startServer(t, false).ln.Addr().String())
	conn := dial(t, p)
	roundTrip(t, conn, "a")
	p.DropNext(Downstream)
	if _, err := conn.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	wait.For(t, patience, func() bool { return p.Dropped(Downstream) == 1 }, "the reply dropped")
	roundTrip(t, conn, "c")
}

// DropNextAtLeast lets smaller chunks pass and drops the first one of the size.
func TestDropNextAtLeastSkipsSmallChunks(t *testing.T) {
	p := Start(t, startServer(t, false).ln.Addr().String())
	conn := dial(t, p)
	p.DropNextAtLeast(Downstream, 5)
	roundTrip(t, conn, "abc") // 3 bytes: passes
	if _, err := conn.Write([]byte("defgh")); err != nil {
		t.Fatal(err)
	}
	wait.For(t, patience, func() bool { return p.Dropped(Downstream) == 5 }, "the 5-byte reply dropped")
	roundTrip(t, conn, "ijklm") // dropped once only
}

func TestCloseAllResetsEveryConnection(t *testing.T) {
	p := Start(t, startServer(t, false).ln.Addr().String())
	a, b := dial(t, p), dial(t, p)
	roundTrip(t, a, "1")
	roundTrip(t, b, "2")
	p.Freeze() // a frozen link is reset all the same
	p.CloseAll()
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns() = %d after CloseAll", n)
	}
	expectReset(t, a)
	expectReset(t, b)
	p.Thaw()
	roundTrip(t, dial(t, p), "new connections work")
}

func TestRefuseResetsNewConnections(t *testing.T) {
	p := Start(t, startServer(t, false).ln.Addr().String())
	open := dial(t, p)
	roundTrip(t, open, "x")
	p.Refuse(true)
	expectRefused(t, p)
	roundTrip(t, open, "the open one is untouched")
	p.Refuse(false)
	roundTrip(t, dial(t, p), "accepted again")
}

func TestTargetDownResetsTheClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	expectRefused(t, Start(t, addr))
}

func TestHealLiftsEveryFault(t *testing.T) {
	p := Start(t, startServer(t, false).ln.Addr().String())
	conn := dial(t, p)
	p.Freeze()
	p.Blackhole(Both, true)
	p.DropNext(Upstream)
	p.Refuse(true)
	p.Heal()
	roundTrip(t, conn, "through")
	roundTrip(t, dial(t, p), "new")
	if p.Dropped(Both) != 0 {
		t.Fatalf("dropped %d bytes after Heal", p.Dropped(Both))
	}
}

func TestCloseEndsEveryGoroutine(t *testing.T) {
	before := goleak.IgnoreCurrent()
	s := startServer(t, false)
	p := Start(t, s.ln.Addr().String())
	conns := []*net.TCPConn{dial(t, p), dial(t, p)}
	roundTrip(t, conns[0], "a")
	roundTrip(t, conns[1], "b")
	p.Freeze() // pumps waiting for Thaw must end too
	p.Close()
	p.Close()
	expectReset(t, conns[0])
	for _, c := range conns {
		c.Close()
	}
	s.close()
	goleak.VerifyNone(t, before)
}
