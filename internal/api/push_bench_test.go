package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wsgateway/wsgateway/internal/api"
	"github.com/wsgateway/wsgateway/internal/auth"
	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// benchData is about the size of a typical push (the figures use ~100 bytes).
const benchData = `{"type":"notification","id":123456,"title":"You have a new message","body":"from alice, 2 min ago"}`

const benchKey = "bench-key-0123456789"

// onlinePusher accepts every push and reports every user online: the handler's own cost.
type onlinePusher struct{}

func (onlinePusher) Push(context.Context, string, []byte, api.PushOptions) (api.PushResult, error) {
	return api.PushResult{Seq: 1, Online: true}, nil
}
func (onlinePusher) PushBatch(_ context.Context, msgs []api.Message) []api.PushResult {
	out := make([]api.PushResult, len(msgs))
	for i := range out {
		out[i] = api.PushResult{Seq: 1, Online: true}
	}
	return out
}

type nopBus struct{}

func (nopBus) Broadcast(context.Context, []byte) error      { return nil }
func (nopBus) Kick(context.Context, string) error           { return nil }
func (nopBus) Online(context.Context, string) (bool, error) { return true, nil }

func pushBody(users int) []byte {
	if users == 1 {
		return []byte(`{"user_id":"u42","data":` + benchData + `}`)
	}
	ids := make([]string, users)
	for i := range ids {
		ids[i] = strconv.Quote("u" + strconv.Itoa(i))
	}
	return []byte(`{"user_ids":[` + strings.Join(ids, ",") + `],"data":` + benchData + `}`)
}

// BenchmarkPushHandler is POST /api/v1/push through the gin engine with the API-key check,
// JSON decoding, validation and the JSON answer, against a pusher that costs nothing: what
// the HTTP layer adds to every push. The request is built per iteration, as the server does.
func BenchmarkPushHandler(b *testing.B) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	keys := auth.NewAPIKeys([]string{benchKey})
	api.Register(r, api.Options{
		Pusher: onlinePusher{}, Bus: nopBus{}, CheckKey: keys.CheckHeader, ValidUser: auth.ValidUserID,
	})
	for _, users := range []int{1, 100, 1000} {
		b.Run("users="+strconv.Itoa(users), func(b *testing.B) {
			body := pushBody(users)
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			start := time.Now()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, "/api/v1/push", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+benchKey)
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("HTTP %d: %s", w.Code, w.Body)
				}
			}
			el := time.Since(start)
			b.ReportMetric(float64(b.N)/el.Seconds(), "pushes/s")
			b.ReportMetric(float64(b.N*users)/el.Seconds(), "recipients/s")
		})
	}
}

// BenchmarkPushServer is the whole push path of a real server in this process: HTTP request
// over loopback (keep-alive, 64 concurrent publishers), handler, offline store (push-or-store),
// bus, hub, writer, socket, and a WebSocket client reading it. "memory" runs the single-node
// in-memory mode; "redis" a real redis-server (skipped when it is not installed).
func BenchmarkPushServer(b *testing.B) {
	for _, mode := range []string{"memory", "redis"} {
		b.Run(mode, func(b *testing.B) {
			n := gwtest.Start(b, "bench", gwtest.Options{
				Config: func(cfg *config.Config) {
					cfg.JWTSecret = "bench-secret"
					cfg.APIKeys = []string{benchKey} // --dev's ?user_id= for the clients; the API wants the key
					if mode == "redis" {
						rs := redistest.Start(b)
						cfg.RedisURL = rs.URL()
						cfg.KeyPrefix = redistest.Prefix(b)
					}
				},
				Server:       server.Options{CloseGrace: 100 * time.Millisecond},
				Ready:        30 * time.Second,
				ShutdownWait: 10 * time.Second,
			})
			base := n.URL("")
			const users = 256
			cs := make(wsclient.Counters, users)
			for i := range cs {
				cs[i] = wsclient.Count(b, n.Addr, wsclient.Options{User: "u" + strconv.Itoa(i), Local: wsclient.SourceAddr(i)})
			}
			tr := &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			var next atomic.Int64
			var failed atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(32) // 64 publishers on 2 cores, as in the figures
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1)
					body := `{"user_id":"u` + strconv.FormatInt(i%users, 10) + `","data":` + benchData + `}`
					req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/push", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+benchKey)
					resp, err := client.Do(req)
					if err != nil {
						failed.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						failed.Add(1)
					}
				}
			})
			sent := next.Load()
			wsclient.Await(b, "deliveries", func() bool { return cs.Sum() >= sent-failed.Load() })
			el := time.Since(start)
			b.StopTimer()
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d pushes failed", f)
			}
			b.ReportMetric(float64(sent)/el.Seconds(), "pushes/s")
			b.ReportMetric(float64(cs.Sum())/el.Seconds(), "deliveries/s")
		})
	}
}
