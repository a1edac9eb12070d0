package e2ecluster

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// BenchmarkPushThroughput compares one Redis with a 3-master Cluster behind the same gateway
// and the same load: 200 connected users, 32 concurrent HTTP publishers, one push per request.
// On one 2-core machine the shards share the cores with everything else, so the figure to
// quote is the ratio, not the absolute rate (BENCHMARKS.md).
//
//	go test -run '^$' -bench PushThroughput -benchtime 20000x ./internal/e2ecluster/
func BenchmarkPushThroughput(b *testing.B) {
	modes := []struct {
		name string
		set  func(tb testing.TB) func(*config.Config)
	}{
		{"redis", func(tb testing.TB) func(*config.Config) {
			rs := redistest.Start(tb)
			return func(c *config.Config) { c.RedisURL = rs.URL() }
		}},
		{"cluster3", func(tb testing.TB) func(*config.Config) {
			rc := redistest.StartCluster(tb, 3, 0)
			return func(c *config.Config) { c.RedisCluster = strings.Split(rc.Seeds(), ",") }
		}},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			srv := benchGateway(b, m.set(b))
			const users = 200
			for i := range users {
				wsclient.Count(b, srv.Addr(), wsclient.Options{User: fmt.Sprintf("b%d", i)})
			}
			var next, failed atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if status, _ := push(srv.Addr(), fmt.Sprintf("b%d", i%users), `{"n":1}`); status != 200 {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pushes/s")
			if failed.Load() > 0 {
				b.Fatalf("%d pushes failed", failed.Load())
			}
		})
	}
}

func benchGateway(tb testing.TB, set func(*config.Config)) *server.Server {
	tb.Helper()
	return gatewayWith(tb, "bench", func(c *config.Config) { c.SendQueue = 100000; set(c) }, server.Options{})
}
