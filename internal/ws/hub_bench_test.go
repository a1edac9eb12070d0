package ws_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
)

// The hub benchmarks run the real server in-process (in-memory bus and store, --dev) with real
// WebSocket clients, so a "delivered" message went through the hub, the connection's queue and
// writer, gorilla's framing and the loopback socket, and was read by a client. The clients
// share the process: their reading is part of the measured CPU.

// benchPayload is about the size of a typical push (the figures use ~100 bytes).
var benchPayload = []byte(`{"type":"notification","id":123456,"title":"You have a new message","body":"from alice, 2 min ago"}`)

// window bounds the messages delivered but not yet read, per connection: below send-queue
// (256), so the benchmark measures throughput, not slow-consumer closes.
const window = 128

func startServer(tb testing.TB) *server.Server {
	tb.Helper()
	return startServerWith(tb, func(*config.Config) {})
}

// startServerWith is startServer with the settings changed by edit before the start.
func startServerWith(tb testing.TB, edit func(*config.Config)) *server.Server {
	tb.Helper()
	cfg := config.Default()
	cfg.Dev = true
	cfg.Addr = "127.0.0.1:0"
	cfg.NodeID = "bench"
	cfg.ShutdownGrace = 10 * time.Second
	edit(&cfg)
	srv, err := server.New(cfg, server.Options{CloseGrace: 100 * time.Millisecond})
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		tb.Fatalf("Listen: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
	})
	return srv
}

// counter is what one benchmark client read. closed is set when its connection ended.
type counter struct {
	n      atomic.Int64
	closed atomic.Bool
}

// minRead is the fewest messages any of cs read; it fails the benchmark when a connection
// ended (a slow-consumer close would otherwise look like a hang).
func minRead(tb testing.TB, cs []*counter) int64 {
	m := int64(-1)
	for _, c := range cs {
		if c.closed.Load() {
			tb.Fatal("a client connection ended during the benchmark (slow consumer?)")
		}
		if n := c.n.Load(); m < 0 || n < m {
			m = n
		}
	}
	return m
}

// dialCounting connects user and counts every message it reads. The reader ends when the
// server closes the connection (its clean-up, or Shutdown).
func dialCounting(tb testing.TB, srv *server.Server, user string, local net.IP) *counter {
	tb.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: dialFrom(local)}
	c, _, err := d.Dial("ws://"+srv.Addr()+"/ws?user_id="+user, nil)
	if err != nil {
		tb.Fatalf("dial %s: %v", user, err)
	}
	cnt := &counter{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, r, err := c.NextReader()
			if err != nil {
				cnt.closed.Store(true)
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				cnt.closed.Store(true)
				return
			}
			cnt.n.Add(1)
		}
	}()
	tb.Cleanup(func() { c.Close(); <-done })
	return cnt
}

// waitUntil polls cond until it holds or 30 s passed.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkHubDeliver is the fan-out to one user's devices: Hub.Deliver (what the bus calls
// for every message from Redis) to a user holding K connections, until every copy was read.
// No connection is ever more than window messages behind, so none becomes a slow consumer.
func BenchmarkHubDeliver(b *testing.B) {
	for _, devices := range []int{1, 4, 16} {
		b.Run("devices="+strconv.Itoa(devices), func(b *testing.B) {
			srv := startServer(b)
			cs := make([]*counter, devices)
			for i := range cs {
				cs[i] = dialCounting(b, srv, "bench", nil)
			}
			hub := srv.ForTest().Hub()
			waitUntil(b, "connections", func() bool { return hub.Conns() == devices })
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				for int64(i-window) > minRead(b, cs) {
					runtime.Gosched()
				}
				hub.Deliver("bench", 0, benchPayload)
			}
			waitUntil(b, "deliveries", func() bool { return minRead(b, cs) >= int64(b.N) })
			el := time.Since(start)
			b.StopTimer()
			want := int64(b.N) * int64(devices)
			b.ReportMetric(float64(want)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(el.Nanoseconds())/float64(want), "ns/msg")
		})
	}
}

// BenchmarkHubBroadcast is Hub.Broadcast (one PreparedMessage) to N connections of N users.
func BenchmarkHubBroadcast(b *testing.B) {
	for _, conns := range []int{100, 1000} {
		b.Run("conns="+strconv.Itoa(conns), func(b *testing.B) {
			srv := startServer(b)
			cs := make([]*counter, conns)
			for i := range cs {
				cs[i] = dialCounting(b, srv, fmt.Sprintf("b%d", i), sourceAddr(i))
			}
			hub := srv.ForTest().Hub()
			waitUntil(b, "connections", func() bool { return hub.Conns() == conns })
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				for int64(i-window/4) > minRead(b, cs) {
					runtime.Gosched()
				}
				hub.Broadcast(benchPayload)
			}
			waitUntil(b, "deliveries", func() bool { return minRead(b, cs) >= int64(b.N) })
			el := time.Since(start)
			b.StopTimer()
			want := int64(b.N) * int64(conns)
			b.ReportMetric(float64(want)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(el.Nanoseconds())/float64(want), "ns/msg")
		})
	}
}

// dialFrom dials from local (nil: the kernel's choice).
func dialFrom(local net.IP) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	return d.DialContext
}

// sourceAddr spreads client sockets over 127.0.0.2–127.0.0.50 (each address has its own
// ephemeral ports).
func sourceAddr(i int) net.IP { return net.IPv4(127, 0, 0, byte(2+i%49)) }
