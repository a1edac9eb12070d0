package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/inbox"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// A bulk push of 250 messages to three users (more than one script run on Redis) numbers each
// user's messages in their order, answers every message in order, and an id repeated inside
// the batch is a duplicate of its first use.
func TestPushBatchOrder(t *testing.T) {
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			s := im.new(t, inbox.Options{Max: 1000})
			users := []string{"ann", "ben", "cid"}
			var msgs []inbox.Message
			for i := range 250 {
				msgs = append(msgs, inbox.Message{User: users[i%3], Data: []byte("m" + strconv.Itoa(i))})
			}
			msgs[10].ID = "once" // ben
			msgs = append(msgs, inbox.Message{User: "ben", Data: []byte("again"), PushOptions: inbox.PushOptions{ID: "once"}})
			res := s.PushBatch(context.Background(), msgs)
			want := map[string][]string{}
			next := map[string]int64{}
			for i, m := range msgs[:250] {
				next[m.User]++
				if res[i].Err != nil || res[i].Seq != next[m.User] || res[i].Duplicate {
					t.Fatalf("message %d to %s: %+v, want seq %d", i, m.User, res[i], next[m.User])
				}
				want[m.User] = append(want[m.User], string(m.Data))
			}
			if last := res[250]; !last.Duplicate || last.Seq != res[10].Seq {
				t.Fatalf("repeated id: %+v, want a duplicate of seq %d", last, res[10].Seq)
			}
			for _, u := range users {
				if got := strs(read(t, s, u, 0).Msgs); !slices.Equal(got, want[u]) {
					t.Errorf("%s stored %v, want %v", u, got, want[u])
				}
				wait.For(t, 10*time.Second, func() bool {
					got := im.published(u)
					if len(got) != len(want[u]) {
						return false
					}
					for i, p := range got {
						if p != fmt.Sprintf("%d:%s", i+1, want[u][i]) {
							t.Fatalf("%s published %v", u, got)
						}
					}
					return true
				}, "%s's messages published in order", u)
			}
		})
	}
}

// A batch whose reply was lost is sent again and answers from its record: nothing is stored
// twice, and the caller gets the numbers of the first run.
func TestRedisBatchLostReplyIsNotDuplicated(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1}) // only our retry
	hook := &loseReply{}
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	s := inbox.NewRedis(rdb, inbox.Options{Prefix: redistest.Prefix(t), Max: 100})
	t.Cleanup(s.Close)
	// 150 messages: two script runs in one pipeline.
	var msgs []inbox.Message
	for i := range 150 {
		msgs = append(msgs, inbox.Message{User: []string{"alice", "bob"}[i%2], Data: []byte(strconv.Itoa(i))})
	}
	hook.on.Store(true)
	res := s.PushBatch(context.Background(), msgs)
	hook.on.Store(false)
	if hook.lost.Load() == 0 {
		t.Fatal("no reply was lost: the test did not test anything")
	}
	for i, r := range res {
		if r.Err != nil || r.Seq != int64(i/2+1) || r.Duplicate {
			t.Fatalf("result %d = %+v; want seq %d, answered from the batch's record", i, r, i/2+1)
		}
	}
	for _, u := range []string{"alice", "bob"} {
		if r := read(t, s, u, 0); r.Latest != 75 || len(r.Msgs) != 75 {
			t.Fatalf("%s stored: %s; want each message exactly once", u, rangeString(r))
		}
	}
}

// With replicas required and none there, every message of a batch fails with ErrNotReplicated
// (it is stored on the master: a retry with the same ids does not store it twice).
func TestRedisBatchNotReplicated(t *testing.T) {
	srv := redistest.Start(t)
	s := inbox.NewRedis(srv.Client(t), inbox.Options{Prefix: redistest.Prefix(t), WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond})
	t.Cleanup(s.Close)
	for i, r := range pushMany(s, []string{"a", "b"}, []byte("x"), inbox.PushOptions{}) {
		if !errors.Is(r.Err, inbox.ErrNotReplicated) {
			t.Fatalf("result %d = %+v; want ErrNotReplicated", i, r)
		}
	}
}

// A batch schedules its users for the undelivered event, as single pushes do.
func TestRedisBatchSchedulesUndelivered(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	s := inbox.NewRedis(rdb, inbox.Options{Prefix: prefix, UndeliveredAfter: time.Hour})
	t.Cleanup(s.Close)
	for _, r := range pushMany(s, []string{"a", "b"}, []byte("x"), inbox.PushOptions{}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	due, err := rdb.ZRange(context.Background(), prefix+"due", 0, -1).Result()
	if err != nil || !slices.Equal(due, []string{"a", "b"}) {
		t.Fatalf("schedule = %v, %v; want [a b]", due, err)
	}
}
