package inbox

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// dueRunner emits undelivered events (lua/due.lua): each node takes, every tick, the users
// whose earliest deadline passed from the global schedule (ws:due), for a lease so that no
// other node takes them meanwhile (lua/claim.lua), checks them, and puts each back at its next
// deadline (lua/release.lua). One goroutine per node, owned by the inbox: StartDue, Close.
type dueRunner struct {
	s                     *Redis
	check, claim, release *redis.Script

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// dueLease is how long a claimed user is this node's: a node that dies holding it delays its
// events by at most this.
const dueLease = 30 * time.Second

// dueBatch is the most users one tick claims.
const dueBatch = 256

// StartDue runs the undelivered schedule, when UndeliveredAfter is set. Close stops it.
func (s *Redis) StartDue() {
	if s.opt.UndeliveredAfter <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.due.cancel = cancel
	s.due.wg.Add(1)
	go func() {
		defer s.due.wg.Done()
		s.due.run(ctx)
	}()
}

func (d *dueRunner) stop() {
	if d.cancel != nil {
		d.cancel()
		d.wg.Wait()
	}
}

// tickEvery is the schedule's resolution: a tenth of undelivered-after, between 100 ms and 1 s.
func (d *dueRunner) tickEvery() time.Duration {
	return min(time.Second, max(100*time.Millisecond, d.s.opt.UndeliveredAfter/10))
}

func (d *dueRunner) run(ctx context.Context) {
	t := time.NewTicker(d.tickEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil && d.tick(ctx) == dueBatch {
			// A full batch: more are due; take them now rather than a tick later.
		}
	}
}

// tick claims and checks the due users; it returns how many it claimed.
func (d *dueRunner) tick(ctx context.Context) int {
	s := d.s
	vals, err := d.claim.Run(ctx, s.rdb, []string{s.dueKey()}, dueLease.Milliseconds(), dueBatch).Slice()
	if err != nil || len(vals) < 1 {
		return 0
	}
	lease, _ := vals[0].(int64)
	users := vals[1:]
	var wg sync.WaitGroup
	for _, v := range users {
		user, _ := v.(string)
		wg.Go(func() { d.checkUser(ctx, user, lease) })
	}
	wg.Wait()
	return len(users)
}

// checkUser emits the user's undelivered events and reschedules it. On an error the user
// stays claimed until the lease ends, and is checked again then.
func (d *dueRunner) checkUser(ctx context.Context, user string, lease int64) {
	s := d.s
	vals, err := s.batch.Run(ctx, d.check, s.withEvents(s.Key(user)), user, s.opt.NodeID).Slice()
	if err != nil || len(vals) < 1 {
		return
	}
	if s.appendEvents(ctx, vals[1:]) != nil {
		return
	}
	next, _ := vals[0].(int64)
	_ = d.release.Run(ctx, s.rdb, []string{s.dueKey()}, user, lease, next).Err()
}
