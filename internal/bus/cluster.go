package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/keys"
)

// Cluster is the bus on a Redis Cluster. Users travel on sharded pub/sub (SSUBSCRIBE and
// SPUBLISH, Redis 7), so a push costs one shard instead of a cluster-wide broadcast, and the
// push-or-store script sees the real receiver count (a classic PUBLISH counts only the node
// that ran it). go-redis's ClusterClient dials only the owner of the first channel's slot for a
// sharded PubSub (go-redis issue 3133), so Cluster runs one sharded Redis bus per master, each
// on its own connection to that master, and routes every user to the shard owning its slot.
//
// Broadcast and control stay on classic pub/sub (one more Redis bus on the ClusterClient):
// a classic PUBLISH reaches every node of the cluster, which is exactly a broadcast, and they
// are rare, so the cluster-wide cost does not matter.
//
// Topology: every TopologyInterval, and at once when a shard hears from Redis that a slot moved
// (a MOVED reply, or Redis dropping the channels of a slot that left), Cluster reads the slot
// map (topology.go); users whose slot moved (resharding, failover) are subscribed on their new
// owner and unsubscribed from the old one, and the hub's connections read their inboxes
// (Resync), because what was published in between reached no subscriber of theirs.
//
// Lock order: a user's lock (lockUser), then mu, then a shard bus's locks.
type Cluster struct {
	cc      *redis.ClusterClient
	opt     RedisOptions
	classic *Redis
	h       Handler

	mu     sync.Mutex
	slots  []slotOwner       // sorted by start
	shards map[string]*shard // master address → its bus
	users  map[string]*shard // user → shard it is subscribed on
	// locks serialize, per user, the bus calls that subscribe or unsubscribe it: the hub's
	// Subscribe and Unsubscribe, and a move to a new owner. Entries live while held or awaited.
	locks map[string]*userLock

	refresh chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type shard struct {
	addr   string
	client *redis.Client
	bus    *Redis
}

// NewCluster returns a bus on cc; Start it to connect.
func NewCluster(cc *redis.ClusterClient, opt RedisOptions) *Cluster {
	if opt.Prefix == "" {
		opt.Prefix = "ws:"
	}
	c := &Cluster{
		cc: cc, opt: opt, shards: make(map[string]*shard), users: make(map[string]*shard),
		locks: make(map[string]*userLock), refresh: make(chan struct{}, 1),
	}
	c.classic = NewRedis(cc, opt)
	return c
}

// Channel returns the (sharded) channel of user.
func (c *Cluster) Channel(user string) string { return keys.Prefix(c.opt.Prefix).User(user) }

// Start connects in the background and delivers to h.
func (c *Cluster) Start(h Handler) {
	c.h = h
	c.classic.Start(h)
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.watch(ctx) }()
}

// Close stops every shard bus and the topology watcher.
func (c *Cluster) Close() error {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	c.mu.Lock()
	shards := c.shards
	c.shards = map[string]*shard{}
	c.mu.Unlock()
	for _, s := range shards {
		_ = s.bus.Close()
		_ = s.client.Close()
	}
	return c.classic.Close()
}

// Ready is nil when the classic bus and every shard are subscribed and their probes come back.
func (c *Cluster) Ready() error {
	if err := c.classic.Ready(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.shards) == 0 {
		return errors.New("redis cluster topology not known yet")
	}
	for addr, s := range c.shards {
		if err := s.bus.Ready(); err != nil {
			return fmt.Errorf("shard %s: %w", addr, err)
		}
	}
	return nil
}

// Subscribe subscribes user on the shard that owns its slot and returns once confirmed.
func (c *Cluster) Subscribe(ctx context.Context, user string) error {
	unlock, err := c.lockUser(ctx, user)
	if err != nil {
		return fmt.Errorf("bus: subscribe %s: %w", user, err)
	}
	defer unlock()
	s := c.ownerOf(user)
	if s == nil {
		return ErrUnavailable
	}
	if err := s.bus.Subscribe(ctx, user); err != nil {
		return err
	}
	c.mu.Lock()
	c.users[user] = s
	c.mu.Unlock()
	return nil
}

// Unsubscribe unsubscribes user from the shard it is subscribed on.
func (c *Cluster) Unsubscribe(ctx context.Context, user string) error {
	// The user leaves the map first: a move under way sees that when it is done, and undoes
	// what it subscribed (move), even if this call gives up waiting for it.
	c.mu.Lock()
	s := c.users[user]
	delete(c.users, user)
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	unlock, err := c.lockUser(ctx, user)
	if err != nil {
		return fmt.Errorf("bus: unsubscribe %s: %w", user, err)
	}
	defer unlock()
	return s.bus.Unsubscribe(ctx, user)
}

// userLock is one user's lock: a channel of capacity 1, so that waiting for it can end with
// a context; refs counts holders and waiters.
type userLock struct {
	ch   chan struct{}
	refs int
}

// lockUser takes user's lock, waiting at most until ctx ends, and returns its unlock.
func (c *Cluster) lockUser(ctx context.Context, user string) (unlock func(), err error) {
	c.mu.Lock()
	l := c.locks[user]
	if l == nil {
		l = &userLock{ch: make(chan struct{}, 1)}
		c.locks[user] = l
	}
	l.refs++
	c.mu.Unlock()
	release := func() {
		c.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(c.locks, user)
		}
		c.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// Broadcast publishes data to every node (classic pub/sub).
func (c *Cluster) Broadcast(ctx context.Context, data []byte) error {
	return c.classic.Broadcast(ctx, data)
}

// Kick asks every node to close user's connections (classic pub/sub).
func (c *Cluster) Kick(ctx context.Context, user string) error { return c.classic.Kick(ctx, user) }

func (c *Cluster) ownerOf(user string) *shard {
	slot := Slot(c.Channel(user))
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shards[ownerAt(c.slots, slot)]
}
