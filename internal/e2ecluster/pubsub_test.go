package e2ecluster

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/bus"
	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/metricstest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// pushInterval paces the pushers: a steady load well under what one core sustains.
const pushInterval = 10 * time.Millisecond

// pusher pushes "<user>-<n>" to its users in turn, one request at a time, every pushInterval,
// through one node's HTTP API, and records which were answered 200.
type pusher struct {
	addr  string
	users []string
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	sent     map[string]int   // user → pushes sent
	accepted map[string][]int // user → numbers answered 200, in order
	statuses map[int]int      // status → count
	stored   map[string]int   // user → answered 200 with online:false: the push waits offline
}

func startPusher(addr string, users []string) *pusher {
	p := &pusher{addr: addr, users: users, stop: make(chan struct{}), done: make(chan struct{}),
		sent: map[string]int{}, accepted: map[string][]int{}, statuses: map[int]int{}, stored: map[string]int{}}
	go p.run()
	return p
}

func (p *pusher) run() {
	defer close(p.done)
	t := time.NewTicker(pushInterval)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		user := p.users[i%len(p.users)]
		p.mu.Lock()
		n := p.sent[user]
		p.sent[user]++
		p.mu.Unlock()
		status, online := push(p.addr, user, fmt.Sprintf(`"%s-%d"`, user, n))
		p.mu.Lock()
		p.statuses[status]++
		if status == 200 {
			p.accepted[user] = append(p.accepted[user], n)
			if !online {
				p.stored[user]++
			}
		}
		p.mu.Unlock()
	}
}

// acceptedTotal returns how many pushes were answered 200 so far.
func (p *pusher) acceptedTotal() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	total := 0
	for _, ns := range p.accepted {
		total += len(ns)
	}
	return total
}

func (p *pusher) halt() {
	close(p.stop)
	<-p.done
}

// received returns the push numbers c got for user, in arrival order.
func received(t *testing.T, c *client, user string) []int {
	t.Helper()
	var out []int
	for _, m := range c.messages() {
		n, err := strconv.Atoi(strings.TrimPrefix(strings.Trim(m, `"`), user+"-"))
		if err != nil {
			t.Fatalf("%s got a message that is not one of its pushes: %q", user, m)
		}
		out = append(out, n)
	}
	return out
}

// checkReceived waits until c got every push answered 200 for user, then checks that nothing
// arrived twice and, with ordered, that everything arrived in push order.
func checkReceived(t *testing.T, p *pusher, c *client, user string, ordered bool) {
	t.Helper()
	p.mu.Lock()
	want := append([]int(nil), p.accepted[user]...)
	sent := p.sent[user]
	p.mu.Unlock()
	missing := func() []int {
		got := received(t, c, user)
		var out []int
		for _, n := range want {
			if !slices.Contains(got, n) {
				out = append(out, n)
			}
		}
		return out
	}
	wait.For(t, deadline, func() bool { return len(missing()) == 0 },
		"%s did not get pushes %s answered 200 (%d of %d sent were accepted); got %s", user,
		wait.Lazy(func() string { return fmt.Sprint(missing()) }), len(want), sent,
		wait.Lazy(func() string { return fmt.Sprint(received(t, c, user)) }))
	got := received(t, c, user)
	seen := map[int]bool{}
	for i, n := range got {
		if seen[n] {
			t.Fatalf("%s got push %d twice: %v", user, n, got)
		}
		seen[n] = true
		if ordered && i > 0 && n < got[i-1] {
			t.Fatalf("%s got push %d after %d: %v", user, n, got[i-1], got)
		}
	}
	if extra := len(got) - len(want); extra > 0 {
		t.Logf("%s also got %d pushes that were not answered 200", user, extra)
	}
}

// metric reads one counter of a node, straight from its registry.
func metric(srv *server.Server, name string) float64 {
	return metricstest.Sum(srv.ForTest().Metrics().Registry(), name)
}

// logMetricsOnFailure logs the delivery counters of the nodes when t fails.
func logMetricsOnFailure(t *testing.T, addrs ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, addr := range addrs {
			resp, err := httpc.Get("http://" + addr + "/metrics")
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var lines []string
			for line := range strings.SplitSeq(string(b), "\n") {
				for _, p := range []string{"wsgateway_messages_dropped", "wsgateway_offline", "wsgateway_pubsub", "wsgateway_messages_delivered"} {
					if strings.HasPrefix(line, p) {
						lines = append(lines, line)
					}
				}
			}
			t.Logf("metrics of %s:\n%s", addr, strings.Join(lines, "\n"))
		}
	})
}

func nodeClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// A user's slot is moved to another master (SETSLOT IMPORTING/MIGRATING, MIGRATE of the keys,
// SETSLOT NODE on every master) while pushes flow through the HTTP API, twice: once as is, and
// once with the new owner stalled for half a second (CLIENT PAUSE) right after it took the
// slot, so that pushes land offline there before the gateway's subscription does. Every push
// answered 200 reaches the connected client once and in order, a user on another slot of the
// first owner is not disturbed, and no subscription is left on an old owner.
func TestClusterSlotMigrationUnderLoad(t *testing.T) {
	rc := redistest.StartCluster(t, 3, 0)
	set := func(c *config.Config) { c.RedisCluster = strings.Split(rc.Seeds(), ",") }
	// The probe may fail on the paused new owner while users move to it: its link is rebuilt,
	// and the connections catch up from their inboxes, in order.
	opts := server.Options{ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 600 * time.Millisecond}
	a := gatewayWith(t, "a", set, opts)
	b := gatewayWith(t, "b", set, opts)
	logMetricsOnFailure(t, a.Addr(), b.Addr())

	first := rc.Addrs[0]
	var mover, stayer string
	for i := 0; mover == "" || stayer == ""; i++ {
		u := fmt.Sprintf("m%d", i)
		if rc.MasterFor(t, "ws:user:{"+u+"}") != first {
			continue
		}
		if mover == "" {
			mover = u
		} else if bus.Slot("ws:user:{"+u+"}") != bus.Slot("ws:user:{"+mover+"}") {
			stayer = u
		}
	}
	ch := "ws:user:{" + mover + "}"
	slot := bus.Slot(ch)
	clients := map[string]*client{mover: connect(t, a.Addr(), mover), stayer: connect(t, a.Addr(), stayer)}
	ctx := context.Background()
	numsub := func(addr string) int64 {
		n, err := nodeClient(t, addr).PubSubShardNumSub(ctx, ch).Result()
		if err != nil {
			t.Fatalf("PUBSUB SHARDNUMSUB on %s: %v", addr, err)
		}
		return n[ch]
	}
	if n := numsub(first); n != 1 {
		t.Fatalf("%s has %d subscriptions on its owner before the moves, want 1", mover, n)
	}

	p := startPusher(b.Addr(), []string{mover, stayer})
	wait.For(t, deadline, func() bool { return p.acceptedTotal() >= 40 }, "pushes not accepted before the migration")
	owner := first
	for round, to := range []string{rc.Addrs[1], rc.Addrs[2]} {
		var between func()
		if round == 1 {
			between = func() {
				if err := nodeClient(t, to).Do(ctx, "CLIENT", "PAUSE", 500, "ALL").Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		start := time.Now()
		rc.MigrateSlotPausing(t, slot, to, between)
		t.Logf("slot %d moved from %s to %s in %s (new owner paused: %v)", slot, owner, to,
			time.Since(start).Round(time.Millisecond), between != nil)
		wait.For(t, deadline, func() bool { return numsub(to) == 1 }, "%s not subscribed on its new owner %s", mover, to)
		after := p.acceptedTotal()
		wait.For(t, deadline, func() bool { return p.acceptedTotal() >= after+40 }, "pushes not accepted after the migration")
		if n := numsub(owner); n != 0 {
			t.Fatalf("%d subscriptions of %s left on its old owner %s", n, mover, owner)
		}
		owner = to
	}
	p.halt()
	t.Logf("push answers: %v, stored offline: %v; node a: %v probe failures, %v reconnects", p.statuses, p.stored,
		metric(a, "wsgateway_pubsub_probe_failures_total"), metric(a, "wsgateway_pubsub_reconnects_total"))

	for user, c := range clients {
		checkReceived(t, p, c, user, true)
	}
	if n := numsub(owner); n != 1 {
		t.Fatalf("%s has %d subscriptions on its owner %s, want 1", mover, n, owner)
	}
	for _, n := range []string{a.Addr(), b.Addr()} {
		if get(n, "/readyz") != 200 {
			t.Fatalf("node %s not ready after the migrations: %s", n, readyz(n))
		}
	}
	for user, c := range clients {
		if c.closeCode() != 0 {
			t.Fatalf("%s was disconnected (%d)", user, c.closeCode())
		}
	}
}

// CLIENT KILL TYPE pubsub on every master at once, with users on many slots of every master
// connected to two nodes while pushes flow: both nodes are ready again within 10s, and every
// push answered 200 is delivered, once.
func TestClusterPubSubKilledOnEveryMaster(t *testing.T) {
	rc := redistest.StartCluster(t, 3, 0)
	set := func(c *config.Config) { c.RedisCluster = strings.Split(rc.Seeds(), ",") }
	a := gateway(t, "a", set)
	b := gateway(t, "b", set)

	logMetricsOnFailure(t, a.Addr(), b.Addr())
	shards := usersPerShard(t, rc, 10)
	var users []string
	clients := map[string]*client{}
	for _, us := range shards {
		for i, u := range us {
			node := a
			if i%2 == 1 {
				node = b
			}
			clients[u] = connect(t, node.Addr(), u)
			users = append(users, u)
		}
	}
	slices.Sort(users)
	masters := make([]*redis.Client, 0, len(shards))
	for m := range shards {
		masters = append(masters, nodeClient(t, m))
	}
	const linksPerNode = 4 // one per master, one classic
	reconnects := func(srv *server.Server) float64 { return metric(srv, "wsgateway_pubsub_reconnects_total") }
	ra, rb := reconnects(a), reconnects(b)

	p := startPusher(a.Addr(), users)
	wait.For(t, deadline, func() bool { return p.acceptedTotal() >= 2*len(users) }, "pushes not accepted before the kill")
	// Pushes go on through the kill: a message Redis counted for a subscriber and still held in
	// that client's output buffer goes with the killed connection (pub/sub replays nothing), and
	// comes from the inbox when the link is back (Resync).
	var wg sync.WaitGroup
	for _, m := range masters {
		wg.Go(func() {
			if err := m.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				t.Errorf("CLIENT KILL TYPE pubsub on %s: %v", m.Options().Addr, err)
			}
		})
	}
	wg.Wait()
	killed := time.Now()
	wait.For(t, 10*time.Second, func() bool {
		return reconnects(a) >= ra+linksPerNode && reconnects(b) >= rb+linksPerNode
	}, "the links were not rebuilt")
	wait.For(t, 10*time.Second-time.Since(killed), func() bool {
		return get(a.Addr(), "/readyz") == 200 && get(b.Addr(), "/readyz") == 200
	}, "not ready within 10s of the kill: a %s, b %s", readyz(a.Addr()), readyz(b.Addr()))
	t.Logf("ready again %s after the kill", time.Since(killed).Round(time.Millisecond))
	after := p.acceptedTotal()
	wait.For(t, deadline, func() bool { return p.acceptedTotal() >= after+2*len(users) }, "pushes not accepted after the kill")
	p.halt()
	t.Logf("push answers: %v, stored offline: %v", p.statuses, p.stored)

	for _, u := range users {
		checkReceived(t, p, clients[u], u, false)
	}
}
