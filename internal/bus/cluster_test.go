package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/bus"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// clusterEnv is a Redis Cluster of three masters and a Cluster bus on it, started with a fast
// probe and ready.
type clusterEnv struct {
	rc     *redistest.Cluster
	prefix string
	rec    *recorder
	obs    *counters
	b      *bus.Cluster
	cc     *redis.ClusterClient
}

func startCluster(t *testing.T) clusterEnv {
	t.Helper()
	e := clusterEnv{rc: redistest.StartCluster(t, 3, 0), prefix: redistest.Prefix(t), rec: newRecorder(), obs: &counters{}}
	e.cc = e.rc.Client(t)
	e.b = bus.NewCluster(e.cc, bus.RedisOptions{
		Prefix: e.prefix, NodeID: "n1", ProbeInterval: 100 * time.Millisecond,
		ProbeTimeout: 5 * time.Second, SetupTimeout: 5 * time.Second, Observer: e.obs,
	})
	e.b.Start(e.rec)
	t.Cleanup(func() { _ = e.b.Close() })
	wait.For(t, 20*time.Second, func() bool { return e.b.Ready() == nil }, "cluster bus never became ready")
	return e
}

// spreadUsers returns perMaster users for each master of rc, each user on a slot of its own,
// keyed by master address.
func spreadUsers(t *testing.T, rc *redistest.Cluster, prefix string, perMaster int) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	slots := map[int]bool{}
	for i := 0; len(out) < 3 || !allHave(out, perMaster); i++ {
		if i > 10000 {
			t.Fatal("could not spread users over the masters")
		}
		u := fmt.Sprintf("u%d", i)
		ch := prefix + "user:{" + u + "}"
		if slots[bus.Slot(ch)] {
			continue
		}
		m := rc.MasterFor(t, ch)
		if len(out[m]) < perMaster {
			out[m] = append(out[m], u)
			slots[bus.Slot(ch)] = true
		}
	}
	return out
}

func allHave(m map[string][]string, n int) bool {
	for _, v := range m {
		if len(v) < n {
			return false
		}
	}
	return true
}

// userOn returns a user (with name prefix name) whose channel hashes to a slot that master
// owns, and whose slot is not in avoid.
func userOn(t *testing.T, rc *redistest.Cluster, prefix, name, master string, avoid ...string) string {
	t.Helper()
	taken := map[int]bool{}
	for _, u := range avoid {
		taken[bus.Slot(prefix+"user:{"+u+"}")] = true
	}
	for i := 0; i < 10000; i++ {
		u := fmt.Sprintf("%s%d", name, i)
		ch := prefix + "user:{" + u + "}"
		if !taken[bus.Slot(ch)] && rc.MasterFor(t, ch) == master {
			return u
		}
	}
	t.Fatalf("no user on %s", master)
	return ""
}

// nodeClient is a plain client of one cluster node, for admin commands and per-node counts.
func nodeClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// shardNumSub is PUBSUB SHARDNUMSUB of ch on the node of client.
func shardNumSub(t *testing.T, client *redis.Client, ch string) int64 {
	t.Helper()
	n, err := client.PubSubShardNumSub(context.Background(), ch).Result()
	if err != nil {
		t.Fatalf("PUBSUB SHARDNUMSUB %s on %s: %v", ch, client.Options().Addr, err)
	}
	return n[ch]
}

// checkDelivery publishes to each user (SPUBLISH) and expects exactly one receiver, this bus,
// and the message handed over.
func (e clusterEnv) checkDelivery(t *testing.T, users []string, msg string) {
	t.Helper()
	ctx := context.Background()
	for _, u := range users {
		n, err := e.cc.SPublish(ctx, e.b.Channel(u), msg).Result()
		if err != nil || n != 1 {
			t.Fatalf("SPUBLISH to %s counted %d receivers (%v), want 1", u, n, err)
		}
	}
	for _, u := range users {
		wait.For(t, 10*time.Second, func() bool {
			for _, m := range e.rec.messages(u) {
				if m == msg {
					return true
				}
			}
			return false
		}, "%s did not get %q", u, msg)
	}
}

// Users on several slots of every master, then CLIENT KILL TYPE pubsub on every master at
// once: every shard's link must come back (one SSUBSCRIBE per slot; Redis answers CROSSSLOT to
// one command that spans slots) and every user must receive again.
func TestClusterPubSubKilledOnEveryMaster(t *testing.T) {
	e := startCluster(t)
	spread := spreadUsers(t, e.rc, e.prefix, 4)
	var users []string
	for _, us := range spread {
		users = append(users, us...)
	}
	for _, u := range users {
		subscribe(t, e.b, u)
	}
	e.checkDelivery(t, users, "before")

	ctx := context.Background()
	for m := range spread {
		if err := nodeClient(t, m).Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Three shard links and the classic one were killed; each rebuilds once.
	wait.For(t, 10*time.Second, func() bool { return e.obs.reconnects.Load() >= 4 }, "only %d links rebuilt", e.obs.reconnects.Load())
	wait.For(t, 10*time.Second, func() bool { return e.b.Ready() == nil }, "not ready 10s after the kill: %v", e.b.Ready())
	e.checkDelivery(t, users, "after")
}

// A connect storm on a Cluster: concurrent subscribes of users on many slots all succeed and
// the bus stays ready.
func TestClusterConcurrentSubscribes(t *testing.T) {
	e := startCluster(t)
	const n = 300
	users := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range users {
		users[i] = fmt.Sprintf("storm%d", i)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			errs[i] = e.b.Subscribe(ctx, users[i])
		})
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			if failed <= 3 {
				t.Errorf("subscribe %s: %v", users[i], err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent subscribes failed", failed, n)
	}
	if err := e.b.Ready(); err != nil {
		t.Fatalf("not ready after the storm: %v", err)
	}
	e.checkDelivery(t, users, "hello")
}

// An error reply to SSUBSCRIBE (here MOVED: the slot belongs to another master) fails that
// command only: the subscriber gets an error at once, the link is not rebuilt, and the other
// channels on it keep working.
func TestShardErrorReplyFailsOnlyThatCommand(t *testing.T) {
	rc := redistest.StartCluster(t, 3, 0)
	prefix := redistest.Prefix(t)
	own, other := rc.Addrs[0], rc.Addrs[1]
	probe := ""
	for i := 0; probe == ""; i++ {
		if ch := fmt.Sprintf("%sprobe:{p%d}", prefix, i); rc.MasterFor(t, ch) == own {
			probe = ch
		}
	}
	client := nodeClient(t, own)
	rec := newRecorder()
	var obs counters
	b := bus.NewRedis(client, bus.RedisOptions{
		Prefix: prefix, NodeID: "n1", ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 5 * time.Second,
		SetupTimeout: 5 * time.Second, Observer: &obs, Sharded: true, ProbeChannel: probe,
	})
	b.Start(rec)
	t.Cleanup(func() { _ = b.Close() })
	wait.For(t, 10*time.Second, func() bool { return b.Ready() == nil }, "shard bus never ready")

	mine := userOn(t, rc, prefix, "mine", own)
	foreign := userOn(t, rc, prefix, "foreign", other)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := b.Subscribe(ctx, foreign)
	if err == nil {
		t.Fatalf("subscribing %s, whose slot %s owns, on %s succeeded", foreign, other, own)
	}
	if errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("the MOVED reply was not handed to the subscriber: %v after %s", err, time.Since(start))
	}
	if !strings.Contains(err.Error(), "MOVED") {
		t.Errorf("error %q does not name the reply", err)
	}
	if err := b.Unsubscribe(ctx, foreign); err != nil {
		t.Fatalf("unsubscribe after a failed subscribe: %v", err)
	}
	subscribe(t, b, mine)
	if n := client.SPublish(context.Background(), prefix+"user:{"+mine+"}", "hi").Val(); n != 1 {
		t.Fatalf("SPUBLISH counted %d, want 1", n)
	}
	wait.For(t, 5*time.Second, func() bool { return rec.count(mine) == 1 }, "no delivery")
	if r, l := obs.reconnects.Load(), rec.resubscribed.Load(); r != 0 || l != 0 {
		t.Fatalf("an error reply was taken for a lost link: %d reconnects, %d Resyncs", r, l)
	}
	if err := b.Ready(); err != nil {
		t.Fatalf("not ready: %v", err)
	}
}

// A slot migration: Redis drops the old owner's subscription itself, and the gateway's own
// SUNSUBSCRIBE there is answered MOVED. That reply must not tear down the old owner's link:
// the same connection stays, users on its other slots keep receiving, and nothing reconnects.
func TestClusterSlotMigrationKeepsOldOwnersLink(t *testing.T) {
	e := startCluster(t)
	from, to := e.rc.Addrs[0], e.rc.Addrs[1]
	mover := userOn(t, e.rc, e.prefix, "mover", from)
	stayer := userOn(t, e.rc, e.prefix, "stayer", from, mover)
	subscribe(t, e.b, mover)
	subscribe(t, e.b, stayer)
	e.checkDelivery(t, []string{mover, stayer}, "before")
	fromC, toC := nodeClient(t, from), nodeClient(t, to)
	link := pubsubClientID(t, fromC)

	ch := e.b.Channel(mover)
	e.rc.MigrateSlot(t, bus.Slot(ch), to)
	wait.For(t, 10*time.Second, func() bool { return shardNumSub(t, toC, ch) == 1 }, "%s not subscribed on its new owner", mover)
	wait.For(t, 10*time.Second, func() bool { return e.b.Ready() == nil }, "not ready after the migration: %v", e.b.Ready())
	e.checkDelivery(t, []string{mover, stayer}, "after")
	if got := pubsubClientID(t, fromC); got != link {
		t.Fatalf("the old owner's pub/sub connection was replaced (client id %s, was %s)", got, link)
	}
	if n := shardNumSub(t, fromC, ch); n != 0 {
		t.Fatalf("%d subscriptions of %s left on the old owner", n, mover)
	}
	if r := e.obs.reconnects.Load(); r != 0 {
		t.Fatalf("%d pub/sub links rebuilt by a slot migration", r)
	}
}

// pubsubClientID returns the CLIENT LIST id of the one connection on client's node that holds
// shard channel subscriptions.
func pubsubClientID(t *testing.T, client *redis.Client) string {
	t.Helper()
	var id string
	wait.For(t, 10*time.Second, func() bool {
		list, err := client.ClientList(context.Background()).Result()
		if err != nil {
			return false
		}
		var ids []string
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " ssub=") && !strings.Contains(line, " ssub=0 ") {
				ids = append(ids, strings.Fields(line)[0])
			}
		}
		if len(ids) == 1 {
			id = ids[0]
		}
		return len(ids) == 1
	}, "no single pub/sub connection on %s", client.Options().Addr)
	return id
}

// A user's slot moves while its last connection ends. The move subscribes the user on the new
// owner — here paused by CLIENT PAUSE, so that the SSUBSCRIBE waits — and meanwhile the
// user is unsubscribed. The move must not leave the user subscribed on the new owner: Redis
// would count this node as its receiver, so every push would be neither delivered nor stored.
func TestClusterMoveRacingUnsubscribeLeavesNoSubscription(t *testing.T) {
	rc := redistest.StartCluster(t, 3, 0)
	prefix := redistest.Prefix(t)
	cc := rc.Client(t)
	c := bus.NewCluster(cc, bus.RedisOptions{
		Prefix: prefix, NodeID: "n1", ProbeInterval: 100 * time.Millisecond,
		// The pause silences the new owner's probe; it must not rebuild that link.
		ProbeTimeout: 20 * time.Second, SetupTimeout: 10 * time.Second,
	})
	c.StartWithoutWatcher(newRecorder())
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	apply := func() {
		t.Helper()
		top, err := c.ReadTopology(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c.Apply(ctx, top)
	}
	apply()
	wait.For(t, 20*time.Second, func() bool { return c.Ready() == nil }, "cluster bus never ready")

	from, to := rc.Addrs[0], rc.Addrs[1]
	user := userOn(t, rc, prefix, "racer", from)
	ch := c.Channel(user)
	subscribe(t, c, user)
	rc.MigrateSlot(t, bus.Slot(ch), to)
	top, err := c.ReadTopology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toC := nodeClient(t, to)
	if err := toC.Do(ctx, "CLIENT", "PAUSE", 3000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	applied := make(chan struct{})
	go func() { defer close(applied); c.Apply(ctx, top) }()
	wait.For(t, 5*time.Second, func() bool { return c.Subscribing(to, user) }, "the move to %s did not start", to)

	uctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := c.Unsubscribe(uctx, user); err != nil {
		t.Fatalf("unsubscribe during the move: %v", err)
	}
	wait.For(t, 20*time.Second, func() bool {
		select {
		case <-applied:
			return true
		default:
			return false
		}
	}, "the move never ended")
	if c.Wants(to, user) {
		t.Fatalf("the new owner's shard still wants %s: it would be subscribed again after every reconnect", user)
	}
	wait.For(t, 10*time.Second, func() bool { return shardNumSub(t, toC, ch) == 0 },
		"%s left subscribed on its new owner %s", user, to)
	if n := cc.SPublish(ctx, ch, "x").Val(); n != 0 {
		t.Fatalf("SPUBLISH to %s counted %d receivers after its last unsubscribe, want 0", user, n)
	}
}

// The slot of a shard's probe channel moves to another master. Redis drops the probe's
// subscription; the shard must pick a probe in a slot it still owns, else it never hears its
// probe again and stays not ready.
func TestClusterProbeSlotMigrated(t *testing.T) {
	e := startCluster(t)
	from, to := e.rc.Addrs[0], e.rc.Addrs[1]
	probe := e.b.ProbeChannel(from)
	e.rc.MigrateSlot(t, bus.Slot(probe), to)
	wait.For(t, 10*time.Second, func() bool { return e.b.ProbeChannel(from) != probe }, "the shard of %s kept probe %s", from, probe)
	next := e.b.ProbeChannel(from)
	if got := e.rc.MasterFor(t, next); got != from {
		t.Fatalf("new probe %s is owned by %s, not by its shard %s", next, got, from)
	}
	wait.For(t, 10*time.Second, func() bool { return e.cc.SPublish(context.Background(), next, "0").Val() == 1 },
		"new probe %s not subscribed", next)
	wait.For(t, 10*time.Second, func() bool { return e.b.Ready() == nil }, "not ready: %v", e.b.Ready())
	if n := e.obs.reconnects.Load(); n != 0 {
		t.Fatalf("%d links rebuilt", n)
	}
}
