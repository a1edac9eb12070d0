package offline

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
)

// A drain whose reply was lost is run again by go-redis with the same arguments: it must
// return the same messages, not an empty list (the soak test lost messages that way when Redis
// shut down between running a drain and answering it).
func TestDrainScriptIsIdempotent(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	prefix := redistest.Prefix(t)
	ctx := context.Background()
	s := NewRedis(rdb, prefix, 10, time.Hour, false)
	defer s.Close()
	for i := range 3 {
		if _, err := s.Push(ctx, "alice", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	keys := []string{s.Key("alice"), s.Key("alice") + ":taken:t1"}
	first, err := drainScript.Run(ctx, rdb, keys, 60000).StringSlice()
	if err != nil || fmt.Sprint(first) != "[0 1 2]" {
		t.Fatalf("first run = %v, %v", first, err)
	}
	again, err := drainScript.Run(ctx, rdb, keys, 60000).StringSlice()
	if err != nil || fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("the same call run again returned %v, %v; want %v", again, err, first)
	}
	if n := rdb.Exists(ctx, s.Key("alice")).Val(); n != 0 {
		t.Fatal("the list is still there after the drain")
	}
	// Another call (another token) gets nothing: no duplicates across drains.
	other, err := drainScript.Run(ctx, rdb, []string{s.Key("alice"), s.Key("alice") + ":taken:t2"}, 60000).StringSlice()
	if err != nil || len(other) != 0 {
		t.Fatalf("a second drain got %v, %v; want nothing", other, err)
	}
	// Drain itself removes its taken key once it has the messages.
	if _, err := s.Push(ctx, "alice", []byte("x")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Drain(ctx, "alice")
	if err != nil || len(got) != 1 {
		t.Fatalf("Drain = %q, %v", got, err)
	}
	if keys := rdb.Keys(ctx, prefix+"offline:{alice}:taken:*").Val(); len(keys) != 1 { // t1 only
		t.Fatalf("taken keys left: %v; want only the test's own t1", keys)
	}
	if ttl := rdb.PTTL(ctx, keys[1]).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("taken key TTL %s, want ≤ 1m", ttl)
	}
}
