package ws_test

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
	"github.com/wsgateway/wsgateway/internal/ws"
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
	return gwtest.Start(tb, "bench", gwtest.Options{
		Config:       edit,
		Server:       server.Options{CloseGrace: 100 * time.Millisecond},
		ShutdownWait: 10 * time.Second,
	}).Srv
}

// BenchmarkHubDeliver is the fan-out to one user's devices: Hub.Deliver (what the bus calls
// for every message from Redis) to a user holding K connections, until every copy was read.
// No connection is ever more than window messages behind, so none becomes a slow consumer.
func BenchmarkHubDeliver(b *testing.B) {
	for _, devices := range []int{1, 4, 16} {
		b.Run("devices="+strconv.Itoa(devices), func(b *testing.B) {
			benchFanout(b, devices, window, func(int) wsclient.Options { return wsclient.Options{User: "bench"} },
				func(hub *ws.Hub) { hub.Deliver("bench", 0, benchPayload) })
		})
	}
}

// BenchmarkHubBroadcast is Hub.Broadcast (one PreparedMessage) to N connections of N users.
func BenchmarkHubBroadcast(b *testing.B) {
	for _, conns := range []int{100, 1000} {
		b.Run("conns="+strconv.Itoa(conns), func(b *testing.B) {
			benchFanout(b, conns, window/4, func(i int) wsclient.Options {
				return wsclient.Options{User: fmt.Sprintf("b%d", i), Local: wsclient.SourceAddr(i)}
			}, func(hub *ws.Hub) { hub.Broadcast(benchPayload) })
		})
	}
}

// benchFanout connects n counting clients (client(i) says how), then sends b.N times, never
// while the slowest client is more than behind messages back, and reports the copies read per
// second and the time per copy.
func benchFanout(b *testing.B, n, behind int, client func(i int) wsclient.Options, send func(*ws.Hub)) {
	srv := startServer(b)
	cs := make(wsclient.Counters, n)
	for i := range cs {
		cs[i] = wsclient.Count(b, srv.Addr(), client(i))
	}
	hub := srv.ForTest().Hub()
	wsclient.Await(b, "connections", func() bool { return hub.Conns() == n })
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for int64(i-behind) > cs.Min(b) {
			runtime.Gosched()
		}
		send(hub)
	}
	wsclient.Await(b, "deliveries", func() bool { return cs.Min(b) >= int64(b.N) })
	el := time.Since(start)
	b.StopTimer()
	want := int64(b.N) * int64(n)
	b.ReportMetric(float64(want)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(el.Nanoseconds())/float64(want), "ns/msg")
}
