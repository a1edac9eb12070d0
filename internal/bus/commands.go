package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// pendingCmd is one (S)(UN)SUBSCRIBE written on a generation's connection. Redis answers
// commands in order, and every command is followed by a PING carrying its marker, so the
// replies between two markers belong to one command: an error reply before the marker's pong
// is that command's (Redis sends one error reply instead of the per-channel confirmations).
// Counting confirmations would not do: Redis also sends sunsubscribe by itself when a slot
// moves away, in the middle of anything.
type pendingCmd struct {
	unsub    bool
	channels []string
	marker   string
	err      error         // the error reply, if any; under Redis.mu
	done     chan struct{} // closed once the marker came back
}

// wake pokes the batcher.
func (r *Redis) wake() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// batcher sends the commands that bring the connection in line with want: each round takes
// every dirty channel and sends one (S)UNSUBSCRIBE and one (S)SUBSCRIBE per batch (per slot on
// a shard), so a connect storm costs a few writes instead of one per user. Deciding from want
// at send time keeps the last call for a channel the one that counts, whatever order the calls
// and the rounds came in. It also sends again, after retryDelay, what an error reply failed.
func (r *Redis) batcher(ctx context.Context) {
	retry := time.NewTimer(retryDelay)
	retry.Stop()
	armed := false
	for {
		select {
		case <-ctx.Done():
			retry.Stop()
			return
		case <-r.poke:
		case <-retry.C:
			armed = false
			r.mu.Lock()
			for ch := range r.retry {
				r.dirty[ch] = struct{}{}
			}
			clear(r.retry)
			r.mu.Unlock()
		}
		r.flush(ctx)
		r.mu.Lock()
		again := len(r.retry) > 0
		r.mu.Unlock()
		if again && !armed {
			retry.Reset(retryDelay)
			armed = true
		}
	}
}

// flush sends the commands for the dirty channels on the live generation. Without one there is
// nothing to do: the next generation subscribes everything wanted, and unsubscribes what its
// snapshot had and is no longer wanted.
func (r *Redis) flush(ctx context.Context) {
	r.mu.Lock()
	g := r.gen
	if g == nil || len(r.dirty) == 0 {
		clear(r.dirty)
		r.mu.Unlock()
		return
	}
	var subs, unsubs []string
	for ch := range r.dirty {
		if r.wantedLocked(ch) {
			subs = append(subs, ch)
			// Unsubscribed and subscribed again before this round: the channel stays, and a
			// waiting Unsubscribe was overtaken by the Subscribe that came after it.
			wakeLocked(r.unsubWait, ch, nil)
		} else {
			unsubs = append(unsubs, ch)
		}
	}
	clear(r.dirty)
	r.mu.Unlock()
	for _, chunk := range r.chunks(unsubs) {
		if _, err := r.send(ctx, g, true, chunk); err != nil {
			return
		}
	}
	for _, chunk := range r.chunks(subs) {
		if _, err := r.send(ctx, g, false, chunk); err != nil {
			return
		}
	}
}

// chunks splits channels into commands: at most batchSize each and, for sharded pub/sub, all
// of one hash slot (Redis answers CROSSSLOT to an SSUBSCRIBE that spans slots).
func (r *Redis) chunks(channels []string) [][]string {
	var out [][]string
	split := func(chs []string) {
		for len(chs) > batchSize {
			out = append(out, chs[:batchSize:batchSize])
			chs = chs[batchSize:]
		}
		if len(chs) > 0 {
			out = append(out, chs)
		}
	}
	if !r.sharded {
		split(channels)
		return out
	}
	bySlot := map[int][]string{}
	for _, ch := range channels {
		s := Slot(ch)
		bySlot[s] = append(bySlot[s], ch)
	}
	for _, chs := range bySlot {
		split(chs)
	}
	return out
}

// send writes one command for channels and its marker PING. A write that fails means the
// connection failed (go-redis redials it in the background): the generation is lost.
func (r *Redis) send(ctx context.Context, g *generation, unsub bool, channels []string) (*pendingCmd, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.seq++
	c := &pendingCmd{unsub: unsub, channels: channels, marker: "wsgateway:" + strconv.FormatInt(g.seq, 10), done: make(chan struct{})}
	// Queued before the write: the reply may be read before the write call returns.
	r.mu.Lock()
	g.pending = append(g.pending, c)
	r.mu.Unlock()
	var err error
	switch {
	case unsub && r.sharded:
		err = g.ps.SUnsubscribe(ctx, channels...)
	case unsub:
		err = g.ps.Unsubscribe(ctx, channels...)
	case r.sharded:
		err = g.ps.SSubscribe(ctx, channels...)
	default:
		err = g.ps.Subscribe(ctx, channels...)
	}
	if err == nil {
		err = g.ps.Ping(ctx, c.marker)
	}
	if err != nil {
		r.connLost(g, err)
		return c, err
	}
	return c, nil
}

// reply takes Redis's answer to the oldest command not yet answered: an error reply (err), or
// the pong of its marker (payload), which completes it. A reply that does not fit — no command
// waiting, a second error for one command, another marker — means the replies are out of step
// with the commands, and only a new connection sets that right.
func (r *Redis) reply(g *generation, payload string, err error) {
	r.mu.Lock()
	if len(g.pending) == 0 || err != nil && g.pending[0].err != nil || err == nil && g.pending[0].marker != payload {
		r.mu.Unlock()
		r.connLost(g, fmt.Errorf("reply (pong %q, error %v) out of step with the commands", payload, err))
		return
	}
	if err != nil {
		g.pending[0].err = err
		r.mu.Unlock()
		return
	}
	c := g.pending[0]
	g.pending[0] = nil
	g.pending = g.pending[1:]
	moved := r.completeLocked(c)
	r.mu.Unlock()
	close(c.done)
	if c.err == nil {
		return
	}
	level := slog.LevelWarn
	if moved {
		level = slog.LevelDebug // a slot moved: the Cluster moves the users
		r.movedAway()
	}
	r.log.Log(context.Background(), level, "redis pub/sub command failed",
		"unsubscribe", c.unsub, "channels", len(c.channels), "err", c.err)
	r.wake() // the batcher arms its retry timer
}

// completeLocked settles the channels of an answered command and reports whether its error
// says that their slot is served by another master.
//
// A failed subscribe hands the error to the channel's waiting Subscribe, which then forgets the
// channel; a channel nobody waits for (a resubscribe after a reconnect) is sent again after
// retryDelay while still wanted. A failed unsubscribe with MOVED is done: a master that does not
// serve a slot holds no subscription to its channels, Redis dropped them when the slot left.
// Other failed unsubscribes are sent again while the channel is still not wanted.
func (r *Redis) completeLocked(c *pendingCmd) (moved bool) {
	if c.err == nil {
		return false
	}
	_, isMoved := redis.IsMovedError(c.err)
	_, isAsk := redis.IsAskError(c.err)
	moved = isMoved || isAsk
	err := fmt.Errorf("redis answered %w", c.err)
	for _, ch := range c.channels {
		switch {
		case c.unsub && moved:
			wakeLocked(r.unsubWait, ch, nil)
		case c.unsub:
			wakeLocked(r.unsubWait, ch, err)
			if !r.wantedLocked(ch) {
				r.retry[ch] = struct{}{}
			}
		case len(r.subWait[ch]) > 0:
			wakeLocked(r.subWait, ch, err)
		case r.wantedLocked(ch):
			r.retry[ch] = struct{}{}
		}
	}
	return moved && !c.unsub
}
