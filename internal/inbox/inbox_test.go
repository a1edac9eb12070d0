package inbox_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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
