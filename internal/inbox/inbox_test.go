package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/inbox"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// store is what both implementations share, so each behaviour is tested on both.
type store interface {
	Push(ctx context.Context, user string, data []byte, o inbox.PushOptions) (inbox.Result, error)
	PushBatch(ctx context.Context, msgs []inbox.Message) []inbox.Result
	Read(ctx context.Context, user string, after int64) (inbox.Range, error)
	Ack(ctx context.Context, user string, seq int64) error
}

type impl struct {
	name string
	new  func(t *testing.T, opt inbox.Options) store
	// published returns what was published to user so far, as "seq:payload".
	published func(user string) []string
}

func impls(t *testing.T) []impl {
	var mu sync.Mutex
	memPub := map[string][]string{}
	mem := impl{
		name: "memory",
		new: func(t *testing.T, opt inbox.Options) store {
			return inbox.NewMemory(func(user string, seq int64, data []byte) int {
				mu.Lock()
				defer mu.Unlock()
				memPub[user] = append(memPub[user], fmt.Sprintf("%d:%s", seq, data))
				return 1
			}, opt, nil)
		},
		published: func(user string) []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), memPub[user]...)
		},
	}
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var redisPub sync.Map // channel → *[]string
	red := impl{
		name: "redis",
		new: func(t *testing.T, opt inbox.Options) store {
			opt.Prefix = redistest.Prefix(t)
			s := inbox.NewRedis(rdb, opt)
			t.Cleanup(s.Close)
			ps := rdb.PSubscribe(context.Background(), opt.Prefix+"user:*")
			if _, err := ps.Receive(context.Background()); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for m := range ps.Channel() {
					user := strings.TrimSuffix(strings.TrimPrefix(m.Channel, opt.Prefix+"user:{"), "}")
					v, _ := redisPub.LoadOrStore(user, &[]string{})
					seq, data, _ := strings.Cut(strings.TrimPrefix(m.Payload, "\x00"), " ")
					mu.Lock()
					*v.(*[]string) = append(*v.(*[]string), seq+":"+data)
					mu.Unlock()
				}
			}()
			t.Cleanup(func() { _ = ps.Close(); <-done })
			return s
		},
		published: func(user string) []string {
			v, ok := redisPub.Load(user)
			if !ok {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), *v.(*[]string)...)
		},
	}
	return []impl{mem, red}
}

// pushMany pushes one message to several users in one batch.
func pushMany(s store, users []string, data []byte, o inbox.PushOptions) []inbox.Result {
	msgs := make([]inbox.Message, len(users))
	for i, u := range users {
		msgs[i] = inbox.Message{User: u, Data: data, PushOptions: o}
	}
	return s.PushBatch(context.Background(), msgs)
}

func strs(b [][]byte) []string {
	out := make([]string, len(b))
	for i, x := range b {
		out[i] = string(x)
	}
	return out
}

// eachImpl runs f as a subtest on a new store of each implementation.
func eachImpl(t *testing.T, opt inbox.Options, f func(t *testing.T, s store)) {
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) { f(t, im.new(t, opt)) })
	}
}

// pushN pushes m1 … mn to user.
func pushN(t *testing.T, s store, user string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		if _, err := s.Push(context.Background(), user, []byte(fmt.Sprint("m", i)), inbox.PushOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func read(t *testing.T, s store, user string, after int64) inbox.Range {
	t.Helper()
	r, err := s.Read(context.Background(), user, after)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rangeString(r inbox.Range) string {
	return fmt.Sprintf("latest=%d first=%d acked=%d start=%d msgs=%v", r.Latest, r.First, r.Acked, r.Start, strs(r.Msgs))
}

// Pushes are numbered 1, 2, 3, … per user, kept up to the cap, and published with their
// number; a read after any position returns the kept messages after it.
func TestPushNumbersAndReads(t *testing.T) {
	ctx := context.Background()
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			s := im.new(t, inbox.Options{Max: 3})
			for i := 1; i <= 5; i++ {
				r, err := s.Push(ctx, "alice", []byte(fmt.Sprint("m", i)), inbox.PushOptions{})
				if err != nil || r.Seq != int64(i) || r.Duplicate {
					t.Fatalf("push %d = %+v, %v", i, r, err)
				}
			}
			if r, _ := s.Push(ctx, "bob", []byte("b"), inbox.PushOptions{}); r.Seq != 1 {
				t.Fatalf("bob's first push got seq %d; numbers are per user", r.Seq)
			}
			wait.For(t, 5*time.Second, func() bool { return len(im.published("alice")) == 5 }, "not all published")
			if got := fmt.Sprint(im.published("alice")); got != "[1:m1 2:m2 3:m3 4:m4 5:m5]" {
				t.Fatalf("published %s", got)
			}
			for _, c := range []struct {
				after int64
				want  string
			}{
				{-1, "latest=5 first=3 acked=0 start=3 msgs=[m3 m4 m5]"}, // the cap dropped 1 and 2
				{0, "latest=5 first=3 acked=0 start=3 msgs=[m3 m4 m5]"},
				{3, "latest=5 first=3 acked=0 start=4 msgs=[m4 m5]"},
				{5, "latest=5 first=3 acked=0 start=6 msgs=[]"},
				{9, "latest=5 first=3 acked=0 start=3 msgs=[m3 m4 m5]"}, // above latest: from 0
			} {
				if got := rangeString(read(t, s, "alice", c.after)); got != c.want {
					t.Errorf("read after %d: %s; want %s", c.after, got, c.want)
				}
			}
			if got := rangeString(read(t, s, "nobody", -1)); got != "latest=0 first=1 acked=0 start=1 msgs=[]" {
				t.Errorf("read of an unknown user: %s", got)
			}
		})
	}
}

// Acks move the position forward only, never above the latest number; acknowledged messages
// stay readable with an explicit position.
func TestAck(t *testing.T) {
	ctx := context.Background()
	eachImpl(t, inbox.Options{Max: 10}, func(t *testing.T, s store) {
		pushN(t, s, "alice", 4)
		for _, a := range []int64{2, 1, 9} { // backwards and above latest: ignored
			if err := s.Ack(ctx, "alice", a); err != nil {
				t.Fatal(err)
			}
		}
		if got := rangeString(read(t, s, "alice", -1)); got != "latest=4 first=1 acked=2 start=3 msgs=[m3 m4]" {
			t.Errorf("after acks: %s", got)
		}
		if got := rangeString(read(t, s, "alice", 0)); got != "latest=4 first=1 acked=2 start=1 msgs=[m1 m2 m3 m4]" {
			t.Errorf("acknowledged ones must stay readable: %s", got)
		}
		if err := s.Ack(ctx, "nobody", 3); err != nil {
			t.Fatal(err)
		}
		if got := rangeString(read(t, s, "nobody", -1)); got != "latest=0 first=1 acked=0 start=1 msgs=[]" {
			t.Errorf("an ack must not create state: %s", got)
		}
	})
}

// Acknowledged messages go once resume-ttl has passed since their ack (at the next ack).
func TestResumeTTL(t *testing.T) {
	ctx := context.Background()
	const resume = 300 * time.Millisecond
	eachImpl(t, inbox.Options{Max: 10, ResumeTTL: resume}, func(t *testing.T, s store) {
		pushN(t, s, "alice", 4)
		_ = s.Ack(ctx, "alice", 2)
		_ = s.Ack(ctx, "alice", 3) // within resume-ttl of the first: trims nothing
		if got := read(t, s, "alice", 0); got.First != 1 {
			t.Fatalf("trimmed within resume-ttl: %s", rangeString(got))
		}
		time.Sleep(resume + 50*time.Millisecond) // real time: Redis's clock cannot be faked
		_ = s.Ack(ctx, "alice", 4)
		// 1 and 2 were acknowledged more than resume-ttl ago; 3 is not guaranteed to go
		// yet (it goes between one and two resume-ttl after its ack).
		if got := rangeString(read(t, s, "alice", 0)); got != "latest=4 first=3 acked=4 start=3 msgs=[m3 m4]" {
			t.Errorf("after resume-ttl: %s", got)
		}
	})
}

// A repeated push id answers the first push's number and stores and sends nothing.
func TestDedup(t *testing.T) {
	ctx := context.Background()
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			s := im.new(t, inbox.Options{Max: 10})
			first, err := s.Push(ctx, "alice", []byte("a"), inbox.PushOptions{ID: "order-1"})
			if err != nil || first.Seq != 1 || first.Duplicate {
				t.Fatalf("first = %+v, %v", first, err)
			}
			again, err := s.Push(ctx, "alice", []byte("a"), inbox.PushOptions{ID: "order-1"})
			if err != nil || again.Seq != 1 || !again.Duplicate {
				t.Fatalf("repeat = %+v, %v; want seq 1, duplicate", again, err)
			}
			other, _ := s.Push(ctx, "bob", []byte("a"), inbox.PushOptions{ID: "order-1"}) // ids are per user
			if other.Seq != 1 || other.Duplicate {
				t.Fatalf("same id for another user = %+v", other)
			}
			res := pushMany(s, []string{"alice", "carol"}, []byte("a"), inbox.PushOptions{ID: "order-1"})
			if !res[0].Duplicate || res[0].Seq != 1 || res[1].Duplicate || res[1].Seq != 1 {
				t.Fatalf("pushMany = %+v", res)
			}
			if got := rangeString(read(t, s, "alice", -1)); got != "latest=1 first=1 acked=0 start=1 msgs=[a]" {
				t.Errorf("stored: %s", got)
			}
			time.Sleep(100 * time.Millisecond)
			if got := im.published("alice"); len(got) != 1 {
				t.Errorf("published %v; want once", got)
			}
		})
	}
}

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

func TestMemoryTTL(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	s := inbox.NewMemory(func(string, int64, []byte) int { return 0 }, inbox.Options{Max: 10, TTL: time.Minute}, clock)
	ctx := context.Background()
	_, _ = s.Push(ctx, "alice", []byte("old"), inbox.PushOptions{})
	now = now.Add(2 * time.Minute)
	if got := rangeString(read(t, s, "alice", -1)); got != "latest=0 first=1 acked=0 start=1 msgs=[]" {
		t.Fatalf("after the TTL: %s", got)
	}
	r, _ := s.Push(ctx, "alice", []byte("new"), inbox.PushOptions{})
	if r.Seq != 1 {
		t.Fatalf("seq after expiry %d; numbering starts again at 1", r.Seq)
	}
}
