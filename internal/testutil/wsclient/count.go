package wsclient

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// Counter is a client that only counts what it reads, for benchmarks: its reader discards
// every message so the gateway never sees a slow consumer.
type Counter struct {
	N      atomic.Int64 // messages read
	Closed atomic.Bool  // the connection ended
}

// Count connects like [MustDial] and counts the messages read by a goroutine of its own; the
// test's clean-up closes the connection and waits for that reader.
func Count(tb testing.TB, addr string, o Options) *Counter {
	tb.Helper()
	c, resp, err := Dial(addr, o)
	if err != nil {
		tb.Fatalf("dial %s: %v (%s)", redact(URL(addr, o)), err, Describe(resp))
	}
	cnt := &Counter{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cnt.Closed.Store(true)
		for {
			_, r, err := c.NextReader()
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
			cnt.N.Add(1)
		}
	}()
	tb.Cleanup(func() { c.Close(); <-done })
	return cnt
}

// Counters are the clients of one benchmark.
type Counters []*Counter

// Min is the fewest messages any of cs read. It fails tb when a connection ended: a
// slow-consumer close would otherwise look like a hang.
func (cs Counters) Min(tb testing.TB) int64 {
	m := int64(-1)
	for _, c := range cs {
		if c.Closed.Load() {
			tb.Fatal("a client connection ended during the benchmark (slow consumer?)")
		}
		if n := c.N.Load(); m < 0 || n < m {
			m = n
		}
	}
	return m
}

// Sum is how many messages cs read together.
func (cs Counters) Sum() int64 {
	var n int64
	for _, c := range cs {
		n += c.N.Load()
	}
	return n
}

// Await polls cond every millisecond until it holds, and fails tb after 30s. A benchmark's
// elapsed time includes this wait, so it polls much finer than the wait package does.
func Await(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// SourceAddr spreads client sockets over 127.0.0.2–127.0.0.50 (i modulo 49): each address
// has its own ephemeral ports and its own per-IP connection count.
func SourceAddr(i int) net.IP { return net.IPv4(127, 0, 0, byte(2+i%49)) }
