package scripts

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// ErrClosed is returned for a call made once Close has begun.
var ErrClosed = errors.New("scripts: closed")

const (
	// Workers is how many batches may be in flight at once. Each worker takes one call,
	// then whatever else is already waiting: concurrent calls share a round trip, and a
	// lone call goes out at once.
	Workers = 3
	// MaxBatch bounds one batch.
	MaxBatch = 128
)

// Runner hands the calls of concurrent callers to exec in batches. It never waits for a batch
// to fill: a call made while nothing is in flight runs at once on its caller's goroutine; one
// made while others are in flight goes to a worker, which takes it and whatever else is
// waiting. The workers start with the first such call and stop at Close. exec answers every
// call of its batch itself (a call carries its own reply channel).
type Runner[T any] struct {
	exec      func([]T)
	calls     chan T // unbuffered: a call is either taken by a worker or not at all
	stop      chan struct{}
	startOnce sync.Once
	stopOnce  sync.Once
	wg        sync.WaitGroup
	// active counts the batches being run (by a worker or by an idle caller itself).
	active atomic.Int32
	// mu is held shared by callers that run their call themselves; Close takes it to wait
	// for them and set closed.
	mu     sync.RWMutex
	closed bool
}

// NewRunner returns a Runner that runs batches with exec.
func NewRunner[T any](exec func([]T)) *Runner[T] {
	return &Runner[T]{exec: exec, calls: make(chan T), stop: make(chan struct{})}
}

// Do hands call to a batch. nil means exec got it (and answers it); an error (ctx's, or
// ErrClosed) means it never will.
func (r *Runner[T]) Do(ctx context.Context, call T) error {
	if r.active.Load() == 0 {
		// Nothing in flight, so nothing to share a round trip with: run it here. The hand-off
		// to a worker and back costs two goroutine wake-ups (≈ 15 µs per call on the
		// benchmark machine), which a lone call would pay for nothing.
		r.mu.RLock()
		defer r.mu.RUnlock()
		if r.closed {
			return ErrClosed
		}
		r.active.Add(1)
		defer r.active.Add(-1)
		r.exec([]T{call})
		return nil
	}
	r.startOnce.Do(r.start)
	select {
	case r.calls <- call:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.stop:
		return ErrClosed
	}
}

func (r *Runner[T]) start() {
	r.wg.Add(Workers)
	for range Workers {
		go r.work()
	}
}

// Close stops the workers after the batches in flight; calls not yet taken get ErrClosed.
func (r *Runner[T]) Close() {
	r.stopOnce.Do(func() {
		r.startOnce.Do(func() {}) // no workers start after this
		close(r.stop)             // first: the callers waiting for a worker get ErrClosed now
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
	})
	r.wg.Wait()
}

func (r *Runner[T]) work() {
	defer r.wg.Done()
	batch := make([]T, 0, MaxBatch)
	for {
		select {
		case c := <-r.calls:
			batch = append(batch, c)
			r.active.Add(1)
		case <-r.stop:
			return
		}
	more: // take what is already waiting, without waiting for more
		for len(batch) < MaxBatch {
			select {
			case c := <-r.calls:
				batch = append(batch, c)
			default:
				break more
			}
		}
		r.exec(batch)
		r.active.Add(-1)
		clear(batch)
		batch = batch[:0]
	}
}
