package bus

import "context"

// Topology is a slot map read by ReadTopology, for Apply.
type Topology struct {
	owners  []slotOwner
	masters map[string]bool
}

// StartWithoutWatcher starts c like Start but without its topology watcher: the test runs the
// rounds itself with ReadTopology and Apply, and so chooses when a move happens.
func (c *Cluster) StartWithoutWatcher(h Handler) {
	c.h = h
	c.classic.Start(h)
}

// ReadTopology reads the slot map as a watcher round does.
func (c *Cluster) ReadTopology(ctx context.Context) (Topology, error) {
	owners, masters, err := c.readTopology(ctx)
	return Topology{owners, masters}, err
}

// Apply applies a slot map as a watcher round does: starts shards, moves users.
func (c *Cluster) Apply(ctx context.Context, t Topology) { c.apply(ctx, t.owners, t.masters) }

// Subscribing reports whether a Subscribe of user waits for Redis on the shard of addr.
func (c *Cluster) Subscribing(addr, user string) bool {
	return c.inShard(addr, func(b *Redis) bool { return len(b.subWait[b.Channel(user)]) > 0 })
}

// Wants reports whether the shard of addr wants user's channel (subscribes it on every
// connection it builds).
func (c *Cluster) Wants(addr, user string) bool {
	return c.inShard(addr, func(b *Redis) bool { _, ok := b.want[b.Channel(user)]; return ok })
}

// inShard reports f of the bus of addr's shard, under that bus's lock; false without one.
func (c *Cluster) inShard(addr string, f func(*Redis) bool) bool {
	b := c.shardBus(addr)
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return f(b)
}

// ProbeChannel returns the probe channel of the shard of addr.
func (c *Cluster) ProbeChannel(addr string) string {
	if b := c.shardBus(addr); b != nil {
		return b.probe.Load().cur
	}
	return ""
}

func (c *Cluster) shardBus(addr string) *Redis {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.shards[addr]; s != nil {
		return s.bus
	}
	return nil
}
