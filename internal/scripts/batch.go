// Package scripts runs Lua scripts of concurrent callers in shared Redis pipelines: one write
// and one read for many calls instead of one each, without waiting for a batch to fill.
package scripts

import (
	"context"
	"slices"

	"github.com/redis/go-redis/v9"
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
// for many calls instead of one each), batched by a Runner: never waiting for a batch to fill.
type Batcher struct {
	rdb redis.UniversalClient
	run *Runner[*scriptCall]
}

func New(rdb redis.UniversalClient) *Batcher {
	b := &Batcher{rdb: rdb}
	b.run = NewRunner(b.exec)
	return b
}

// Close stops the workers after the batches in flight; calls not yet taken get ErrClosed. The
// Redis client is the caller's: close it afterwards.
func (b *Batcher) Close() { b.run.Close() }

// Run runs script like script.Run, in a batch with whatever other calls are waiting.
//
// A call whose ctx ends before a worker took it returns ctx.Err() and its script never runs.
// Once taken, it waits for its own answer, which go-redis's timeouts bound, as they bound a
// direct call: an error then still means "not run" (or a lost reply), never "ran, but the
// caller had left".
func (b *Batcher) Run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &scriptCall{ctx: ctx, script: script, keys: keys, args: args, reply: make(chan *redis.Cmd, 1)}
	if err := b.run.Do(ctx, c); err != nil {
		return errCmd(ctx, err)
	}
	return <-c.reply
}

func errCmd(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
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
