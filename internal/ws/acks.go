package ws

import (
	"context"
	"sync"
	"time"
)

// acker records how far each user got and writes it to the inbox in batches: at most one
// write per user per ackInterval, however many messages and acks there were, and one at the
// end of each connection (Hub.release), so a reconnect finds it. Positions come from the
// clients' acks (wsgateway.v1) and from what the writer sent to raw connections, which cannot
// ack: for them a message written to the socket counts as received.
type acker struct {
	h       *Hub
	mu      sync.Mutex
	pending map[string]int64 // user → highest position not yet written
	// inflight is the batch a flush is writing (nil when none), so that flushUser knows to
	// wait for it.
	inflight map[string]int64
	timer    *time.Timer
	stopped  bool
	// flushing serializes flushes, so a position is never written after a newer one.
	flushing sync.Mutex
}

// ackInterval is how often positions are written. A raw client that reconnects within it,
// while its old connection is still open elsewhere, may get the last messages again.
const ackInterval = time.Second

// ackCallers bounds the concurrent Ack calls of one flush; they share the inbox's pipelines.
const ackCallers = 16

func (a *acker) start(h *Hub) {
	a.h = h
	a.pending = make(map[string]int64)
	// Under mu: the callback reads a.timer under mu, which orders it after this write.
	a.mu.Lock()
	defer a.mu.Unlock()
	a.timer = time.AfterFunc(ackInterval, func() {
		a.flush(context.Background())
		a.mu.Lock()
		if !a.stopped {
			a.timer.Reset(ackInterval)
		}
		a.mu.Unlock()
	})
}

// note records that user got everything up to seq.
func (a *acker) note(user string, seq int64) {
	if seq <= 0 {
		return
	}
	a.mu.Lock()
	if seq > a.pending[user] {
		a.pending[user] = seq
	}
	a.mu.Unlock()
}

// flushUser writes user's position now, or waits for the flush that is writing it. A user with
// nothing recorded (most connects) costs a map lookup.
func (a *acker) flushUser(ctx context.Context, user string) {
	a.mu.Lock()
	_, pending := a.pending[user]
	_, inflight := a.inflight[user]
	a.mu.Unlock()
	if !pending && !inflight {
		return
	}
	a.flushing.Lock()
	defer a.flushing.Unlock()
	a.mu.Lock()
	seq, ok := a.pending[user]
	delete(a.pending, user)
	a.mu.Unlock()
	if ok {
		a.write(ctx, user, seq)
	}
}

// flush writes every recorded position.
func (a *acker) flush(ctx context.Context) {
	a.flushing.Lock()
	defer a.flushing.Unlock()
	a.mu.Lock()
	batch := a.pending
	a.pending = make(map[string]int64)
	a.inflight = batch
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.inflight = nil
		a.mu.Unlock()
	}()
	if len(batch) == 0 {
		return
	}
	next := make(chan string, len(batch))
	for user := range batch {
		next <- user
	}
	close(next)
	var wg sync.WaitGroup
	for range min(ackCallers, len(batch)) {
		wg.Go(func() {
			for user := range next {
				a.write(ctx, user, batch[user])
			}
		})
	}
	wg.Wait()
}

func (a *acker) write(ctx context.Context, user string, seq int64) {
	if a.h.inbox == nil {
		return
	}
	if err := a.h.inbox.Ack(ctx, user, seq); err != nil {
		// Kept for the next flush (Redis away, restarting): a raw client would otherwise get
		// these messages again on its next connect.
		a.note(user, seq)
		a.h.log.Warn("recording an acknowledged position failed; retried at the next flush",
			"user_id", user, "seq", seq, "err", err)
	}
}

// stop ends the periodic flushes and writes what is left (Shutdown).
func (a *acker) stop(ctx context.Context) {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	a.timer.Stop()
	a.flush(ctx)
}
