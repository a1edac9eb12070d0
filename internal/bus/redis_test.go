package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/bus"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// toxiproxy's link goroutines end asynchronously after its proxy stops.
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/stream.(*ChanReader).Read"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// recorder is the Handler side of the bus: it records what the bus hands over.
type recorder struct {
	mu           sync.Mutex
	got          map[string][]string
	broadcasts   []string
	kicks        []string
	resubscribed atomic.Int32 // Resync calls
}

func newRecorder() *recorder { return &recorder{got: make(map[string][]string)} }

func (r *recorder) Deliver(user string, seq int64, data []byte) {
	r.mu.Lock()
	if seq > 0 {
		r.got[user] = append(r.got[user], fmt.Sprintf("%d:%s", seq, data))
	} else {
		r.got[user] = append(r.got[user], string(data))
	}
	r.mu.Unlock()
}
func (r *recorder) Broadcast(data []byte) {
	r.mu.Lock()
	r.broadcasts = append(r.broadcasts, string(data))
	r.mu.Unlock()
}
func (r *recorder) Kick(user string) {
	r.mu.Lock()
	r.kicks = append(r.kicks, user)
	r.mu.Unlock()
}
func (r *recorder) Resync() { r.resubscribed.Add(1) }

func (r *recorder) messages(user string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got[user]...)
}

func (r *recorder) count(user string) int { return len(r.messages(user)) }

type counters struct{ reconnects, probeFailures atomic.Int32 }

func (c *counters) PubSubReconnect() { c.reconnects.Add(1) }
func (c *counters) ProbeFailed()     { c.probeFailures.Add(1) }

// startBus starts a bus with a fast probe. The probe timeout is generous (a loaded CI machine
// can stall a process for a second) except where a test wants a quick wedge detection.
func startBus(t *testing.T, rdb redis.UniversalClient, prefix string, h bus.Handler, obs bus.Observer) *bus.Redis {
	t.Helper()
	return startBusProbe(t, rdb, prefix, h, obs, 5*time.Second)
}

func startBusProbe(t *testing.T, rdb redis.UniversalClient, prefix string, h bus.Handler, obs bus.Observer, probeTimeout time.Duration) *bus.Redis {
	t.Helper()
	b := bus.NewRedis(rdb, bus.RedisOptions{
		Prefix: prefix, NodeID: "n1", ProbeInterval: 100 * time.Millisecond,
		ProbeTimeout: probeTimeout, SetupTimeout: 5 * time.Second, Observer: obs,
	})
	b.Start(h)
	t.Cleanup(func() { _ = b.Close() })
	wait.For(t, 10*time.Second, func() bool { return b.Ready() == nil }, "bus never became ready")
	return b
}

func subscribe(t *testing.T, b interface {
	Subscribe(ctx context.Context, user string) error
}, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Subscribe(ctx, user); err != nil {
		t.Fatalf("subscribe %s: %v", user, err)
	}
}

func TestSubscribeDeliverUnsubscribe(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	rec := newRecorder()
	b := startBus(t, rdb, prefix, rec, nil)
	ctx := context.Background()

	subscribe(t, b, "alice")
	// Subscribe returned, so the subscription is confirmed: the very next publish counts it.
	if n := rdb.Publish(ctx, prefix+"user:{alice}", "hello").Val(); n != 1 {
		t.Fatalf("PUBLISH right after Subscribe returned counted %d receivers, want 1", n)
	}
	wait.For(t, 5*time.Second, func() bool { return rec.count("alice") == 1 }, "message not delivered")
	if got := rec.messages("alice")[0]; got != "hello" {
		t.Fatalf("payload %q, want hello", got)
	}

	if err := b.Unsubscribe(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Publish(ctx, prefix+"user:{alice}", "late").Val(); n != 0 {
		t.Fatalf("PUBLISH after Unsubscribe returned counted %d receivers, want 0", n)
	}

	if err := b.Broadcast(ctx, []byte("to all")); err != nil {
		t.Fatal(err)
	}
	if err := b.Kick(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.broadcasts) == 1 && len(rec.kicks) == 1
	}, "broadcast and kick not received")
	if rec.broadcasts[0] != "to all" || rec.kicks[0] != "bob" {
		t.Fatalf("broadcast %q kick %q", rec.broadcasts[0], rec.kicks[0])
	}
}

// A connect storm: thousands of concurrent subscribes share one pub/sub connection and are
// sent in batches, and each is confirmed.
func TestConnectStormOneConnection(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	b := startBus(t, rdb, prefix, newRecorder(), nil)

	const users = 3000
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := b.Subscribe(ctx, fmt.Sprintf("u%d", i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("subscribe: %v", err)
	}
	ctx := context.Background()
	n := rdb.PubSubChannels(ctx, prefix+"user:*").Val()
	if len(n) != users {
		t.Fatalf("%d user channels subscribed, want %d", len(n), users)
	}
	// One pub/sub connection for the node: count clients that hold subscriptions.
	list := rdb.ClientList(ctx).Val()
	subs := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " sub=") && !strings.Contains(line, " sub=0 ") {
			subs++
		}
	}
	if subs != 1 {
		t.Fatalf("%d connections hold subscriptions, want exactly 1 per node\n%s", subs, list)
	}
	// Batched: far fewer SUBSCRIBE commands than users (each carries up to 512 channels).
	info := rdb.Info(ctx, "commandstats").Val()
	calls := commandCalls(info, "subscribe")
	if calls == 0 || calls > users/10 {
		t.Fatalf("%d SUBSCRIBE commands for %d users; want batching (≤ %d)", calls, users, users/10)
	}
}

func commandCalls(info, cmd string) int {
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			var n int
			fmt.Sscanf(rest, "%d", &n)
			return n
		}
	}
	return 0
}

// An error reply to SUBSCRIBE (here NOPERM: an ACL forbids the channel) fails that command
// only: the subscriber gets the error at once, the link is not rebuilt, and other users on it
// keep receiving.
func TestSubscribeErrorReplyIsNotALostLink(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix(t)
	ctx := context.Background()
	err := srv.Client(t).Do(ctx, "ACL", "SETUSER", "gw", "on", ">secret", "~*", "resetchannels",
		"&"+prefix+"user:{ok*", "&"+prefix+"probe:*", "&"+prefix+"broadcast", "&"+prefix+"control", "+@all").Err()
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "gw", Password: "secret"})
	t.Cleanup(func() { _ = rdb.Close() })
	rec := newRecorder()
	var obs counters
	b := startBus(t, rdb, prefix, rec, &obs)

	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	err = b.Subscribe(sctx, "forbidden")
	if err == nil || errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("subscribe to a forbidden channel: %v after %s; want the NOPERM reply at once", err, time.Since(start))
	}
	if !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("error %q does not name the reply", err)
	}
	subscribe(t, b, "ok1")
	if n := rdb.Publish(ctx, prefix+"user:{ok1}", "hi").Val(); n != 1 {
		t.Fatalf("PUBLISH counted %d, want 1", n)
	}
	wait.For(t, 5*time.Second, func() bool { return rec.count("ok1") == 1 }, "no delivery")
	if r, l := obs.reconnects.Load(), rec.resubscribed.Load(); r != 0 || l != 0 {
		t.Fatalf("an error reply was taken for a lost link: %d reconnects, %d Resyncs", r, l)
	}
	if err := b.Ready(); err != nil {
		t.Fatalf("not ready: %v", err)
	}
}

// CLIENT KILL TYPE pubsub: the subscriptions come back by themselves, the hub is told so it can
// drain what landed offline meanwhile, and messages flow again.
func TestPubSubKilledResubscribes(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	rec := newRecorder()
	var obs counters
	b := startBus(t, rdb, prefix, rec, &obs)
	subscribe(t, b, "alice")
	ctx := context.Background()

	if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() bool { return rec.resubscribed.Load() >= 1 }, "Resync never called")
	wait.For(t, 10*time.Second, func() bool { return b.Ready() == nil }, "not ready after resubscribe")
	if obs.reconnects.Load() < 1 {
		t.Fatal("reconnect not counted")
	}
	// Resync is reported only once the subscriptions are confirmed, so a publish now counts.
	if n := rdb.Publish(ctx, prefix+"user:{alice}", "after").Val(); n != 1 {
		t.Fatalf("PUBLISH after resubscribe counted %d, want 1", n)
	}
	wait.For(t, 5*time.Second, func() bool { return rec.count("alice") == 1 }, "no delivery after resubscribe")
}

// A blackholed link: Redis keeps counting the dead subscriber and go-redis does not notice.
// The probe must: /readyz (Ready) turns unhealthy, the probe failure is counted, and once the
// link heals the node rebuilds its subscriptions and delivers again.
func TestWedgedLinkDetectedAndRecovered(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix(t)

	tp := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	proxy := toxiproxy.NewProxy(tp, "redis", "127.0.0.1:0", srv.Addr)
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Stop)

	rdb := redis.NewClient(&redis.Options{Addr: proxy.Listen, ReadTimeout: time.Second, WriteTimeout: time.Second, DialTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	direct := srv.Client(t)
	rec := newRecorder()
	var obs counters
	b := startBusProbe(t, rdb, prefix, rec, &obs, time.Second)
	subscribe(t, b, "alice")
	ctx := context.Background()

	// Blackhole both directions without closing anything.
	for _, stream := range []string{"upstream", "downstream"} {
		js := fmt.Sprintf(`{"name":"bh-%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, stream, stream)
		if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatal(err)
		}
	}
	// Redis still counts the wedged subscriber: the message is "received" and lost.
	if n := direct.Publish(ctx, prefix+"user:{alice}", "into the void").Val(); n != 1 {
		t.Fatalf("PUBLISH during blackhole counted %d, want 1 (the dead subscriber)", n)
	}
	wait.For(t, 10*time.Second, func() bool { return b.Ready() != nil }, "Ready stayed healthy on a wedged link")
	wait.For(t, 10*time.Second, func() bool { return obs.probeFailures.Load() >= 1 }, "probe failure not counted")

	resubs := rec.resubscribed.Load()
	for _, stream := range []string{"upstream", "downstream"} {
		if err := proxy.Toxics.RemoveToxic(ctx, "bh-"+stream); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 20*time.Second, func() bool { return b.Ready() == nil }, "did not recover after the link healed")
	wait.For(t, 5*time.Second, func() bool { return rec.resubscribed.Load() > resubs }, "Resync not called after recovery")
	wait.For(t, 10*time.Second, func() bool {
		return direct.Publish(ctx, prefix+"user:{alice}", "back").Val() >= 1 && rec.count("alice") >= 1
	}, "no delivery after recovery")
	for _, m := range rec.messages("alice") {
		if m != "back" {
			t.Fatalf("unexpected message %q", m)
		}
	}
}

// Redis down at start: not ready, subscribes refused at once (the client gets 503), then
// ready as soon as Redis is up.
func TestRedisDownAtStart(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix(t)
	srv.Stop(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	b := bus.NewRedis(rdb, bus.RedisOptions{Prefix: prefix, NodeID: "n1", ProbeInterval: 100 * time.Millisecond})
	b.Start(newRecorder())
	t.Cleanup(func() { _ = b.Close() })

	if b.Ready() == nil {
		t.Fatal("ready without Redis")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.Subscribe(ctx, "alice"); err == nil {
		t.Fatal("subscribe succeeded without Redis")
	}
	srv.Restart(t)
	wait.For(t, 15*time.Second, func() bool { return b.Ready() == nil }, "not ready after Redis came up")
	subscribe(t, b, "alice")
}
