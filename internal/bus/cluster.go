package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
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
// Topology: every TopologyInterval (and whenever a shard's connection fails) Cluster reads the
// slot map; users whose slot moved (resharding, failover) are subscribed on their new owner
// and unsubscribed from the old one, and the hub's connections re-read their inboxes (Resync),
// because what was published in between reached no subscriber of theirs.
type Cluster struct {
	cc      *redis.ClusterClient
	opt     RedisOptions
	classic *Redis
	h       Handler

	mu     sync.Mutex
	slots  []slotOwner       // sorted by start
	shards map[string]*shard // master address → its bus
	users  map[string]*shard // user → shard it is subscribed on

	refresh chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type slotOwner struct {
	start, end int
	addr       string
}

type shard struct {
	addr   string
	client *redis.Client
	bus    *Redis
}

// TopologyInterval is how often Cluster rereads the slot map.
const TopologyInterval = time.Second

// NewCluster returns a bus on cc; Start it to connect.
func NewCluster(cc *redis.ClusterClient, opt RedisOptions) *Cluster {
	if opt.Prefix == "" {
		opt.Prefix = "ws:"
	}
	c := &Cluster{
		cc: cc, opt: opt, shards: make(map[string]*shard), users: make(map[string]*shard),
		refresh: make(chan struct{}, 1),
	}
	c.classic = NewRedis(cc, opt)
	return c
}

// Channel returns the (sharded) channel of user.
func (c *Cluster) Channel(user string) string { return c.opt.Prefix + "user:{" + user + "}" }

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
	c.mu.Lock()
	s := c.users[user]
	delete(c.users, user)
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.bus.Unsubscribe(ctx, user)
}

// Broadcast publishes data to every node (classic pub/sub).
func (c *Cluster) Broadcast(ctx context.Context, data []byte) error {
	return c.classic.Broadcast(ctx, data)
}

// Kick asks every node to close user's connections (classic pub/sub).
func (c *Cluster) Kick(ctx context.Context, user string) error { return c.classic.Kick(ctx, user) }

// Append adds an inbound client frame to the upstream stream.
func (c *Cluster) Append(ctx context.Context, user string, data []byte) error {
	return c.classic.Append(ctx, user, data)
}

// Online reports whether any gateway node is subscribed to user (PUBSUB SHARDNUMSUB on the
// owning shard).
func (c *Cluster) Online(ctx context.Context, user string) (bool, error) {
	s := c.ownerOf(user)
	if s == nil {
		return false, fmt.Errorf("bus: presence %s: %w", user, ErrUnavailable)
	}
	ch := c.Channel(user)
	res, err := s.client.PubSubShardNumSub(ctx, ch).Result()
	if err != nil {
		return false, fmt.Errorf("bus: presence %s: %w", user, err)
	}
	return res[ch] > 0, nil
}

func (c *Cluster) ownerOf(user string) *shard {
	slot := Slot(c.Channel(user))
	c.mu.Lock()
	defer c.mu.Unlock()
	i, found := slices.BinarySearchFunc(c.slots, slot, func(o slotOwner, slot int) int {
		switch {
		case o.end < slot:
			return -1
		case o.start > slot:
			return 1
		}
		return 0
	})
	if !found {
		return nil
	}
	return c.shards[c.slots[i].addr]
}

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

// sync reads the slot map, starts buses for new masters, moves users whose slot changed owner,
// and retires buses of nodes that own no slot any more.
func (c *Cluster) sync(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	shards, err := c.cc.ClusterShards(qctx).Result()
	cancel()
	if err != nil {
		return err
	}
	var owners []slotOwner
	masters := map[string]bool{}
	for _, sh := range shards {
		addr := ""
		for _, n := range sh.Nodes {
			if n.Role == "master" && n.Health != "fail" {
				host := n.Endpoint
				if host == "" || host == "?" {
					host = n.IP
				}
				addr = net.JoinHostPort(host, strconv.FormatInt(n.Port, 10))
			}
		}
		if addr == "" || len(sh.Slots) == 0 {
			continue
		}
		masters[addr] = true
		for _, r := range sh.Slots {
			owners = append(owners, slotOwner{start: int(r.Start), end: int(r.End), addr: addr})
		}
	}
	slices.SortFunc(owners, func(a, b slotOwner) int { return a.start - b.start })

	c.mu.Lock()
	var started []*shard
	if !slices.Equal(owners, c.slots) {
		for addr := range masters {
			if c.shards[addr] == nil {
				s := c.newShard(addr, owners)
				c.shards[addr] = s
				started = append(started, s)
			}
		}
		c.slots = owners
		// The ClusterClient that runs pushes learns new owners only lazily (a MOVED reply,
		// which a dead master never sends): tell it now.
		c.cc.ReloadState(ctx)
	}
	// Users whose owner changed. Checked on every round, not only when the map changed: a
	// move fails while the new shard's connection is still being set up, and is retried., and shards that own nothing now.
	type move struct {
		user     string
		from, to *shard
	}
	var moves []move
	for user, from := range c.users {
		// No owner (slots uncovered mid-failover): wait for the next round.
		if to := c.ownerLocked(user); to != nil && to != from {
			moves = append(moves, move{user, from, to})
		}
	}
	var retired []*shard
	for addr, s := range c.shards {
		if !masters[addr] {
			retired = append(retired, s)
			delete(c.shards, addr)
		}
	}
	c.mu.Unlock()

	for _, s := range started {
		s.bus.Start(c.h)
	}
	failed := 0
	for _, m := range moves {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := m.to.bus.Subscribe(sctx, m.user)
		cancel()
		if err != nil {
			c.classic.log.Debug("moving a user to its new shard failed, retrying", "user_id", m.user, "err", err)
			failed++
			continue
		}
		c.mu.Lock()
		if c.users[m.user] == m.from {
			c.users[m.user] = m.to
		}
		c.mu.Unlock()
		if m.from != nil {
			uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_ = m.from.bus.Unsubscribe(uctx, m.user)
			cancel()
		}
	}
	for _, s := range retired {
		_ = s.bus.Close()
		_ = s.client.Close()
	}
	if len(moves)-failed > 0 || len(retired) > 0 {
		c.classic.log.Info("cluster topology changed", "users_moved", len(moves)-failed, "shards", len(masters))
		c.h.Resync()
	}
	if failed > 0 {
		c.kickSoon(ctx)
	}
	return nil
}

// kickSoon asks for another round shortly, for moves that waited on a shard still connecting.
func (c *Cluster) kickSoon(ctx context.Context) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		sleep(ctx, 100*time.Millisecond)
		select {
		case c.refresh <- struct{}{}:
		default:
		}
	}()
}

func (c *Cluster) ownerLocked(user string) *shard {
	slot := Slot(c.Channel(user))
	for _, o := range c.slots {
		if slot >= o.start && slot <= o.end {
			return c.shards[o.addr]
		}
	}
	return nil
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
	return &shard{addr: addr, client: client, bus: NewRedis(client, opt)}
}

func probeChannelFor(prefix, node, addr string, owners []slotOwner) string {
	for i := 0; i < 1<<16; i++ {
		ch := prefix + "probe:{" + node + "-" + strconv.Itoa(i) + "}"
		slot := Slot(ch)
		for _, o := range owners {
			if o.addr == addr && slot >= o.start && slot <= o.end {
				return ch
			}
		}
	}
	return prefix + "probe:{" + node + "}" // the master owns no slot: it will be retired
}
