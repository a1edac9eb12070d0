package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// Redis restarts under live traffic. Connections on A and B stay open (the very same sockets
// keep receiving); while Redis is away the API answers 503, new clients are refused with 503
// and /readyz is 503; once it is back /readyz turns 200 by itself. Every push that was
// answered 200 — before, around and after the restart — arrives on the live connections,
// exactly once (and in order, once strictResubscribeOrder can be turned on); pushes answered
// 503 were not accepted and may be missing.
func TestRedisRestart(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	nodes := []*node{a, b}
	users := []string{"ra", "rb"}
	clients := map[string]*client{
		"ra": dial(t, a.Addr, as("ra")),
		"rb": dial(t, b.Addr, as("rb")),
	}

	// The pusher alternates users and nodes, paced so that the outage sees many attempts
	// without burning the CPU the nodes need.
	var (
		mu       sync.Mutex
		accepted = map[string][]int{} // per user, the numbers answered 200, in push order
		statuses = map[int]int{}      // HTTP status → count; 0 = transport error
		odd      []string
	)
	count := func() (ok, unavailable int) {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted["ra"]) + len(accepted["rb"]), statuses[http.StatusServiceUnavailable]
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			user, n := users[i%2], nodes[(i/2)%2]
			status, _, err := c.tryPush(n.URL(""), user, strconv.Itoa(i))
			mu.Lock()
			statuses[status]++
			switch {
			case err == nil && status == http.StatusOK:
				accepted[user] = append(accepted[user], i)
			case status != http.StatusServiceUnavailable && len(odd) < 10:
				odd = append(odd, fmt.Sprintf("push %d via %s: status %d, %v", i, n.ID, status, err))
			}
			mu.Unlock()
		}
	}()
	stopPusher := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopPusher()

	wait.For(t, timeout, func() bool { ok, _ := count(); return ok >= 40 }, "pushes before the restart")

	c.redis.Stop(t)
	_, unavailableBefore := count()
	wait.For(t, timeout, func() bool { _, u := count(); return u > unavailableBefore },
		"no push answered 503 while Redis was down")
	for _, n := range nodes {
		wait.For(t, timeout, func() bool {
			status, _, err := c.get(n.URL("/readyz"))
			return err == nil && status == http.StatusServiceUnavailable
		}, "node %s: /readyz not 503 while Redis is down", n.ID)
		newcomer, resp, err := tryDial(n.Addr, as("newcomer"))
		if err == nil {
			newcomer.abort()
		}
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("node %s: a new client during the outage got HTTP %d (%v), want 503", n.ID, status, err)
		}
	}

	c.redis.Restart(t)
	for _, n := range nodes {
		n.WaitReady(c.t, timeout)
	}
	okAtRestart, _ := count()
	wait.For(t, timeout, func() bool { ok, _ := count(); return ok >= okAtRestart+40 }, "pushes after the restart")
	stopPusher()

	mu.Lock()
	defer mu.Unlock()
	if len(odd) > 0 {
		t.Fatalf("the API answered neither 200 nor 503: %v", odd)
	}
	t.Logf("push statuses: %v", statuses)
	for _, user := range users {
		cl, want := clients[user], accepted[user]
		if cl.closed() {
			t.Fatalf("%s: the connection ended during the restart: %v", user, cl.err())
		}
		wait.For(t, timeout, func() bool {
			got := make(map[string]bool)
			for _, f := range cl.received() {
				got[string(f.data)] = true
			}
			for _, v := range want {
				if !got[strconv.Itoa(v)] {
					return false
				}
			}
			return true
		}, "%s: not every push answered 200 arrived: %s", user, wait.Lazy(func() string { return ranges(cl.received()) }))
		checkAccepted(t, user, cl.received(), want)
	}
	// And the very same connections still get new pushes.
	for i, user := range users {
		have := clients[user].count()
		c.push(nodes[i].URL(""), user, `"after"`)
		f := clients[user].waitFrames(t, have+1, user)
		if got := string(f[len(f)-1].data); got != `"after"` {
			t.Fatalf("%s: last frame %q, want \"after\"", user, got)
		}
	}
}

// checkAccepted verifies that frames (numbers) hold every accepted number exactly once, in
// increasing order; numbers that were answered 503 may appear too (a request can fail after
// Redis ran it), but only once. Every connection catches up from the inbox in order, so an
// inversion is a defect like loss or a duplicate.
func checkAccepted(t *testing.T, user string, frames []frame, accepted []int) {
	t.Helper()
	got := make(map[int]bool, len(frames))
	last := 0
	for i, f := range frames {
		v, err := strconv.Atoi(string(f.data))
		if err != nil {
			t.Fatalf("%s: frame %d is %v, want a number", user, i, f)
		}
		if got[v] {
			t.Fatalf("%s: %d arrived twice (frames: %s)", user, v, ranges(frames))
		}
		if v < last {
			t.Fatalf("%s: %d arrived after %d (frames: %s)", user, v, last, ranges(frames))
		}
		got[v], last = true, max(last, v)
	}
	var missing []int
	for _, v := range accepted {
		if !got[v] {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 {
		sort.Ints(missing)
		t.Fatalf("%s: %d pushes answered 200 never arrived: %v (frames: %s)", user, len(missing), missing, ranges(frames))
	}
}

// A node's pub/sub connection is killed by Redis (CLIENT KILL TYPE pubsub, which hits every
// node's) and pushes go out at once through node B for a user held only by A. Each is
// delivered live or, when it was published while A was resubscribing, read from the inbox by
// A right after (Resync): either way the client gets all of them on the same connection,
// exactly once, in order.
func TestResubscribeWindow(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	ctx := context.Background()
	cl := dial(t, a.Addr, as("win"))

	const rounds, perRound = 5, 10
	seq, queued := 0, 0
	for r := range rounds {
		before := a.Metric("wsgateway_pubsub_reconnects_total")
		killed, err := c.rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
		// A's connection at least (B's may be being rebuilt right then on a loaded machine;
		// A's rebuild is checked below).
		if err != nil || killed < 1 {
			t.Fatalf("CLIENT KILL TYPE pubsub: killed %d, %v; want at least A's", killed, err)
		}
		for range perRound {
			seq++
			if res := c.push(b.URL(""), "win", strconv.Itoa(seq)); res.Queued {
				queued++
			}
		}
		wait.For(t, timeout, func() bool { return a.Metric("wsgateway_pubsub_reconnects_total") > before },
			"round %d: node A never rebuilt its pub/sub connection", r)
		wait.For(t, timeout, func() bool { return cl.count() >= seq }, "round %d: waiting for %d frames, have %s",
			r, seq, wait.Lazy(func() string {
				return fmt.Sprintf("%s; unacknowledged %d", ranges(cl.received()), c.offlineLen("win"))
			}))
		a.WaitReady(c.t, timeout)
		b.WaitReady(c.t, timeout)
	}
	if cl.closed() {
		t.Fatalf("the client's connection ended: %v", cl.err())
	}
	all := make([]int, seq)
	for i := range all {
		all[i] = i + 1
	}
	checkAccepted(t, "win", cl.received(), all)
	c.waitAcked("win")
	t.Logf("%d of %d pushes found no subscriber during the resubscribe windows and came from the inbox", queued, seq)
}

// A node dies without any clean-up (SIGKILL of a real gateway process). Its client's socket
// breaks; Redis notices the dead pub/sub connection at once (the kernel closed it), so pushes
// made afterwards find no subscriber, are stored, and arrive in order when the user
// reconnects to node A, before anything live.
func TestNodeKilled(t *testing.T) {
	c := newCluster(t)
	a := c.startNode("a")
	node := gwbin.Start(t, "c", gwbin.Options{
		Args:  []string{"--redis-url", c.redis.URL(), "--key-prefix", c.prefix, "--log-level", "debug"},
		Ready: timeout,
	})
	addr, p := node.Addr, node.Process

	onC := dial(t, addr, as("ivan"))
	if res := c.push(a.URL(""), "ivan", `"before"`); !res.Online {
		t.Fatalf("push with ivan on C: %+v, want online", res)
	}
	onC.expectTexts(t, 0, "ivan on C", `"before"`)
	// A raw client cannot ack: the write counts, and C records it within a second. A node
	// killed before that would have the raw client get "before" again (README, guarantees).
	c.waitAcked("ivan")

	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait.For(t, timeout, p.Exited, "node c survived SIGKILL")
	if code := onC.closeCode(t, "ivan on C"); code != websocket.CloseAbnormalClosure {
		t.Fatalf("the connection to a killed node ended with close code %d (%v), want 1006 (no close frame)", code, onC.err())
	}
	wait.For(t, timeout, func() bool {
		online, err := c.presence(a.URL(""), "ivan")
		return err == nil && !online
	}, "Redis still counts the killed node as ivan's subscriber")

	want := []string{`{"after":1}`, `{"after":2}`, `{"after":3}`}
	for _, m := range want {
		if res := c.push(a.URL(""), "ivan", m); res.Online || !res.Queued {
			t.Fatalf("push %s after the kill: %+v, want queued", m, res)
		}
	}
	onA := dial(t, a.Addr, as("ivan"))
	if res := c.push(a.URL(""), "ivan", `"live"`); !res.Online {
		t.Fatalf("push with ivan on A: %+v, want online", res)
	}
	onA.expectTexts(t, 0, "ivan on A", append(want, `"live"`)...)
	c.waitAcked("ivan")
}
