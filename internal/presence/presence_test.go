package presence_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/presence"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	rdb    *redis.Client
	prefix string
}

func newEnv(t *testing.T) env {
	srv := redistest.Start(t)
	return env{rdb: srv.Client(t), prefix: redistest.Prefix(t)}
}

func (e env) node(t *testing.T, id string, max int) *presence.Redis {
	p := presence.NewRedis(e.rdb, presence.Options{
		Prefix: e.prefix, NodeID: id, MaxConnsPerUser: max,
		Heartbeat: 50 * time.Millisecond, DeadAfter: 300 * time.Millisecond,
	})
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

func (e env) events(t *testing.T) []string {
	t.Helper()
	msgs, err := e.rdb.XRange(context.Background(), e.prefix+"events", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%s:%s@%s", m.Values["type"], m.Values["user"], m.Values["node"]))
	}
	return out
}

func count(t *testing.T, p *presence.Redis, user string) string {
	t.Helper()
	c, n, err := p.Count(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d on %d", c, n)
}

// Connections count across nodes, the cap holds across them, calls are idempotent, and online
// and offline are emitted at the transitions only.
func TestConnectDisconnect(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.node(t, "a", 3), e.node(t, "b", 3)
	for i, p := range []*presence.Redis{a, b, a} {
		if ok, err := p.Connect(ctx, "ann", uint64(i)); !ok || err != nil {
			t.Fatalf("connect %d: %v %v", i, ok, err)
		}
	}
	if ok, err := a.Connect(ctx, "ann", 0); !ok || err != nil { // a retry of a connect that ran
		t.Fatalf("repeated connect: %v %v", ok, err)
	}
	if got := count(t, b, "ann"); got != "3 on 2" {
		t.Fatalf("count %s", got)
	}
	if ok, err := b.Connect(ctx, "ann", 9); ok || err != nil {
		t.Fatalf("4th connect over the cap of 3: %v %v", ok, err)
	}
	for i, p := range []*presence.Redis{a, b, a} {
		if err := p.Disconnect(ctx, "ann", uint64(i)); err != nil {
			t.Fatal(err)
		}
		if err := p.Disconnect(ctx, "ann", uint64(i)); err != nil { // idempotent
			t.Fatal(err)
		}
	}
	if got := count(t, a, "ann"); got != "0 on 0" {
		t.Fatalf("count after the disconnects %s", got)
	}
	if got := fmt.Sprint(e.events(t)); got != "[online:ann@a offline:ann@a]" {
		t.Fatalf("events %s", got)
	}
}

// A node that stops beating is reaped by another: its connections stop counting, its users left
// with none go offline (reported for the dead node), once; users with connections elsewhere
// stay online.
func TestDeadNodeIsReaped(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dead := presence.NewRedis(e.rdb, presence.Options{Prefix: e.prefix, NodeID: "dead", Heartbeat: 50 * time.Millisecond})
	dead.Start()
	for i, u := range []string{"bea", "cal"} {
		if ok, err := dead.Connect(ctx, u, uint64(i)); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	alive := e.node(t, "alive", 16)
	if ok, err := alive.Connect(ctx, "cal", 7); !ok || err != nil {
		t.Fatal(ok, err)
	}
	// The dead node stops beating without any clean-up (as SIGKILL would): stop its loop,
	// but do not let Close take it out of the node set.
	wait.For(t, 5*time.Second, func() bool { return e.rdb.ZScore(ctx, e.prefix+"nodes", "dead").Err() == nil }, "dead never beat")
	stopWithoutLeaving(dead)
	alive.Start()
	wait.For(t, 10*time.Second, func() bool { return count(t, alive, "bea") == "0 on 0" }, "bea still counted")
	if got := count(t, alive, "cal"); got != "1 on 1" {
		t.Fatalf("cal: %s, want his connection on alive", got)
	}
	wait.For(t, 5*time.Second, func() bool { return e.rdb.ZScore(ctx, e.prefix+"nodes", "dead").Err() == redis.Nil },
		"the dead node is still in the node set")
	if got := fmt.Sprint(e.events(t)); got != "[online:bea@dead online:cal@dead offline:bea@dead]" {
		t.Fatalf("events %s", got)
	}
}

// A node restarted with the same id removes what its earlier process left (that process died,
// so its connections are gone) and keeps its own.
func TestRestartedNodeCleansUp(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	before := presence.NewRedis(e.rdb, presence.Options{Prefix: e.prefix, NodeID: "n"})
	if ok, err := before.Connect(ctx, "dee", 1); !ok || err != nil {
		t.Fatal(ok, err)
	}
	before.Close(ctx) // its batcher only: it never started, as if it had died
	after := e.node(t, "n", 16)
	if ok, err := after.Connect(ctx, "eli", 1); !ok || err != nil {
		t.Fatal(ok, err)
	}
	after.Start()
	wait.For(t, 10*time.Second, func() bool { return count(t, after, "dee") == "0 on 0" }, "the earlier process's connection still counts")
	if got := count(t, after, "eli"); got != "1 on 1" {
		t.Fatalf("eli: %s: the current process's connection must stay", got)
	}
}

// Disconnects that failed while Redis was away are made again by the heartbeat.
func TestDisconnectRetried(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	ctx := context.Background()
	p := presence.NewRedis(rdb, presence.Options{Prefix: prefix, NodeID: "r", Heartbeat: 50 * time.Millisecond})
	t.Cleanup(func() { p.Close(ctx) })
	if ok, err := p.Connect(ctx, "fin", 1); !ok || err != nil {
		t.Fatal(ok, err)
	}
	// Redis refuses writes (as a master without its required replicas does).
	admin := srv.Client(t)
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.Disconnect(ctx, "fin", 1); err == nil {
		t.Fatal("disconnect succeeded while Redis refused writes")
	}
	if got := count(t, p, "fin"); got != "1 on 1" {
		t.Fatalf("count %s", got)
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	p.Start()
	wait.For(t, 10*time.Second, func() bool { return count(t, p, "fin") == "0 on 0" }, "the failed disconnect was not made again")
}

// A node that closes with a disconnect still failed stays in the node set, so that another
// reaps it: its connection stops counting and its user goes offline.
func TestCloseWithPendingDisconnectLeavesItToTheReaper(t *testing.T) {
	srv := redistest.Start(t)
	rdb, admin := srv.Client(t), srv.Client(t)
	e := env{rdb: rdb, prefix: redistest.Prefix(t)}
	ctx := context.Background()
	// A heartbeat of an hour: the failed disconnect is not retried before Close.
	p := presence.NewRedis(rdb, presence.Options{Prefix: e.prefix, NodeID: "gone", Heartbeat: time.Hour})
	p.Start()
	if ok, err := p.Connect(ctx, "gil", 1); !ok || err != nil {
		t.Fatal(ok, err)
	}
	wait.For(t, 5*time.Second, func() bool { return rdb.ZScore(ctx, e.prefix+"nodes", "gone").Err() == nil }, "gone never beat")
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.Disconnect(ctx, "gil", 1); err == nil {
		t.Fatal("disconnect succeeded while Redis refused writes")
	}
	if err := admin.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	p.Close(ctx)
	if err := rdb.ZScore(ctx, e.prefix+"nodes", "gone").Err(); err != nil {
		t.Fatalf("the node left the node set with a disconnect not made: %v", err)
	}
	e.node(t, "reaper", 16).Start()
	wait.For(t, 10*time.Second, func() bool { return count(t, p, "gil") == "0 on 0" }, "gil still counted")
	wait.For(t, 5*time.Second, func() bool { return fmt.Sprint(e.events(t)) == "[online:gil@gone offline:gil@gone]" }, "events %v", e.events(t))
}

// Users share buckets, and processes' numbers may be prefixes of one another ("1" and "10"):
// reaping one process leaves the other's connections and the other users of the bucket alone.
func TestSharedBucket(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	users := []string{"gus"}
	for i := 0; len(users) < 3; i++ {
		if u := fmt.Sprint("u", i); presence.BucketForTest(u) == presence.BucketForTest(users[0]) {
			users = append(users, u)
		}
	}
	dead := presence.NewRedis(e.rdb, presence.Options{Prefix: e.prefix, NodeID: "dead", Heartbeat: 50 * time.Millisecond})
	dead.Start()
	for i, u := range users {
		if ok, err := dead.Connect(ctx, u, uint64(i)); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	// The next process is number 36, "10" in base 36.
	if err := e.rdb.HSet(ctx, e.prefix+"procs", "#", 35).Err(); err != nil {
		t.Fatal(err)
	}
	alive := e.node(t, "alive", 16)
	for _, u := range users[1:] {
		if ok, err := alive.Connect(ctx, u, 0); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if err := alive.Disconnect(ctx, users[2], 0); err != nil {
		t.Fatal(err)
	}
	if got := count(t, alive, users[1]); got != "2 on 2" {
		t.Fatalf("%s: %s", users[1], got)
	}
	if got, err := e.rdb.HGet(ctx, e.prefix+"procs", "10").Result(); got != "alive" || err != nil {
		t.Fatalf("process 10: %q %v", got, err)
	}
	wait.For(t, 5*time.Second, func() bool { return e.rdb.ZScore(ctx, e.prefix+"nodes", "dead").Err() == nil }, "dead never beat")
	stopWithoutLeaving(dead)
	alive.Start()
	wait.For(t, 10*time.Second, func() bool { return count(t, alive, users[0]) == "0 on 0" }, "the dead node still counts")
	for u, want := range map[string]string{users[1]: "1 on 1", users[2]: "0 on 0"} {
		if got := count(t, alive, u); got != want {
			t.Fatalf("%s: %s, want %s", u, got, want)
		}
	}
	want := fmt.Sprintf("[online:%[1]s@dead online:%[2]s@dead online:%[3]s@dead offline:%[1]s@dead offline:%[3]s@dead]", users[0], users[1], users[2])
	wait.For(t, 5*time.Second, func() bool { return fmt.Sprint(e.events(t)) == want }, "events %v, want %s", e.events(t), want)
}

// stopWithoutLeaving ends a node's heartbeat as a crash would.
func stopWithoutLeaving(p *presence.Redis) { presence.StopForTest(p) }
