package inbox_test

// Tests that only the Redis store can answer: lost replies, the Redis Function, key TTLs and
// an unreachable server.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/inbox"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
)

// A push whose reply is lost is retried with the same id: stored and sent once (go-redis
// retries, then the inbox's own retry; the hook drops the first reply of every push).
func TestRedisLostReplyIsNotDuplicated(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1}) // only our retry
	hook := &loseReply{}
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	s := inbox.NewRedis(rdb, inbox.Options{Prefix: redistest.Prefix(t), Max: 10})
	t.Cleanup(s.Close)
	ctx := context.Background()
	if _, err := s.Read(ctx, "warm", -1); err != nil { // scripts loaded, hook off for reads
		t.Fatal(err)
	}
	hook.on.Store(true)
	r, err := s.Push(ctx, "alice", []byte("once"), inbox.PushOptions{})
	if err != nil || r.Seq != 1 {
		t.Fatalf("push = %+v, %v; want seq 1, answered from the record of its first run", r, err)
	}
	hook.on.Store(false)
	if hook.lost.Load() == 0 {
		t.Fatal("no reply was lost: the test did not test anything")
	}
	if got := rangeString(read(t, s, "alice", -1)); got != "latest=1 first=1 acked=0 start=1 msgs=[once]" {
		t.Fatalf("stored: %s; want exactly one message", got)
	}
}

// loseReply runs a script (or a pipeline of them) and then reports a connection error, every
// other time, as a Redis that died after running it would.
type loseReply struct {
	on   atomic.Bool
	lost atomic.Int64
}

func (h *loseReply) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *loseReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.lose(next(ctx, cmd), cmd)
	}
}
func (h *loseReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return h.lose(next(ctx, cmds), cmds...)
	}
}

func (h *loseReply) lose(err error, cmds ...redis.Cmder) error {
	if !h.on.Load() || err != nil || cmds[0].Name() != "evalsha" || h.lost.Add(1)%2 == 0 {
		return err
	}
	for _, c := range cmds {
		c.SetErr(io.ErrUnexpectedEOF)
	}
	return io.ErrUnexpectedEOF
}

// A multi-user push answers each user: one that failed gets Err, the others are accepted.
func TestRedisPushManyPerUser(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	s := inbox.NewRedis(rdb, inbox.Options{Prefix: prefix, Max: 10})
	t.Cleanup(s.Close)
	ctx := context.Background()
	// bob's state key has the wrong type: his push fails with an error reply.
	if err := rdb.Set(ctx, prefix+"inbox:{bob}:state", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	res := pushMany(s, []string{"alice", "bob", "carol"}, []byte("m"), inbox.PushOptions{})
	if res[0].Err != nil || res[0].Seq != 1 || res[2].Err != nil || res[2].Seq != 1 {
		t.Fatalf("alice and carol must be accepted: %+v", res)
	}
	if res[1].Err == nil {
		t.Fatalf("bob's push must fail: %+v", res[1])
	}
}

// The Redis Function gives redis-cli users the same push; bad arguments change nothing.
func TestRedisFunction(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	ctx := context.Background()
	s := inbox.NewRedis(rdb, inbox.Options{Prefix: prefix, Max: 2})
	t.Cleanup(s.Close)
	for range 2 { // idempotent: REPLACE
		if err := s.LoadFunction(ctx); err != nil {
			t.Fatal(err)
		}
	}
	keys := []string{prefix + "user:{carol}", prefix + "inbox:{carol}"}
	for i, m := range []string{"1", "2", "3"} {
		v, err := rdb.FCall(ctx, inbox.FunctionName, keys, m).Int64Slice()
		if err != nil || fmt.Sprint(v) != fmt.Sprintf("[%d 0]", i+1) {
			t.Fatalf("FCALL = %v, %v; want [%d 0]", v, err, i+1)
		}
	}
	if got := rangeString(read(t, s, "carol", -1)); got != "latest=3 first=2 acked=0 start=2 msgs=[2 3]" {
		t.Fatalf("stored: %s (cap 2 is baked into the function)", got)
	}
	v, err := rdb.FCall(ctx, inbox.FunctionName, keys, "4", "id-1").Int64Slice()
	if err != nil || fmt.Sprint(v) != "[4 0]" {
		t.Fatalf("FCALL with id = %v, %v", v, err)
	}
	v, err = rdb.FCall(ctx, inbox.FunctionName, keys, "4", "id-1").Int64Slice()
	if err != nil || fmt.Sprint(v) != "[4 0]" {
		t.Fatalf("repeated id = %v, %v; want the first push's [4 0]", v, err)
	}

	ps := rdb.Subscribe(ctx, keys[0])
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	v, err = rdb.FCall(ctx, inbox.FunctionName, keys, "live").Int64Slice()
	if err != nil || fmt.Sprint(v) != "[5 1]" {
		t.Fatalf("FCALL to a subscribed user = %v, %v; want [5 1]", v, err)
	}
	if m, err := ps.ReceiveMessage(ctx); err != nil || m.Payload != "\x005 live" {
		t.Fatalf("published %q, %v", m.Payload, err)
	}

	for name, call := range map[string]struct {
		keys []string
		args []any
	}{
		"no payload":       {keys, nil},
		"extra argument":   {keys, []any{"x", "id", "more"}},
		"bad id":           {keys, []any{"x", "not ok!"}},
		"long id":          {keys, []any{"x", strings.Repeat("a", 129)}},
		"one key":          {keys[:1], []any{"x"}},
		"users differ":     {[]string{prefix + "user:{carol}", prefix + "inbox:{dave}"}, []any{"x"}},
		"other prefix":     {[]string{"zz:user:{carol}", "zz:inbox:{carol}"}, []any{"x"}},
		"bad user id":      {[]string{prefix + "user:{a b}", prefix + "inbox:{a b}"}, []any{"x"}},
		"braces in the id": {[]string{prefix + "user:{a}}", prefix + "inbox:{a}}"}, []any{"x"}},
	} {
		err := rdb.FCall(ctx, inbox.FunctionName, call.keys, call.args...).Err()
		var rerr redis.Error
		if err == nil || !errors.As(err, &rerr) {
			t.Errorf("%s: FCALL = %v; want an error reply", name, err)
		}
	}
	if got := rangeString(read(t, s, "carol", -1)); got != "latest=5 first=4 acked=0 start=4 msgs=[4 live]" {
		t.Fatalf("bad calls changed the inbox: %s", got)
	}
}

// Keys expire offline-ttl after the last push; an ack keeps them at least resume-ttl.
func TestRedisTTL(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	ctx := context.Background()
	s := inbox.NewRedis(rdb, inbox.Options{Prefix: prefix, Max: 10, TTL: 90 * time.Second, ResumeTTL: time.Hour})
	t.Cleanup(s.Close)
	if _, err := s.Push(ctx, "alice", []byte("a"), inbox.PushOptions{ID: "id1"}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"inbox:{alice}", "inbox:{alice}:state"} {
		if ttl := rdb.TTL(ctx, prefix+k).Val(); ttl <= 80*time.Second || ttl > 90*time.Second {
			t.Fatalf("%s TTL %s, want about 90s", k, ttl)
		}
	}
	if ttl := rdb.TTL(ctx, prefix+"inbox:{alice}:id:id1").Val(); ttl <= 9*time.Minute {
		t.Fatalf("id TTL %s, want dedup-ttl (10m)", ttl)
	}
	if err := s.Ack(ctx, "alice", 1); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"inbox:{alice}", "inbox:{alice}:state"} {
		if ttl := rdb.TTL(ctx, prefix+k).Val(); ttl <= 59*time.Minute {
			t.Fatalf("%s TTL %s after an ack, want resume-ttl (1h)", k, ttl)
		}
	}
	// A Redis that lost its script cache (restart, SCRIPT FLUSH) is handled on every path.
	for _, call := range []func() error{
		func() error { _, err := s.Push(ctx, "alice", []byte("b"), inbox.PushOptions{}); return err },
		func() error { _, err := s.Read(ctx, "alice", 0); return err },
		func() error { return s.Ack(ctx, "alice", 2) },
	} {
		rdb.ScriptFlush(ctx)
		if err := call(); err != nil {
			t.Fatal(err)
		}
	}
}

// Redis unreachable: every call fails (the API answers 503, a connect 1011), nothing half-done.
func TestRedisUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr
	srv.Stop(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	s := inbox.NewRedis(rdb, inbox.Options{Max: 10})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.Push(ctx, "alice", []byte("x"), inbox.PushOptions{}); err == nil {
		t.Fatal("push succeeded without Redis")
	}
	if _, err := s.Read(ctx, "alice", -1); err == nil {
		t.Fatal("read succeeded without Redis")
	}
	if res := pushMany(s, []string{"a", "b"}, []byte("x"), inbox.PushOptions{}); res[0].Err == nil || res[1].Err == nil {
		t.Fatal("PushBatch succeeded without Redis")
	}
}
