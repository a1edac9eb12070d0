package soak

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
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
	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/logbuf"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
)

// The knobs, each overridable from the environment (WSGATEWAY_SOAK_USERS, …_DURATION, …_RATE).
// 2000 users hold at most 2000 connections at once, 4000 descriptors in this one process
// (both ends), well inside the 20,000 allowed.
const (
	defaultUsers    = 2000
	defaultDuration = 3 * time.Minute
	defaultRate     = 1000 // pushes per second, over all users
	pushers         = 16

	secret = "soak-secret-0123456789abcdef-0123456789"
	apiKey = "soak-key-0123456789"

	// Tolerances of the leak check: what is left after everything closed, over the baseline
	// taken before the nodes started. Runtime caches and the test's own bookkeeping stay.
	goroutineSlack = 5
	heapSlack      = 16 << 20
	fdSlack        = 5
)

func TestSoak(t *testing.T) {
	if os.Getenv("WSGATEWAY_SOAK") != "1" || !strings.Contains(flag.Lookup("test.run").Value.String(), "Soak") {
		t.Skip("soak test: runs only with WSGATEWAY_SOAK=1 and -run Soak (make soak)")
	}
	nUsers := envInt(t, "WSGATEWAY_SOAK_USERS", defaultUsers)
	duration := envDuration(t, "WSGATEWAY_SOAK_DURATION", defaultDuration)
	rate := envInt(t, "WSGATEWAY_SOAK_RATE", defaultRate)

	rs := redistest.Start(t)
	prefix := redistest.Prefix(t)
	users := make([]*user, nUsers)
	for i := range users {
		id := fmt.Sprintf("soak-%d", i)
		users[i] = &user{id: id, token: token(t, id)}
	}
	var st stats
	base := snapshot()
	t.Logf("baseline: %s", base)

	logs := &logbuf.Buffer{Limit: 1 << 20}
	nodes := []*server.Server{startNode(t, rs.URL(), prefix, "a", logs), startNode(t, rs.URL(), prefix, "b", logs)}
	addrs := []string{nodes[0].Addr(), nodes[1].Addr()}
	tr := &http.Transport{MaxIdleConnsPerHost: pushers * 2}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	begin := time.Now()
	churnCtx, stopChurn := context.WithCancel(context.Background())
	pushCtx, stopPush := context.WithCancel(context.Background())
	var churners, pushing sync.WaitGroup
	for _, u := range users {
		churners.Add(1)
		go func() {
			defer churners.Done()
			u.churn(churnCtx, addrs, &st)
		}()
	}
	for p := range pushers {
		pushing.Add(1)
		go func() {
			defer pushing.Done()
			pushLoop(pushCtx, client, addrs, users, p, float64(rate)/pushers, &st)
		}()
	}

	// Redis goes away in the middle and comes back: API answers 503 meanwhile (retried until
	// 200), connections stay, subscriptions come back and offline lists are drained.
	peak := snapshot()
	sleepSampling(duration/2, &peak)
	restartAt := time.Since(begin)
	restartBegin := time.Now()
	rs.Restart(t)
	restartTook := time.Since(restartBegin)
	t.Logf("redis restarted at %v (took %v)", restartAt.Round(time.Second), restartTook.Round(time.Millisecond))
	sleepSampling(duration-time.Since(begin), &peak)

	stopPush()
	pushing.Wait() // every push in flight was retried until it got its 200
	stopChurn()
	churners.Wait()
	churnDone := time.Since(begin)
	t.Logf("churn over after %v: %d connections, %d messages accepted, %d received", churnDone.Round(time.Second),
		st.connects.Load(), st.accepted.Load(), st.received.Load())

	// The tail: every user connects once more and must get exactly what it has not yet.
	tailBegin := time.Now()
	var tail sync.WaitGroup
	for _, u := range users {
		tail.Add(1)
		go func() {
			defer tail.Done()
			u.collectTail(addrs, &st)
		}()
	}
	tail.Wait()
	tailTook := time.Since(tailBegin)

	// No connection is left, so no node may still be subscribed to any user's channel: a
	// leftover subscription makes Redis count that node as a receiver, so a push is neither
	// delivered nor stored (the subscription is freed with the last connection).
	leakedSubs := subscribed(t, rs, prefix, users)

	// What the nodes counted, for the summary: what they dropped and why, reconnects, closes.
	counters := nodeCounters(nodes)
	t.Logf("node counters: %s", counters)

	// Everything closes: the nodes had no connection left, then shut down.
	for _, n := range nodes {
		if c := n.ForTest().Hub().Conns(); c != 0 {
			t.Errorf("node has %d connections after every client left", c)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		cancel()
	}
	tr.CloseIdleConnections()
	total := time.Since(begin)

	// Verdict: every accepted message delivered exactly once, in order, to every user. Each
	// violation is attributed by when its push was accepted: inside the Redis restart window
	// (from 1s before the restart to 10s after Redis answered again) or outside it.
	window := [2]time.Time{restartBegin.Add(-time.Second), restartBegin.Add(restartTook + 10*time.Second)}
	var v verdict
	for _, u := range users {
		u.mu.Lock()
		undelivered := []int64{}
		for m := u.last + 1; m <= u.accepted; m++ {
			undelivered = append(undelivered, m)
		}
		v.add(u, "lost", u.lost, window)
		v.add(u, "duplicated", u.dup, window)
		v.add(u, "undelivered", undelivered, window)
		v.garbage += u.garbage
		u.mu.Unlock()
	}
	violations := v.examples
	violations = append(violations, st.errs()...)
	if v.garbage > 0 {
		violations = append(violations, fmt.Sprintf("%d messages that nobody pushed", v.garbage))
	}

	after := settle(base)
	leaks := base.leaks(after)
	summary := fmt.Sprintf("soak: %d users on 2 nodes for %v: %d connections (%d reconnects), %d messages accepted, "+
		"%d delivered; exactly-once-in-order violations: %s; Redis restarted at %v: %d pushes retried after 503, "+
		"%d connects refused, %d closed by the server; peak %d goroutines, %d MiB heap; leaks: %s, "+
		"%d user subscriptions left in Redis",
		nUsers, total.Round(time.Second), st.connects.Load(), st.connects.Load()-int64(nUsers), st.accepted.Load(),
		st.received.Load(), v, restartAt.Round(time.Second), st.retries.Load(), st.refused.Load(),
		st.serverClosed.Load(), peak.goroutines, peak.heap>>20, leaks, len(leakedSubs))
	t.Log(summary)
	t.Logf("tail collection took %v; after: %s", tailTook.Round(time.Millisecond), after)
	fmt.Println(summary)
	if len(violations) > 0 {
		t.Errorf("%d violations; examples (accepted at, relative to the restart):\n%s", v.total(),
			strings.Join(violations[:min(30, len(violations))], "\n"))
		t.Logf("node logs (tail):\n%s", logs.TailBytes(20000))
	}
	if len(leakedSubs) > 0 {
		t.Errorf("%d users without a connection are still subscribed in Redis, e.g. %q", len(leakedSubs),
			leakedSubs[:min(5, len(leakedSubs))])
	}
	if !strings.HasPrefix(leaks, "none") {
		t.Errorf("leaks: %s", leaks)
	}
}

// verdict counts the messages that broke exactly-once-in-order, by kind and by whether their
// push was accepted inside the Redis restart window.
type verdict struct {
	counts   map[string][2]int // kind → [inside the window, outside]
	examples []string
	garbage  int
	restart  time.Time
}

func (v *verdict) add(u *user, kind string, seqs []int64, window [2]time.Time) {
	if v.counts == nil {
		v.counts = map[string][2]int{}
		v.restart = window[0].Add(time.Second)
	}
	for _, seq := range seqs {
		var at time.Time // zero: never accepted (its pusher gave up)
		if int(seq) <= len(u.acceptedAt) {
			at = time.Unix(0, u.acceptedAt[seq-1])
		}
		c := v.counts[kind]
		if !at.Before(window[0]) && !at.After(window[1]) {
			c[0]++
		} else {
			c[1]++
		}
		v.counts[kind] = c
		if len(v.examples) < 100 {
			v.examples = append(v.examples, fmt.Sprintf("%s #%d %s (accepted at %+.2fs)", u.id, seq, kind,
				at.Sub(v.restart).Seconds()))
		}
	}
}

func (v verdict) total() int {
	n := v.garbage
	for _, c := range v.counts {
		n += c[0] + c[1]
	}
	return n
}

func (v verdict) String() string {
	if v.total() == 0 {
		return "none"
	}
	var parts []string
	for _, kind := range []string{"lost", "duplicated", "undelivered"} {
		if c := v.counts[kind]; c[0]+c[1] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s (%d accepted in the restart window)", c[0]+c[1], kind, c[0]))
		}
	}
	return strings.Join(parts, ", ")
}

// subscribed returns the users whose channel still has a subscriber in Redis.
func subscribed(t *testing.T, rs *redistest.Server, prefix string, users []*user) []string {
	rdb := rs.Client(t)
	defer rdb.Close()
	channels := make([]string, len(users))
	for i, u := range users {
		channels[i] = prefix + "user:{" + u.id + "}"
	}
	var left []string
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	counts, err := rdb.PubSubNumSub(ctx, channels...).Result()
	if err != nil {
		t.Errorf("PUBSUB NUMSUB: %v", err)
		return nil
	}
	for i, ch := range channels {
		if counts[ch] > 0 {
			left = append(left, users[i].id)
		}
	}
	return left
}

// --- one simulated user ---

type user struct {
	id    string
	token string

	mu         sync.Mutex
	last       int64   // highest sequence number received; each must be last+1
	accepted   int64   // highest sequence number the API accepted (200)
	acceptedAt []int64 // when each sequence number got its 200 (unix nanos), [seq-1]
	lost, dup  []int64 // sequence numbers skipped over (lost or late) and received twice
	garbage    int     // messages that were not a sequence number
}

// got records one received message; it must be the next sequence number.
func (u *user) got(b []byte, st *stats) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case err != nil:
		u.garbage++
	case n <= u.last:
		u.dup = append(u.dup, n)
	default:
		for m := u.last + 1; m < n; m++ {
			u.lost = append(u.lost, m)
		}
		u.last = n
	}
	st.received.Add(1)
}

func (u *user) done() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last >= u.accepted
}

// churn connects to a random node, receives for 1–5 s, leaves with a close handshake, stays
// away for 0.1–1.5 s, and again, until ctx ends.
func (u *user) churn(ctx context.Context, addrs []string, st *stats) {
	for ctx.Err() == nil {
		conn, err := dial(addrs[rand.IntN(len(addrs))], u.token)
		if err != nil {
			st.refused.Add(1) // Redis away (503) during the restart: back off and retry
			sleep(ctx, 100*time.Millisecond+rand.N(400*time.Millisecond))
			continue
		}
		st.connects.Add(1)
		u.session(ctx, conn, time.Second+rand.N(4*time.Second), st)
		sleep(ctx, 100*time.Millisecond+rand.N(1400*time.Millisecond))
	}
}

// session reads until the connection ends. After hold (or when ctx ends) the client sends
// its close frame and goes on reading until the gateway's answer: everything the gateway
// wrote before it is read, and what it had not written it stored offline before answering,
// so nothing is lost between sessions.
func (u *user) session(ctx context.Context, conn *websocket.Conn, hold time.Duration, st *stats) {
	defer conn.Close()
	var once sync.Once
	leave := func() {
		once.Do(func() {
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(10*time.Second))
		})
	}
	timer := time.AfterFunc(hold, leave)
	defer timer.Stop()
	stop := context.AfterFunc(ctx, leave)
	defer stop()
	// A safety net only: the gateway pings every 25s and answers a close at once.
	_ = conn.SetReadDeadline(time.Now().Add(hold + time.Minute))
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				st.fail(fmt.Errorf("%s: connection ended without a close handshake: %v", u.id, err))
			} else if ce.Code != websocket.CloseNormalClosure {
				st.serverClosed.Add(1) // 1011/1013 while Redis was away; reconnect
			}
			return
		}
		u.got(b, st)
	}
}

// collectTail connects once more after the pushes stopped and reads until everything
// accepted arrived, then a little longer (a duplicate would show), then leaves.
func (u *user) collectTail(addrs []string, st *stats) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		conn, err := dial(addrs[rand.IntN(len(addrs))], u.token)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		st.connects.Add(1)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for !u.done() && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			cancel()
		}()
		u.session(ctx, conn, time.Minute, st)
		cancel()
		if u.done() {
			return
		}
	}
}

// --- pushers ---

// pushLoop pushes the next sequence number to users p, p+pushers, … in turn, alternating the
// nodes, at rate per second. A 503 (Redis away) is retried, with the same id, until 200; only
// 200s count. It stops between pushes when ctx ends.
func pushLoop(ctx context.Context, client *http.Client, addrs []string, users []*user, p int, rate float64, st *stats) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i, n := p, 0; ; i, n = i+pushers, n+1 {
		if i >= len(users) {
			i = p
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		u := users[i]
		u.mu.Lock()
		seq := u.accepted + 1
		u.mu.Unlock()
		// The id makes a retry safe: a push whose answer was lost (503 after Redis ran it, a
		// broken connection) is not stored twice.
		body := fmt.Sprintf(`{"user_id":%q,"data":%d,"id":"%s-%d"}`, u.id, seq, u.id, seq)
		for attempt := 0; ; attempt++ {
			status, err := push(client, addrs[(n+attempt)%len(addrs)], body)
			if err == nil && status == http.StatusOK {
				break
			}
			if err != nil || status != http.StatusServiceUnavailable || attempt > 600 {
				st.fail(fmt.Errorf("push %s #%d: HTTP %d, %v (attempt %d)", u.id, seq, status, err, attempt))
				return
			}
			st.retries.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
		u.mu.Lock()
		u.accepted = seq
		u.acceptedAt = append(u.acceptedAt, time.Now().UnixNano())
		u.mu.Unlock()
		st.accepted.Add(1)
	}
}

func push(client *http.Client, addr, body string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/push", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

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

func dial(addr, token string) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial("ws://"+addr+"/ws?token="+token, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
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
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}
