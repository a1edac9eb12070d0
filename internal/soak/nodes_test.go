package soak

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/logbuf"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// The two gateway nodes of TestSoak and what the run counts and holds: the nodes' counters, the
// process's goroutines, heap and descriptors, the knobs from the environment.

// --- the gateway ---

func startNode(t *testing.T, redisURL, prefix, id string, logs *logbuf.Buffer) *server.Server {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.RedisURL = redisURL
	cfg.KeyPrefix = prefix
	cfg.NodeID = id
	cfg.JWTSecret = secret
	cfg.APIKeys = []string{apiKey}
	cfg.OfflineMax = 100000 // the cap is not under test: nothing may be trimmed
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, server.Options{
		// Warnings and errors only: thousands of connects a second would drown the rest.
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		CloseGrace: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	return srv
}

func dial(addr, token string) (*wsclient.Conn, error) {
	conn, _, err := wsclient.Dial(addr, wsclient.Options{Token: token, Timeout: 10 * time.Second})
	return conn, err
}

func token(t *testing.T, sub string) string {
	t.Helper()
	return jwttest.Sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": sub, "exp": time.Now().Add(24 * time.Hour).Unix()})
}

// --- bookkeeping ---

// nodeCounters sums the counters of interest over the nodes: drops by reason, disconnects by
// reason, offline stores, pub/sub reconnects and probe failures.
func nodeCounters(nodes []*server.Server) string {
	sums := map[string]float64{}
	for _, n := range nodes {
		mfs, err := n.ForTest().Metrics().Registry().Gather()
		if err != nil {
			continue
		}
		for _, mf := range mfs {
			name := strings.TrimPrefix(mf.GetName(), "wsgateway_")
			switch name {
			case "messages_dropped_total", "disconnects_total", "offline_stored_total", "pubsub_reconnects_total",
				"pubsub_probe_failures_total", "slow_consumers_total", "refused_total", "messages_delivered_total":
			default:
				continue
			}
			for _, m := range mf.GetMetric() {
				key := name
				for _, l := range m.GetLabel() {
					key += "{" + l.GetValue() + "}"
				}
				sums[key] += m.GetCounter().GetValue()
			}
		}
	}
	keys := make([]string, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%g ", k, sums[k])
	}
	return strings.TrimSpace(b.String())
}

type stats struct {
	connects, accepted, received, retries, refused, serverClosed atomic.Int64

	mu     sync.Mutex
	errors []string
}

func (s *stats) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errors) < 100 {
		s.errors = append(s.errors, err.Error())
	}
}

func (s *stats) errs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errors...)
}

// usage is what the process holds: goroutines, live heap after GC, open descriptors.
type usage struct {
	goroutines int
	heap       uint64
	fds        int
}

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, %.1f MiB heap, %d fds", u.goroutines, float64(u.heap)/(1<<20), u.fds)
}

func snapshot() usage {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	fds, _ := os.ReadDir("/proc/self/fd")
	return usage{goroutines: runtime.NumGoroutine(), heap: m.HeapAlloc, fds: len(fds)}
}

// settle waits up to 20s for goroutines and descriptors to come back to base (closing
// goroutines finish asynchronously), then returns what is held.
func settle(base usage) usage {
	deadline := time.Now().Add(20 * time.Second)
	for {
		u := snapshot()
		if strings.HasPrefix(base.leaks(u), "none") || time.Now().After(deadline) {
			return u
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// leaks describes what after holds beyond base and the tolerances, or "none".
func (base usage) leaks(after usage) string {
	var l []string
	if d := after.goroutines - base.goroutines; d > goroutineSlack {
		l = append(l, fmt.Sprintf("%d goroutines", d))
	}
	if after.heap > base.heap+heapSlack {
		l = append(l, fmt.Sprintf("%.1f MiB heap", float64(after.heap-base.heap)/(1<<20)))
	}
	if d := after.fds - base.fds; d > fdSlack {
		l = append(l, fmt.Sprintf("%d file descriptors", d))
	}
	if len(l) == 0 {
		return fmt.Sprintf("none (goroutines %+d, heap %+.1f MiB, fds %+d)", after.goroutines-base.goroutines,
			(float64(after.heap)-float64(base.heap))/(1<<20), after.fds-base.fds)
	}
	return strings.Join(l, ", ")
}

// sleepSampling sleeps d, sampling usage every 5s into peak.
func sleepSampling(d time.Duration, peak *usage) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		time.Sleep(min(5*time.Second, time.Until(end)))
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak.goroutines = max(peak.goroutines, runtime.NumGoroutine())
		peak.heap = max(peak.heap, m.HeapAlloc)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func envInt(t *testing.T, name string, def int) int {
	return env(t, name, def, strconv.Atoi, "a positive integer")
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	return env(t, name, def, time.ParseDuration, "a positive duration")
}

// env is the value of the environment variable name, parsed, or def when it is unset.
func env[T int | time.Duration](t *testing.T, name string, def T, parse func(string) (T, error), want string) T {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := parse(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want %s", name, v, want)
	}
	return n
}
