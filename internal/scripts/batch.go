// Package scripts runs Lua scripts of concurrent callers in shared Redis pipelines: one write
// and one read for many calls instead of one each, without waiting for a batch to fill.
package scripts

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// ErrClosed is returned by Run once Close has begun.
var ErrClosed = errors.New("scripts: closed")

const (
	// Workers is how many batches may be in flight at once. Each worker takes one call,
	// then whatever else is already waiting: concurrent calls share a round trip, and a
	// lone call goes out at once.
	Workers = 3
	// MaxBatch bounds one pipeline.
	MaxBatch = 128
)

// scriptCall is one script run waiting for a batch.
type scriptCall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	// reply gets exactly one answer once a worker took the call. Buffered, so a worker never
	// waits for its caller.
	reply chan *redis.Cmd
}

// Batcher runs the scripts of concurrent calls in shared pipelines (one write and one read
// for many calls instead of one each). It never waits for a batch to fill: a call made while
// nothing is in flight runs at once on its caller's goroutine; one made while others are in
// flight goes to a worker, which takes it and whatever else is waiting. The workers start
// with the first such call and stop at close.
type Batcher struct {
	rdb       redis.UniversalClient
	calls     chan *scriptCall // unbuffered: a call is either taken by a worker or not at all
	stop      chan struct{}
	startOnce sync.Once
	stopOnce  sync.Once
	wg        sync.WaitGroup
	// active counts the batches being run (by a worker or by an idle caller itself).
	active atomic.Int32
	// mu is held shared by callers that run their call themselves; close takes it to wait
	// for them and set closed.
	mu     sync.RWMutex
	closed bool
}

func New(rdb redis.UniversalClient) *Batcher {
	return &Batcher{rdb: rdb, calls: make(chan *scriptCall), stop: make(chan struct{})}
}

func (b *Batcher) start() {
	b.wg.Add(Workers)
	for range Workers {
		go b.work()
	}
}

// Close stops the workers after the batches in flight; calls not yet taken get ErrClosed. The
// Redis client is the caller's: close it afterwards.
func (b *Batcher) Close() {
	b.stopOnce.Do(func() {
		b.startOnce.Do(func() {}) // no workers start after this
		close(b.stop)             // first: the callers waiting for a worker get ErrClosed now
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
	})
	b.wg.Wait()
}

// Run runs script like script.Run, in a batch with whatever other calls are waiting.
//
// A call whose ctx ends before a worker took it returns ctx.Err() and its script never runs.
// Once taken, it waits for its own answer, which go-redis's timeouts bound, as they bound a
// direct call: an error then still means "not run" (or a lost reply), never "ran, but the
// caller had left".
func (b *Batcher) Run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &scriptCall{ctx: ctx, script: script, keys: keys, args: args, reply: make(chan *redis.Cmd, 1)}
	if b.active.Load() == 0 {
		// Nothing in flight, so nothing to share a round trip with: run it here. The hand-off
		// to a worker and back costs two goroutine wake-ups (≈ 15 µs per call on the
		// benchmark machine), which a lone call would pay for nothing.
		b.mu.RLock()
		defer b.mu.RUnlock()
		if b.closed {
			return errCmd(ctx, ErrClosed)
		}
		b.active.Add(1)
		defer b.active.Add(-1)
		b.exec([]*scriptCall{c})
		return <-c.reply
	}
	b.startOnce.Do(b.start)
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return errCmd(ctx, ctx.Err())
	case <-b.stop:
		return errCmd(ctx, ErrClosed)
	}
	return <-c.reply
}

func errCmd(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

func (b *Batcher) work() {
	defer b.wg.Done()
	batch := make([]*scriptCall, 0, MaxBatch)
	for {
		select {
		case c := <-b.calls:
			batch = append(batch, c)
			b.active.Add(1)
		case <-b.stop:
			return
		}
	more: // take what is already waiting, without waiting for more
		for len(batch) < MaxBatch {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break more
			}
		}
		b.exec(batch)
		b.active.Add(-1)
		clear(batch)
		batch = batch[:0]
	}
}

// exec runs batch as one pipeline and answers every call. A NOSCRIPT (Redis restarted or its
// script cache was flushed) means that script did not run: it is loaded and the calls that
// failed so are run once more.
func (b *Batcher) exec(batch []*scriptCall) {
	// Callers that gave up before a worker took them never get here (run's select); those
	// that gave up while the batch formed are answered without running.
	pending := batch[:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.reply <- errCmd(c.ctx, err)
			continue
		}
		pending = append(pending, c)
	}
	// The pipeline's context is not any caller's: one caller leaving must not fail the others.
	ctx := context.Background()
	for attempt := 0; len(pending) > 0; attempt++ {
		cmds := make([]*redis.Cmd, len(pending))
		if len(pending) == 1 {
			// A lone call (the gateway is not busy): a plain command costs less than a
			// pipeline of one.
			c := pending[0]
			cmds[0] = c.script.EvalSha(ctx, b.rdb, c.keys, c.args...)
		} else {
			_, _ = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, c := range pending {
					cmds[i] = c.script.EvalSha(c.ctx, p, c.keys, c.args...)
				}
				return nil
			})
		}
		// A pipeline-wide failure (connection lost) is stamped on every command by
		// go-redis, so each command's own error is what its caller gets.
		retry := pending[:0]
		var scripts []*redis.Script
		for i, c := range pending {
			if attempt == 0 && redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
				retry = append(retry, c)
				if !slices.Contains(scripts, c.script) {
					scripts = append(scripts, c.script)
				}
				continue
			}
			c.reply <- cmds[i]
		}
		for _, s := range scripts {
			if err := s.Load(ctx, b.rdb).Err(); err != nil {
				for _, c := range retry {
					c.reply <- errCmd(c.ctx, err)
				}
				return
			}
		}
		pending = retry
	}
}
