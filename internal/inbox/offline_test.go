package inbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/offline"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// store is the part both implementations share, so each behaviour is tested on both.
type store interface {
	Push(ctx context.Context, user string, data []byte) (bool, error)
	PushMany(ctx context.Context, users []string, data []byte) ([]bool, error)
	Drain(ctx context.Context, user string) ([][]byte, error)
	Requeue(ctx context.Context, user string, msgs [][]byte) error
	Len(ctx context.Context, user string) (int, error)
}

// subscribeFunc makes user "online" for the store under test and returns the undo.
type subscribeFunc func(t *testing.T, user string) (received func() []string, undo func())

type impl struct {
	name      string
	new       func(t *testing.T, max int) store
	subscribe subscribeFunc
}

func impls(t *testing.T) []impl {
	var memSubs sync.Map // user → *[]string
	var memMu sync.Mutex
	mem := impl{
		name: "memory",
		new: func(t *testing.T, max int) store {
			publish := func(user string, data []byte) int {
				v, ok := memSubs.Load(user)
				if !ok {
					return 0
				}
				memMu.Lock()
				*v.(*[]string) = append(*v.(*[]string), string(data))
				memMu.Unlock()
				return 1
			}
			return offline.NewMemory(publish, max, time.Hour, nil)
		},
		subscribe: func(t *testing.T, user string) (func() []string, func()) {
			got := &[]string{}
			memSubs.Store(user, got)
			return func() []string {
					memMu.Lock()
					defer memMu.Unlock()
					return append([]string(nil), *got...)
				},
				func() { memSubs.Delete(user) }
		},
	}
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var prefix string
	red := impl{
		name: "redis",
		new: func(t *testing.T, max int) store {
			prefix = redistest.Prefix(t)
			s := offline.NewRedis(rdb, prefix, max, time.Hour, false)
			t.Cleanup(s.Close)
			return s
		},
		subscribe: func(t *testing.T, user string) (func() []string, func()) {
			ps := rdb.Subscribe(context.Background(), prefix+"user:{"+user+"}")
			if _, err := ps.Receive(context.Background()); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var got []string
			done := make(chan struct{})
			go func() {
				defer close(done)
				for m := range ps.Channel() {
					mu.Lock()
					got = append(got, m.Payload)
					mu.Unlock()
				}
			}()
			return func() []string {
					mu.Lock()
					defer mu.Unlock()
					return append([]string(nil), got...)
				}, func() {
					_ = ps.Close()
					<-done
				}
		},
	}
	return []impl{mem, red}
}

func strs(b [][]byte) []string {
	out := make([]string, len(b))
	for i, x := range b {
		out[i] = string(x)
	}
	return out
}

func eq(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestPushOrStore(t *testing.T) {
	ctx := context.Background()
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			s := im.new(t, 3)
			for i := 1; i <= 5; i++ {
				online, err := s.Push(ctx, "alice", []byte(fmt.Sprint(i)))
				if err != nil || online {
					t.Fatalf("push %d: online=%v err=%v; want stored", i, online, err)
				}
			}
			// Capped at 3: the oldest two were dropped.
			got, err := s.Drain(ctx, "alice")
			if err != nil || !eq(strs(got), []string{"3", "4", "5"}) {
				t.Fatalf("drain = %q, %v; want [3 4 5]", strs(got), err)
			}
			if again, _ := s.Drain(ctx, "alice"); len(again) != 0 {
				t.Fatalf("second drain = %q; want nothing (exactly once)", strs(again))
			}

			received, undo := im.subscribe(t, "bob")
			online, err := s.Push(ctx, "bob", []byte("live"))
			if err != nil || !online {
				t.Fatalf("push to subscribed user: online=%v err=%v", online, err)
			}
			wait.For(t, 5*time.Second, func() bool { return len(received()) == 1 }, "not published")
			if n, _ := s.Len(ctx, "bob"); n != 0 {
				t.Fatalf("%d stored for an online user, want 0", n)
			}
			undo()
		})
	}
}

// Requeue puts unsent messages back ahead of what was stored meanwhile (they are older).
func TestRequeueGoesFirst(t *testing.T) {
	ctx := context.Background()
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			s := im.new(t, 100)
			if _, err := s.Push(ctx, "alice", []byte("4")); err != nil {
				t.Fatal(err)
			}
			if err := s.Requeue(ctx, "alice", [][]byte{[]byte("1"), []byte("2"), []byte("3")}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Push(ctx, "alice", []byte("5")); err != nil {
				t.Fatal(err)
			}
			got, _ := s.Drain(ctx, "alice")
			if !eq(strs(got), []string{"1", "2", "3", "4", "5"}) {
				t.Fatalf("drain = %q, want 1..5", strs(got))
			}
		})
	}
}

func TestPushMany(t *testing.T) {
	ctx := context.Background()
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			s := im.new(t, 10)
			received, undo := im.subscribe(t, "u1")
			defer undo()
			online, err := s.PushMany(ctx, []string{"u0", "u1", "u2"}, []byte("x"))
			if err != nil || fmt.Sprint(online) != "[false true false]" {
				t.Fatalf("PushMany = %v, %v; want [false true false]", online, err)
			}
			wait.For(t, 5*time.Second, func() bool { return len(received()) == 1 }, "u1 not published")
			for _, u := range []string{"u0", "u2"} {
				if n, _ := s.Len(ctx, u); n != 1 {
					t.Fatalf("%s has %d stored, want 1", u, n)
				}
			}
		})
	}
}

func TestRedisTTLAndScriptReload(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	ctx := context.Background()
	s := offline.NewRedis(rdb, prefix, 10, 90*time.Second, false)
	defer s.Close()
	if _, err := s.Push(ctx, "alice", []byte("a")); err != nil {
		t.Fatal(err)
	}
	ttl := rdb.TTL(ctx, prefix+"offline:{alice}").Val()
	if ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("TTL %s, want about 90s", ttl)
	}
	// A Redis that lost its script cache (restart, SCRIPT FLUSH) is handled for both paths.
	rdb.ScriptFlush(ctx)
	if _, err := s.Push(ctx, "alice", []byte("b")); err != nil {
		t.Fatal(err)
	}
	rdb.ScriptFlush(ctx)
	if _, err := s.PushMany(ctx, []string{"alice", "bob"}, []byte("c")); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Drain(ctx, "alice")
	if !eq(strs(got), []string{"a", "b", "c"}) {
		t.Fatalf("alice drained %q", strs(got))
	}
}

// The Redis Function gives redis-cli users the same atomic push-or-store.
func TestRedisFunction(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	ctx := context.Background()
	s := offline.NewRedis(rdb, prefix, 2, time.Hour, false)
	defer s.Close()
	if err := s.LoadFunction(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.LoadFunction(ctx); err != nil { // idempotent: REPLACE
		t.Fatal(err)
	}
	keys := []string{prefix + "user:{carol}", prefix + "offline:{carol}"}
	for _, m := range []string{"1", "2", "3"} {
		n, err := rdb.FCall(ctx, offline.FunctionName, keys, m).Int64()
		if err != nil || n != 0 {
			t.Fatalf("FCALL = %d, %v; want 0 (stored)", n, err)
		}
	}
	got, _ := s.Drain(ctx, "carol")
	if !eq(strs(got), []string{"2", "3"}) { // cap 2 baked into the function
		t.Fatalf("drained %q, want [2 3]", strs(got))
	}
	ps := rdb.Subscribe(ctx, keys[0])
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.FCall(ctx, offline.FunctionName, keys, "live").Int64(); err != nil || n != 1 {
		t.Fatalf("FCALL to a subscribed user = %d, %v; want 1", n, err)
	}
	if n := rdb.Exists(ctx, keys[1]).Val(); n != 0 {
		t.Fatal("stored although a subscriber received it")
	}
}

// Redis unreachable: Push fails (the API answers 503) and nothing is half-done.
func TestRedisUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr
	srv.Stop(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	s := offline.NewRedis(rdb, "ws:", 10, time.Hour, false)
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Push(ctx, "alice", []byte("x")); err == nil {
		t.Fatal("push succeeded without Redis")
	}
	if _, err := s.Drain(ctx, "alice"); err == nil {
		t.Fatal("drain succeeded without Redis")
	}
	if err := s.Requeue(ctx, "alice", [][]byte{[]byte("x")}); err == nil {
		t.Fatal("requeue succeeded without Redis")
	}
}

func TestMemoryTTL(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	s := offline.NewMemory(func(string, []byte) int { return 0 }, 10, time.Minute, clock)
	ctx := context.Background()
	_, _ = s.Push(ctx, "alice", []byte("old"))
	now = now.Add(2 * time.Minute)
	if n, _ := s.Len(ctx, "alice"); n != 0 {
		t.Fatalf("%d messages after the TTL, want 0", n)
	}
	_, _ = s.Push(ctx, "alice", []byte("new"))
	got, _ := s.Drain(ctx, "alice")
	if !eq(strs(got), []string{"new"}) {
		t.Fatalf("drained %q, want [new]", strs(got))
	}
}
