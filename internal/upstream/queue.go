package upstream

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reasons under which dropped frames are counted (Observer.Dropped).
const (
	// ReasonOverflow: the queue to Redis was full when the frame arrived.
	ReasonOverflow = "upstream_overflow"
	// ReasonError: Redis refused or did not answer the XADD, or the queue was closed.
	ReasonError = "upstream_error"
)

// Defaults of Options.
const (
	DefaultMaxBytes   = 32 << 20
	DefaultQueueLen   = 4096
	DefaultQueueBytes = 16 << 20
	DefaultBatch      = 256
	// DefaultFlushTimeout bounds the last sends at Close.
	DefaultFlushTimeout = 3 * time.Second
)

// Observer is told about dropped frames, for metrics. It must be cheap and non-blocking.
type Observer interface {
	Dropped(reason string, n int)
}

// Options configure a Queue.
type Options struct {
	// Stream is the stream's key: the gateway's key prefix + "upstream". Required.
	Stream string
	// NodeID goes into every entry's node field.
	NodeID string
	// MaxBytes is this node's byte budget in the stream (see budget); default 32 MiB.
	MaxBytes int64
	// QueueLen and QueueBytes bound the frames waiting for Redis, in frames and in bytes of
	// data (defaults 4096 and 16 MiB). Beyond either, a frame is dropped as overflow.
	QueueLen   int
	QueueBytes int64
	// Batch is the most XADDs in one pipeline (default 256). A batch also stops at an
	// eighth of MaxBytes, so that a batch alone never overshoots the budget by much.
	Batch int
	// FlushTimeout bounds sending what is still queued at Close (default 3s).
	FlushTimeout time.Duration
	Observer     Observer
	Logger       *slog.Logger
}

// Queue appends client frames to the upstream stream without blocking the caller.
//
// Ownership: Append may be called from any goroutine; everything else, the budget and the
// batch included, belongs to the one goroutine started by New and stopped by Close. One
// goroutine is enough: a pipeline of a few hundred XADDs costs one round trip, and a single
// sender keeps the budget's ids in the order Redis gave them.
type Queue struct {
	rdb     redis.Cmdable
	opt     Options
	obs     Observer
	log     *slog.Logger
	ch      chan entry
	pending atomic.Int64 // bytes of data in ch and in the batch being sent
	closed  atomic.Bool

	// ctx is cancelled FlushTimeout after Close began: it ends go-redis's retries of a send
	// to a Redis that does not answer (a read already under way still waits for the
	// client's read timeout).
	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once

	// Owned by the run goroutine.
	budget   *budget
	failing  bool // the last send failed; logged once per streak
	lost     int  // frames dropped during the current streak
	maxBatch int64
}

type entry struct {
	user string
	data []byte
}

// New starts a Queue that appends to opt.Stream through rdb.
func New(rdb redis.Cmdable, opt Options) *Queue {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.QueueLen <= 0 {
		opt.QueueLen = DefaultQueueLen
	}
	if opt.QueueBytes <= 0 {
		opt.QueueBytes = DefaultQueueBytes
	}
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	if opt.FlushTimeout <= 0 {
		opt.FlushTimeout = DefaultFlushTimeout
	}
	q := &Queue{
		rdb: rdb, opt: opt, obs: opt.Observer, log: opt.Logger,
		ch:       make(chan entry, opt.QueueLen),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		budget:   newBudget(opt.MaxBytes),
		maxBatch: max(1, opt.MaxBytes/8),
	}
	if q.obs == nil {
		q.obs = nopObserver{}
	}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	go q.run()
	return q
}

// Append queues data, sent by user, for the stream. It never blocks and never fails: a
// frame that does not fit the queue, or comes after Close, is dropped and counted through
// the Observer — that is the overflow policy, so the caller has nothing to handle and the
// nil error only says so. The context is not used: the send happens later, on the Queue's
// own. The Queue keeps data until it is sent: the caller must not modify it afterwards.
func (q *Queue) Append(_ context.Context, user string, data []byte) error {
	if q.closed.Load() {
		q.obs.Dropped(ReasonError, 1)
		return nil
	}
	n := int64(len(data))
	if q.pending.Add(n) > q.opt.QueueBytes {
		q.pending.Add(-n)
		q.obs.Dropped(ReasonOverflow, 1)
		return nil
	}
	select {
	case q.ch <- entry{user: user, data: data}:
	default:
		q.pending.Add(-n)
		q.obs.Dropped(ReasonOverflow, 1)
	}
	return nil
}

// Close stops taking frames, sends what is queued (within FlushTimeout; what remains after
// a failed send is dropped and counted) and waits for the Queue's goroutine. Call it before
// closing the Redis client, and after the connections that call Append are gone: a frame
// appended while Close runs may be lost without being counted. It is safe to call more than
// once.
func (q *Queue) Close() error {
	q.once.Do(func() {
		q.closed.Store(true)
		close(q.stop)
		t := time.AfterFunc(q.opt.FlushTimeout, q.cancel)
		<-q.done
		t.Stop()
	})
	<-q.done
	return nil
}

func (q *Queue) run() {
	defer close(q.done)
	defer q.cancel()
	batch := make([]entry, 0, q.opt.Batch)
	for {
		select {
		case e := <-q.ch:
			batch = q.fill(append(batch, e))
			q.send(q.ctx, batch)
			clear(batch) // the frames' memory goes back now, not at the next batch
			batch = batch[:0]
		case <-q.stop:
			q.flush(batch)
			return
		}
	}
}

// fill adds what is already queued to batch, up to the batch limits. It does not wait for
// more: a lone frame goes out at once, and batches grow by themselves while Redis is slower
// than the clients.
func (q *Queue) fill(batch []entry) []entry {
	size := int64(len(batch[0].data))
	for len(batch) < q.opt.Batch && size < q.maxBatch {
		select {
		case e := <-q.ch:
			batch = append(batch, e)
			size += int64(len(e.data))
		default:
			return batch
		}
	}
	return batch
}

// flush sends what is still queued at Close, until Close cancels q.ctx. After a failed
// send the rest is dropped: Redis is not answering, and Close must not wait for it batch by
// batch.
func (q *Queue) flush(batch []entry) {
	ctx := q.ctx
	for {
		select {
		case e := <-q.ch:
			batch = q.fill(append(batch[:0], e))
		default:
			return
		}
		if !q.send(ctx, batch) || ctx.Err() != nil {
			left := len(q.ch)
			for range left {
				e := <-q.ch
				q.pending.Add(-int64(len(e.data)))
			}
			if left > 0 {
				q.obs.Dropped(ReasonError, left)
			}
			return
		}
	}
}

// send appends batch in one pipeline and reports whether every entry was stored.
func (q *Queue) send(ctx context.Context, batch []entry) bool {
	var size, cost int64
	for _, e := range batch {
		size += int64(len(e.data))
		cost += entryCost(e.user, q.opt.NodeID, e.data)
	}
	defer q.pending.Add(-size)
	minID := q.budget.minID(cost)
	cmds := make([]*redis.StringCmd, len(batch))
	_, _ = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range batch {
			cmds[i] = p.XAdd(ctx, &redis.XAddArgs{
				Stream: q.opt.Stream,
				MinID:  minID,
				Approx: true, // whole radix-tree nodes only: trimming stays O(1) per XADD
				Values: []any{"user", e.user, "node", q.opt.NodeID, "data", e.data},
			})
		}
		return nil
	})
	failed := 0
	var firstErr error
	for i, c := range cmds {
		id, err := c.Result()
		if err != nil {
			failed++
			firstErr = err
			continue
		}
		q.budget.add(id, entryCost(batch[i].user, q.opt.NodeID, batch[i].data))
	}
	if failed == 0 {
		if q.failing {
			q.log.Info("upstream: appending to the stream works again", "stream", q.opt.Stream, "dropped", q.lost)
			q.failing, q.lost = false, 0
		}
		return true
	}
	q.obs.Dropped(ReasonError, failed)
	q.lost += failed
	if !q.failing {
		q.failing = true
		q.log.Warn("upstream: appending to the stream failed; client frames are dropped until it works again",
			"stream", q.opt.Stream, "err", firstErr)
	}
	return false
}

type nopObserver struct{}

func (nopObserver) Dropped(string, int) {}
