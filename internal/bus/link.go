package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/ctxsleep"
)

// generation is one pub/sub connection and its receive loop.
type generation struct {
	ps *redis.PubSub
	// wmu keeps a command and its marker PING together on the connection (see send).
	wmu sync.Mutex
	seq int64 // markers sent, under wmu
	// pending are the commands written and not yet answered, oldest first; under Redis.mu.
	pending []*pendingCmd

	// mu guards live and isLost: a generation cannot go live once its link was lost.
	mu     sync.Mutex
	live   bool
	isLost bool
	// lost is closed when the connection failed. go-redis then redials and re-subscribes the
	// PubSub by itself (pubsub.go, reconnect): the receive loop keeps dispatching what arrives
	// there until closeGen closes it.
	lost chan struct{}
	done chan struct{} // closed when the receive loop ended
}

func newGeneration(ps *redis.PubSub) *generation {
	return &generation{ps: ps, lost: make(chan struct{}), done: make(chan struct{})}
}

func (g *generation) goLive() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.isLost {
		return false
	}
	g.live = true
	return true
}

func (g *generation) failed() bool {
	select {
	case <-g.lost:
		return true
	default:
		return false
	}
}

// connLost marks g's connection as failed, once. What is published while the link is down
// reaches the hub's connections through their inboxes when it is back (Resync).
func (r *Redis) connLost(g *generation, err error) {
	g.mu.Lock()
	if g.isLost {
		g.mu.Unlock()
		return
	}
	g.isLost = true
	g.mu.Unlock()
	r.log.Debug("redis pub/sub connection failed", "err", err)
	close(g.lost)
}

// run builds a generation, supervises it and rebuilds it when it fails, until ctx ends.
func (r *Redis) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		g, err := r.setup(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("redis pub/sub not available, retrying", "err", err, "retry_in", backoff.String())
			ctxsleep.Sleep(ctx, backoff)
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if r.opt.OnReady != nil {
			r.opt.OnReady(ctx)
		}
		r.ready.Store(true)
		if !first {
			r.log.Info("redis pub/sub re-established; connections check their inboxes")
			r.h.Resync()
		}
		first = false
		// Until the link failed, or the probe did (wedged, or Redis stalled): either way
		// the next generation's Resync gets the hub's connections what this one missed.
		r.supervise(ctx, g)
		r.ready.Store(false)
		r.retire(g)
		if ctx.Err() == nil {
			r.obs.PubSubReconnect()
		}
	}
}

// setup opens a new pub/sub connection, subscribes the fixed channels and every wanted user
// (one command per slot on a shard, in batches), and waits until Redis answered all of them.
// A command that got an error reply fails only its channels (completeLocked); the generation
// goes live anyway.
func (r *Redis) setup(ctx context.Context) (*generation, error) {
	ps := r.rdb.Subscribe(ctx)
	if r.sharded {
		ps = r.rdb.SSubscribe(ctx)
	}
	g := newGeneration(ps)
	r.mu.Lock()
	channels := make([]string, 0, len(r.want)+len(r.fixed))
	for ch := range r.fixed {
		channels = append(channels, ch)
	}
	r.setupWant = make(map[string]struct{}, len(r.want))
	for ch := range r.want {
		channels = append(channels, ch)
		r.setupWant[ch] = struct{}{}
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.gen != g { // failed: what it subscribed went with its connection
			for ch := range r.setupWant {
				if !r.wantedLocked(ch) {
					wakeLocked(r.unsubWait, ch, nil)
				}
			}
		}
		r.setupWant = nil
	}()

	sctx, cancel := context.WithTimeout(ctx, r.opt.SetupTimeout)
	defer cancel()
	var last *pendingCmd
	for i, chunk := range r.chunks(channels) {
		cmd, err := r.send(sctx, g, false, chunk)
		if i == 0 {
			if err != nil { // never connected (the first command dials): nothing to retire
				_ = g.ps.Close()
				return nil, fmt.Errorf("bus: subscribe: %w", err)
			}
			// Replies wait in the socket until the receive loop reads them.
			go r.receive(g)
		}
		last = cmd
	}
	select {
	case <-last.done:
	case <-g.lost:
	case <-sctx.Done():
		r.closeGen(g)
		return nil, fmt.Errorf("bus: waiting for %d subscribe confirmations: %w", len(channels), sctx.Err())
	}
	if !g.goLive() {
		r.closeGen(g)
		return nil, errors.New("bus: pub/sub connection lost while subscribing")
	}
	r.lastProbe.Store(time.Now().UnixNano())
	r.mu.Lock()
	r.gen = g
	// Anything subscribed while the previous generation failed goes out again on this one; a
	// duplicate SUBSCRIBE is harmless and confirms again.
	for ch := range r.subWait {
		r.dirty[ch] = struct{}{}
	}
	// And the other way round: a user whose last connection ended since the snapshot found no
	// generation, so its Unsubscribe returned at once, yet this generation subscribed it. Left
	// so, Redis counts this node as the user's receiver and every push to the user is neither
	// delivered (the hub holds no entry) nor stored: unsubscribe it.
	for _, ch := range channels {
		if !r.wantedLocked(ch) {
			r.dirty[ch] = struct{}{}
		}
	}
	r.mu.Unlock()
	r.wake()
	return g, nil
}

// supervise publishes a probe every ProbeInterval and returns when ctx ends, the generation's
// connection failed, or the probe has not come back within ProbeTimeout: a wedged link that
// Redis still counts as a subscriber, which go-redis's own health check does not catch.
func (r *Redis) supervise(ctx context.Context, g *generation) {
	t := time.NewTicker(r.opt.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.lost:
			r.log.Warn("redis pub/sub connection lost")
			return
		case <-t.C:
			last := time.Unix(0, r.lastProbe.Load())
			if time.Since(last) > r.opt.ProbeTimeout {
				r.obs.ProbeFailed()
				r.log.Warn("redis pub/sub probe not received; rebuilding the connection",
					"silent_for", time.Since(last).Round(time.Millisecond).String())
				return
			}
			pctx, cancel := context.WithTimeout(ctx, r.opt.ProbeInterval)
			seq := strconv.FormatInt(r.probeSeq.Add(1), 10)
			publish := r.rdb.Publish
			if r.sharded {
				publish = r.rdb.SPublish
			}
			if err := publish(pctx, r.probe.Load().cur, seq).Err(); err != nil {
				r.log.Debug("probe publish failed", "err", err)
			}
			cancel()
		}
	}
}

// retire closes a generation and wakes every unsubscribe waiter: with the connection gone,
// nothing more arrives on any channel, which is what an unsubscribe promises.
func (r *Redis) retire(g *generation) {
	r.closeGen(g)
	r.mu.Lock()
	if r.gen == g {
		r.gen = nil
	}
	for ch := range r.unsubWait {
		wakeLocked(r.unsubWait, ch, nil)
	}
	r.mu.Unlock()
}

// closeGen closes g's PubSub and waits for its receive loop. What Redis publishes meanwhile and
// this connection no longer takes reaches the hub's connections through their inboxes: the
// next generation's Resync reads it.
func (r *Redis) closeGen(g *generation) {
	_ = g.ps.Close()
	<-g.done
}

// receive is the generation's receive loop. It never blocks on anything but Redis: every
// message is handed to the Handler, whose methods return at once.
//
// go-redis's Receive returns an error reply to a command (CROSSSLOT, MOVED, NOPERM, …) as an
// error that implements redis.Error, and keeps the connection; that is a failed command, not a
// lost link (reply). Any other error is the connection failing: then lost is closed (run
// rebuilds the generation, whose Resync catches the hub's connections up) but the loop goes on
// receiving, because go-redis has redialled and re-subscribed the same PubSub: what Redis
// delivers there is dispatched until closeGen closes it.
func (r *Redis) receive(g *generation) {
	defer close(g.done)
	ctx := context.Background()
	for {
		msg, err := g.ps.Receive(ctx)
		if err != nil {
			if errors.Is(err, redis.ErrClosed) {
				return // closeGen closed it
			}
			if r.isReply(err) && !g.failed() {
				r.reply(g, "", err)
				continue
			}
			r.connLost(g, err)
			// Each Receive redials while Redis is away; closeGen ends this soon anyway.
			time.Sleep(20 * time.Millisecond)
			continue
		}
		switch m := msg.(type) {
		case *redis.Message:
			r.dispatch(m)
		case *redis.Pong:
			if !g.failed() {
				r.reply(g, m.Payload, nil)
			}
		case *redis.Subscription:
			r.confirmed(g, m)
		}
	}
}

// confirmed handles a (un)subscribe confirmation. A sunsubscribe that nobody asked for — Redis drops the shard
// channels of a slot that moved to another master — of a channel still wanted means the slot's
// owner changed: the Cluster is told, so that it moves the user now.
func (r *Redis) confirmed(g *generation, m *redis.Subscription) {
	unsub := m.Kind == "unsubscribe" || m.Kind == "sunsubscribe"
	moved := false
	r.mu.Lock()
	if unsub {
		wakeLocked(r.unsubWait, m.Channel, nil)
		moved = r.sharded && m.Channel != "" && r.wantedLocked(m.Channel) && !g.failed()
	} else {
		wakeLocked(r.subWait, m.Channel, nil)
	}
	r.mu.Unlock()
	if moved {
		r.movedAway()
	}
}

// movedAway tells the Cluster, if any, that a slot moved.
func (r *Redis) movedAway() {
	if r.onMoved != nil {
		r.onMoved()
	}
}

// isReply reports whether err is an error reply from Redis that leaves the connection as it
// is. go-redis itself drops the connection on READONLY and on a MOVED that names the address it
// is connected to (error.go, isBadConn), and redials: that is a lost link after all.
func (r *Redis) isReply(err error) bool {
	var reply redis.Error
	if !errors.As(err, &reply) || redis.IsReadOnlyError(err) {
		return false
	}
	if addr, ok := redis.IsMovedError(err); ok && r.addr != "" && strings.HasSuffix(addr, r.addr) {
		return false
	}
	return true
}
