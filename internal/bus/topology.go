package bus

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/ctxsleep"
)

// TopologyInterval is how often Cluster rereads the slot map.
const TopologyInterval = time.Second

// moveConcurrency bounds the users moved at once after a slot map change: enough for their
// subscribes to share the shard's batches, few enough not to flood a master that just took
// over (a failover moves every user of the dead one).
const moveConcurrency = 32

// watch keeps the shard set equal to the cluster's masters.
func (c *Cluster) watch(ctx context.Context) {
	t := time.NewTicker(TopologyInterval)
	defer t.Stop()
	for {
		if err := c.sync(ctx); err != nil && ctx.Err() == nil {
			c.classic.log.Warn("reading the cluster topology failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.refresh:
		}
	}
}

// refreshSoon asks the watcher for a round now; a shard calls it when Redis says a slot moved.
func (c *Cluster) refreshSoon() {
	select {
	case c.refresh <- struct{}{}:
	default:
	}
}

// sync reads the slot map and applies it.
func (c *Cluster) sync(ctx context.Context) error {
	owners, masters, err := c.readTopology(ctx)
	if err != nil {
		return err
	}
	c.apply(ctx, owners, masters)
	return nil
}

// readTopology reads the slot map: the owner of every slot range, sorted, and the masters.
func (c *Cluster) readTopology(ctx context.Context) ([]slotOwner, map[string]bool, error) {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	shards, err := c.cc.ClusterShards(qctx).Result()
	cancel()
	if err != nil {
		return nil, nil, err
	}
	owners, masters := slotMap(shards)
	return owners, masters, nil
}

// apply carries out a round's plan (planTopology): starts buses for new masters, moves users
// whose slot changed owner, and retires buses of nodes that own no slot any more.
func (c *Cluster) apply(ctx context.Context, owners []slotOwner, masters map[string]bool) {
	c.mu.Lock()
	p := planTopology(owners, masters, c.stateLocked())
	var started []*shard
	for _, addr := range p.start {
		s := c.newShard(addr, owners)
		c.shards[addr] = s
		started = append(started, s)
	}
	for _, addr := range p.reprobe {
		c.shards[addr].bus.setProbe(probeChannelFor(c.opt.Prefix, c.opt.NodeID, addr, owners))
	}
	if p.changed {
		c.slots = owners
		// The ClusterClient that runs pushes learns new owners only lazily (a MOVED reply,
		// which a dead master never sends): tell it now.
		c.cc.ReloadState(ctx)
	}
	type move struct {
		user     string
		from, to *shard
	}
	var moves []move
	for _, m := range p.moves {
		moves = append(moves, move{m.user, c.users[m.user], c.shards[m.to]})
	}
	var retired []*shard
	for _, addr := range p.retire {
		retired = append(retired, c.shards[addr])
		delete(c.shards, addr)
	}
	c.mu.Unlock()

	for _, s := range started {
		s.bus.Start(c.h)
	}
	// A dead master's bus may take a setup timeout to stop: not on this loop's time.
	for _, s := range retired {
		c.wg.Go(func() {
			_ = s.bus.Close()
			_ = s.client.Close()
		})
	}
	r := moveRound{h: c.h}
	sem := make(chan struct{}, moveConcurrency)
	var wg sync.WaitGroup
	for _, m := range moves {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.move(ctx, &r, m.user, m.from, m.to)
		})
	}
	wg.Wait()
	if r.held.Load() || len(retired) > 0 {
		c.classic.log.Info("cluster topology changed", "users_moved", r.moved.Load(), "shards", len(masters))
		c.h.Resync()
	}
	if r.notReady.Load() {
		c.kickSoon(ctx)
	}
}

// moveRound is what the moves of one round share.
type moveRound struct {
	h Handler
	// held says a subscribe on a new owner started: what was published to a moving user before
	// it was subscribed there reaches the hub's connections by the Resync after the round.
	held     atomic.Bool
	moved    atomic.Int64
	notReady atomic.Bool // a move waits for a shard still connecting: try again shortly
}

// move subscribes user on its new owner to and unsubscribes it from from, under the user's
// lock, so that no Subscribe or Unsubscribe of the user runs in between. A move that fails is
// tried again at a later round.
//
// The user's last connection may end while the move waits for to: Unsubscribe then takes the
// user out of users before it waits for the lock. The move sees that and unsubscribes the user
// from to, and from from as well, in case that Unsubscribe gave up waiting. Left subscribed,
// Redis would count this node as the user's receiver: pushes would be neither delivered (the
// hub has no entry) nor stored.
func (c *Cluster) move(ctx context.Context, r *moveRound, user string, from, to *shard) {
	if to.bus.Ready() != nil {
		r.notReady.Store(true)
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	unlock, err := c.lockUser(lctx, user)
	if err != nil {
		return
	}
	defer unlock()
	c.mu.Lock()
	current := c.users[user]
	c.mu.Unlock()
	if current != from {
		return // gone, or moved meanwhile: nothing left to do here
	}
	r.held.Store(true)
	if err := to.bus.Subscribe(lctx, user); err != nil {
		c.classic.log.Debug("moving a user to its new shard failed, retrying", "user_id", user, "err", err)
		return
	}
	c.mu.Lock()
	stayed := c.users[user] == from
	if stayed {
		c.users[user] = to
	}
	c.mu.Unlock()
	r.moved.Add(1)
	uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if !stayed {
		_ = to.bus.Unsubscribe(uctx, user)
	}
	if from != nil {
		// On the old owner the usual answer is MOVED: Redis dropped the subscription itself
		// when the slot left. Either way the shard stops wanting the channel.
		_ = from.bus.Unsubscribe(uctx, user)
	}
}

// kickSoon asks for another round shortly, for moves that waited on a shard still connecting.
func (c *Cluster) kickSoon(ctx context.Context) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctxsleep.Sleep(ctx, 100*time.Millisecond)
		c.refreshSoon()
	}()
}

// stateLocked is what a round decides against; under mu.
func (c *Cluster) stateLocked() clusterState {
	st := clusterState{slots: c.slots, probes: make(map[string]int, len(c.shards)), users: make([]placedUser, 0, len(c.users))}
	for addr, s := range c.shards {
		st.probes[addr] = Slot(s.bus.probe.Load().cur)
	}
	for user, s := range c.users {
		addr := s.addr
		if c.shards[addr] != s {
			addr = "" // retired in an earlier round
		}
		st.users = append(st.users, placedUser{user, Slot(c.Channel(user)), addr})
	}
	return st
}

// newShard makes the bus of one master. Its probe channel carries a hash tag chosen so that
// it lands in a slot the master owns: the probe then tests exactly that shard's path.
func (c *Cluster) newShard(addr string, owners []slotOwner) *shard {
	o := c.cc.Options()
	client := redis.NewClient(&redis.Options{
		Addr: addr, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
	})
	opt := c.opt
	opt.Sharded = true
	opt.ProbeChannel = probeChannelFor(opt.Prefix, opt.NodeID, addr, owners)
	opt.OnReady = nil // the Function is loaded by the classic bus's OnReady on every master
	b := NewRedis(client, opt)
	b.onMoved = c.refreshSoon
	return &shard{addr: addr, client: client, bus: b}
}
