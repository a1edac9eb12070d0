package ws

import (
	"context"
	"hash/maphash"
	"sync"
)

func (h *Hub) shardOf(user string) *shard {
	return &h.shards[maphash.String(h.seed, user)%numShards]
}

// register adds c to its user. The first connection of a user subscribes (outside the lock);
// the others wait for that subscription. A user whose last connection is still unsubscribing
// waits until that unsubscribe is confirmed, so the two reach Redis in order. The new connection
// starts catching up (filling): live messages wait for its initial read (Handler.ServeHTTP).
//
// Once c is registered and its user subscribed, the deployment-wide count (which enforces
// max-conns-per-user) and the read of c's start in the inbox (after its since, or -1) run at
// once, so that a connect waits for one Redis round trip, not two; both are done before the
// upgrade, so a refusal is still plain HTTP. Live messages that arrive meanwhile wait in
// c.pending. On an error c is unregistered again; the handler applies the start (startFill).
func (h *Hub) register(ctx context.Context, c *Conn, after int64) (Backlog, error) {
	if err := h.registerLocal(ctx, c); err != nil {
		return Backlog{}, err
	}
	allowed, errCount := true, error(nil)
	var counted sync.WaitGroup
	if h.presence != nil {
		counted.Go(func() { allowed, errCount = h.presence.Connect(ctx, c.user, c.id) })
	}
	b, errRead := h.readStart(ctx, c, after)
	counted.Wait()
	var err error
	switch {
	case errCount != nil:
		h.log.Warn("counting a connection failed", append(c.logAttrs(), "err", errCount)...)
		err = ErrUnavailable
	case !allowed:
		err = ErrTooManyConns
	case errRead != nil:
		h.log.Warn("reading the inbox failed", append(c.logAttrs(), "err", errRead)...)
		err = ErrUnavailable
	default:
		return b, nil
	}
	h.finish(ctx, c) // unregisters, uncounts, and unsubscribes a last connection
	return Backlog{}, err
}

// readStart reads where c starts: the kept messages after after (its since; -1: after the
// user's acknowledged position).
func (h *Hub) readStart(ctx context.Context, c *Conn, after int64) (Backlog, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.SubscribeTimeout)
	defer cancel()
	// Without since, a connection starts after the user's acknowledged position: what this
	// node's other connections of the user sent is acknowledged first, so that a client that
	// reconnects while its old connection is still open here (stuck in a write, not yet
	// noticed dead) starts after what the old one wrote, not at the last periodic flush.
	if after < 0 {
		h.acks.flushUser(ctx, c.user)
	}
	return h.inbox.Read(ctx, c.user, after)
}

// uncount takes c out of the deployment's count (release, a refused registration).
func (h *Hub) uncount(c *Conn) {
	if h.presence == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
	defer cancel()
	if err := h.presence.Disconnect(ctx, c.user, c.id); err != nil {
		h.log.Warn("uncounting a connection failed", append(c.logAttrs(), "err", err)...)
	}
}

// registerLocal adds c to this node's registry (register).
func (h *Hub) registerLocal(ctx context.Context, c *Conn) error {
	sh := h.shardOf(c.user)
	for {
		sh.mu.Lock()
		if h.draining.Load() {
			sh.mu.Unlock()
			return ErrDraining
		}
		u := sh.users[c.user]
		if u != nil && u.leaving != nil {
			leaving := u.leaving
			sh.mu.Unlock()
			select {
			case <-leaving:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if u != nil && len(u.conns) >= h.cfg.MaxConnsPerUser {
			sh.mu.Unlock()
			return ErrTooManyConns
		}
		first := u == nil
		if first {
			u = &userEntry{ready: make(chan struct{})}
			sh.users[c.user] = u
		}
		u.conns = append(u.conns, c)
		c.filling = true // live messages wait in c.pending until the connection has read its start
		h.conns.Add(1)
		sh.mu.Unlock()

		if first {
			sctx, cancel := context.WithTimeout(ctx, h.cfg.SubscribeTimeout)
			err := h.bus.Subscribe(sctx, c.user)
			cancel()
			if err != nil {
				h.failSubscribe(c.user, u, err)
			} else {
				close(u.ready)
			}
		}
		select {
		case <-u.ready:
		case <-ctx.Done():
			h.finish(ctx, c)
			return ctx.Err()
		}
		if u.subErr != nil {
			h.conns.Done()
			return ErrUnavailable
		}
		return nil
	}
}

// failSubscribe refuses every connection waiting for a subscription that failed (503;
// nothing was delivered to them). The subscribe may have reached Redis after all, so it is
// undone, and the entry stays, leaving, until that UNSUBSCRIBE is confirmed: a reconnect in
// the meantime must not have its SUBSCRIBE ordered before it (register waits for leaving).
func (h *Hub) failSubscribe(user string, u *userEntry, err error) {
	sh := h.shardOf(user)
	sh.mu.Lock()
	u.subErr = err
	u.leaving = make(chan struct{})
	sh.mu.Unlock()
	close(u.ready)
	h.log.Warn("subscribe failed", "user_id", user, "err", err)
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
	defer cancel()
	_ = h.bus.Unsubscribe(ctx, user)
	sh.mu.Lock()
	if sh.users[user] == u {
		delete(sh.users, user)
	}
	sh.mu.Unlock()
	close(u.leaving)
}

// finish is the handler's last step for c: release (unless c's writer did it already, before
// its close frame) and mark c done for Shutdown.
func (h *Hub) finish(ctx context.Context, c *Conn) {
	defer h.conns.Done()
	c.release(ctx)
}

// release removes c from the hub and records how far it got (acks.go); the last connection of
// a user unsubscribes. Nothing else is kept: what c did not send is still in the inbox, not
// acknowledged. Run once per c (Conn.release).
func (h *Hub) release(ctx context.Context, c *Conn) {
	sh := h.shardOf(c.user)
	sh.mu.Lock()
	u := sh.users[c.user]
	if u == nil || u.subErr != nil {
		sh.mu.Unlock()
		return // failSubscribe handled it
	}
	for i, x := range u.conns {
		if x == c {
			u.conns = append(u.conns[:i], u.conns[i+1:]...)
			break
		}
	}
	last := len(u.conns) == 0
	if last {
		u.leaving = make(chan struct{})
	}
	sh.mu.Unlock()

	// Detach from the caller's context: a client that went away must not cancel the ack.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.SubscribeTimeout+h.cfg.WriteTimeout)
	defer cancel()
	// The client may reconnect elsewhere at once: its position must be in the inbox first.
	h.acks.flushUser(ctx, c.user)
	h.uncount(c)
	if !last {
		return
	}
	if err := h.bus.Unsubscribe(ctx, c.user); err != nil {
		h.log.Warn("unsubscribe failed", "user_id", c.user, "err", err)
	}
	sh.mu.Lock()
	delete(sh.users, c.user)
	sh.mu.Unlock()
	close(u.leaving)
}

// Deliver hands message seq of user (0: unnumbered) to every local connection of that user.
// It never blocks: the bus calls it from its receive loop.
func (h *Hub) Deliver(user string, seq int64, data []byte) {
	m := newMessage(data, kindUser, h.now())
	m.Seq = seq
	sh := h.shardOf(user)
	sh.mu.Lock()
	u := sh.users[user]
	if u == nil {
		sh.mu.Unlock()
		// Only possible after a subscribe that failed locally but reached Redis; the
		// message is in the inbox.
		h.obs.Dropped("no_receiver", 1)
		return
	}
	u.maxSeen = max(u.maxSeen, seq)
	if len(u.conns) > 1 {
		m.prepare()
	}
	for _, c := range u.conns {
		h.offerLocked(c, m)
	}
	sh.mu.Unlock()
}

// Broadcast hands data to every local connection. Nothing is stored for broadcasts.
func (h *Hub) Broadcast(data []byte) {
	m := newMessage(data, kindBroadcast, h.now())
	m.prepare()
	h.forEachConn(func(c *Conn) { c.enqueue(m) })
}

// forEachConn calls f for every connection on this node, with its shard's lock held.
func (h *Hub) forEachConn(f func(c *Conn)) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, u := range sh.users {
			for _, c := range u.conns {
				f(c)
			}
		}
		sh.mu.Unlock()
	}
}

// Kick closes every local connection of user with 4001.
func (h *Hub) Kick(user string) {
	h.closeUser(user, CloseKicked, "disconnected by the API", ReasonKicked)
}

func (h *Hub) closeUser(user string, code int, text string, reason CloseReason) {
	sh := h.shardOf(user)
	sh.mu.Lock()
	if u := sh.users[user]; u != nil {
		for _, c := range u.conns {
			c.closeWith(code, text, reason)
		}
	}
	sh.mu.Unlock()
}

// UserConns returns how many connections of user this node holds.
func (h *Hub) UserConns(user string) int {
	sh := h.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if u := sh.users[user]; u != nil {
		return len(u.conns)
	}
	return 0
}

// Online reports whether this node holds a connection of user.
func (h *Hub) Online(user string) bool {
	sh := h.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.users[user]
	return u != nil && len(u.conns) > 0
}

// Users returns the users with a connection on this node.
func (h *Hub) Users() []string {
	var out []string
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for user, u := range sh.users {
			if len(u.conns) > 0 && u.leaving == nil {
				out = append(out, user)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// Conns returns the number of connections on this node.
func (h *Hub) Conns() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, u := range sh.users {
			n += len(u.conns)
		}
		sh.mu.Unlock()
	}
	return n
}

// Resync is called by the bus when messages may have been published while this node did not
// receive them (its pub/sub connection came back, users moved to another Cluster shard): every
// connection reads its user's inbox after its position and gets what it missed (fill.go). It
// never blocks; the reads run on the hub's fillers.
func (h *Hub) Resync() {
	h.forEachConn(h.fillLocked)
}
