package e2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// The catch-up after a resubscribe races with users leaving. Node A holds many users; its
// pub/sub connection is killed and at once one message per user is pushed (the Function, one
// pipeline), so A's connections read them from the inbox after resubscribing (Resync);
// meanwhile every user closes. Each message must end up exactly once: received (and so
// acknowledged) before the close, or still unacknowledged for the next connect.
func TestResubscribeDrainRacesDisconnect(t *testing.T) {
	c := newCluster(t)
	a := c.startNode("a")
	ctx := context.Background()
	const users = 100
	clients := make([]*client, users)
	for i := range clients {
		clients[i] = dial(t, a.Addr, as(fmt.Sprintf("d%d", i)))
	}

	if killed, err := c.rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil || killed < 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d, %v", killed, err)
	}
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range users {
			u := fmt.Sprintf("d%d", i)
			p.FCall(ctx, "wsgateway_push", []string{c.prefix + "user:{" + u + "}", c.prefix + "inbox:{" + u + "}"}, "m")
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

	// Every message delivered before its close, or unacknowledged for the next connect; the
	// positions are recorded as each connection ends, so poll for them to settle.
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
		"messages lost: %s", wait.Lazy(func() string { lost, _ := count(); return fmt.Sprint(lost) }))
	if _, dup := count(); len(dup) > 0 {
		t.Fatalf("messages both delivered and unacknowledged: %v", dup)
	}
	t.Logf("%d delivered before the close", sum(delivered))
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}
