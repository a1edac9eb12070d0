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
	cfg := config.Default()
	cfg.Dev = true
	cfg.Addr = "127.0.0.1:0"
	cfg.NodeID = "bench"
	cfg.ShutdownGrace = 10 * time.Second
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

// dialCounting connects user and counts every message it reads into recv. The reader ends
// when the server closes the connection (its clean-up, or Shutdown).
func dialCounting(tb testing.TB, srv *server.Server, user string, local net.IP, recv *atomic.Int64) *websocket.Conn {
	tb.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: dialFrom(local)}
	c, _, err := d.Dial("ws://"+srv.Addr()+"/ws?user_id="+user, nil)
	if err != nil {
		tb.Fatalf("dial %s: %v", user, err)
	}
	go func() {
		for {
			_, r, err := c.NextReader()
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
			recv.Add(1)
		}
	}()
	tb.Cleanup(func() { c.Close() })
	return c
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
func BenchmarkHubDeliver(b *testing.B) {
	for _, devices := range []int{1, 4, 16} {
		b.Run("devices="+strconv.Itoa(devices), func(b *testing.B) {
			srv := startServer(b)
			var recv atomic.Int64
			for range devices {
				dialCounting(b, srv, "bench", nil, &recv)
			}
			hub := srv.Hub()
			waitUntil(b, "connections", func() bool { return hub.Conns() == devices })
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				for int64(i-window)*int64(devices) > recv.Load() {
					runtime.Gosched()
				}
				hub.Deliver("bench", benchPayload)
			}
			want := int64(b.N) * int64(devices)
			waitUntil(b, "deliveries", func() bool { return recv.Load() >= want })
			el := time.Since(start)
			b.StopTimer()
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
			var recv atomic.Int64
			for i := range conns {
				dialCounting(b, srv, fmt.Sprintf("b%d", i), sourceAddr(i), &recv)
			}
			hub := srv.Hub()
			waitUntil(b, "connections", func() bool { return hub.Conns() == conns })
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				for int64(i-window/4)*int64(conns) > recv.Load() {
					runtime.Gosched()
				}
				hub.Broadcast(benchPayload)
			}
			want := int64(b.N) * int64(conns)
			waitUntil(b, "deliveries", func() bool { return recv.Load() >= want })
			el := time.Since(start)
			b.StopTimer()
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
