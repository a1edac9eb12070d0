package e2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// The drain after a resubscribe races with users leaving. Node A holds many users; its pub/sub
// connection is killed and at once one message per user is stored (push-or-store Function,
// one pipeline), so A's drain after resubscribing finds them; meanwhile every user closes.
// Each message must end up exactly once: received before the close, or still in the offline
// list for the next connect. A drain that takes a user's messages after the user left must
// not drop them.
func TestResubscribeDrainRacesDisconnect(t *testing.T) {
	c := newCluster(t)
	a := c.startNode("a")
	ctx := context.Background()
	const users = 100
	clients := make([]*client, users)
	for i := range clients {
		clients[i] = dial(t, wsURL(a.addr, fmt.Sprintf("d%d", i)), nil)
	}

	if killed, err := c.rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil || killed < 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d, %v", killed, err)
	}
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range users {
			u := fmt.Sprintf("d%d", i)
			p.FCall(ctx, "wsgateway_push", []string{c.prefix + "user:{" + u + "}", c.prefix + "offline:{" + u + "}"}, "m")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pipeline of FCALLs: %v", err)
	}
	// One after the other, so that the leaving overlaps the drain, which walks the users
	// one Redis round trip at a time.
	frames := make([][]frame, users)
	for i, cl := range clients {
		var err error
		if frames[i], err = cl.closeClean(); err != nil {
			t.Fatalf("closing d%d: %v", i, err)
		}
	}
	wait.For(t, timeout, a.idle, "node A never finished the closed connections")

	// Every message delivered before its close, or stored for the next connect; a drain still
	// in flight may hold a few for a moment, so poll for the missing ones to come back.
	delivered := make([]int, users)
	for i := range users {
		for _, f := range frames[i] {
			if string(f.data) == "m" {
				delivered[i]++
			}
		}
	}
	count := func() (lost, dup []string) {
		for i := range users {
			u := fmt.Sprintf("d%d", i)
			switch delivered[i] + int(c.offlineLen(u)) {
			case 0:
				lost = append(lost, u)
			case 1:
			default:
				dup = append(dup, u)
			}
		}
		return lost, dup
	}
	wait.For(t, timeout, func() bool { lost, _ := count(); return len(lost) == 0 },
		"messages lost: %s", lazy(func() string { lost, _ := count(); return fmt.Sprint(lost) }))
	if _, dup := count(); len(dup) > 0 {
		t.Fatalf("messages both delivered and stored (or stored twice): %v", dup)
	}
	t.Logf("%d delivered before the close, %v requeued (by closing connections and the drain)",
		sum(delivered), a.metric("wsgateway_offline_stored_total"))
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}
