package soak

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/server"
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
