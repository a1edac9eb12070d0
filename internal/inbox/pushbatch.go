package inbox

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/keys"
)

//go:embed lua/batch.lua
var batchLua string

// Message is one push of a batch: its user, payload and options.
type Message struct {
	User string
	Data []byte
	PushOptions
}

// batchSize bounds the messages of one script run: Redis runs a script alone, so a long one
// delays every other command (about 1 ms for 100 pushes on the benchmark machine).
const batchSize = 100

// PushBatch pushes every message and answers each on its own, in order: a message whose push
// failed gets Err, the others succeed. Messages to one user are numbered in their order.
//
// On a single Redis (or Sentinel) the messages go in scripts of up to batchSize pushes
// (lua/batch.lua), all in one pipeline with one WAIT at its end when WaitReplicas is set; a
// batch whose reply was lost is sent again and answers its record. In a Cluster each message is
// a push of its own (the users live on different shards).
func (s *Redis) PushBatch(ctx context.Context, msgs []Message) []Result {
	if s.opt.Sharded {
		return s.pushEach(ctx, msgs)
	}
	return s.runBatch(ctx, msgs)
}

// pushCall is one Push waiting for a batch (single-node Redis): concurrent pushes share
// script runs as the messages of one batch.
type pushCall struct {
	ctx   context.Context
	msg   Message
	reply chan Result // buffered: a batch never waits for its caller
}

// execPushes runs the pushes of concurrent callers as one batch. Not under any caller's
// context: one caller leaving must not fail the others (retry bounds it).
// A caller that gave up while the batch formed is answered without running.
func (s *Redis) execPushes(calls []*pushCall) {
	msgs := make([]Message, 0, len(calls))
	run := calls[:0]
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil {
			c.reply <- Result{Err: fmt.Errorf("inbox: push %s: %w", c.msg.User, err)}
			continue
		}
		msgs = append(msgs, c.msg)
		run = append(run, c)
	}
	if len(run) == 0 {
		return
	}
	for i, r := range s.runBatch(context.Background(), msgs) {
		run[i].reply <- r
	}
}

// runBatch runs msgs as scripts of up to batchSize pushes, retried as a unit.
func (s *Redis) runBatch(ctx context.Context, msgs []Message) []Result {
	out := make([]Result, len(msgs))
	chunks := make([]batchChunk, 0, (len(msgs)+batchSize-1)/batchSize)
	for lo := 0; lo < len(msgs); lo += batchSize {
		chunks = append(chunks, s.newChunk(msgs[lo:min(lo+batchSize, len(msgs))]))
	}
	err := retry(ctx, func() error { return s.runChunks(ctx, chunks, out) })
	for i := range out {
		switch {
		case err != nil && out[i].Err == nil && out[i].Seq == 0:
			out[i].Err = fmt.Errorf("inbox: push %s: %w", msgs[i].User, err)
		case out[i].Err != nil:
			out[i].Err = fmt.Errorf("inbox: push %s: %w", msgs[i].User, out[i].Err)
		}
	}
	return out
}

// batchChunk is one script run of a batch.
type batchChunk struct {
	keys []string
	args []any
	n    int
}

func (s *Redis) newChunk(msgs []Message) batchChunk {
	p := keys.Prefix(s.opt.Prefix)
	c := batchChunk{n: len(msgs), keys: make([]string, 0, 2+2*len(msgs)), args: make([]any, 0, 6+4*len(msgs))}
	c.keys = append(c.keys, p.PushBatch(NewID()))
	c.args = append(c.args, len(msgs), s.opt.Max, seconds(s.opt.TTL), seconds(s.opt.DedupTTL),
		s.opt.UndeliveredAfter.Milliseconds(), seconds(internalIDTTL))
	for _, m := range msgs {
		receipt := 0
		if m.Receipt {
			receipt = 1
		}
		c.keys = append(c.keys, p.User(m.User), p.Inbox(m.User))
		c.args = append(c.args, m.Data, m.ID, receipt, m.User)
	}
	if s.opt.UndeliveredAfter > 0 {
		c.keys = append(c.keys, s.dueKey())
	}
	return c
}

// runChunks sends every chunk in one pipeline, in order (so that a user's messages are numbered
// in order), with WAIT at its end when replicas must confirm, and fills out. A NOSCRIPT (Redis
// restarted) loads the script and sends them again: a chunk that did run answers its record.
func (s *Redis) runChunks(ctx context.Context, chunks []batchChunk, out []Result) error {
	for attempt := 0; ; attempt++ {
		cmds := make([]*redis.Cmd, len(chunks))
		var wait *redis.Cmd
		var err error
		if len(chunks) == 1 && s.opt.WaitReplicas == 0 {
			// A plain command costs less than a pipeline of one.
			cmds[0] = s.pushBatch.EvalSha(ctx, s.rdb, chunks[0].keys, chunks[0].args...)
			err = cmds[0].Err()
		} else {
			_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, c := range chunks {
					cmds[i] = s.pushBatch.EvalSha(ctx, p, c.keys, c.args...)
				}
				if s.opt.WaitReplicas > 0 {
					wait = p.Do(ctx, "WAIT", s.opt.WaitReplicas, s.opt.WaitTimeout.Milliseconds())
				}
				return nil
			})
		}
		if attempt == 0 && redis.HasErrorPrefix(cmds[0].Err(), "NOSCRIPT") {
			if err := s.pushBatch.Load(ctx, s.rdb).Err(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if wait != nil {
			if n, _ := wait.Int64(); n < int64(s.opt.WaitReplicas) {
				return ErrNotReplicated
			}
		}
		lo := 0
		for i, c := range chunks {
			if err := parseBatch(cmds[i], out[lo:lo+c.n]); err != nil {
				return err
			}
			lo += c.n
		}
		return nil
	}
}

func parseBatch(cmd *redis.Cmd, out []Result) error {
	vals, err := cmd.Slice()
	if err != nil {
		return err
	}
	if len(vals) != len(out) {
		return fmt.Errorf("unexpected batch reply of %d results for %d messages", len(vals), len(out))
	}
	for i, v := range vals {
		r, ok := v.([]any)
		if !ok || len(r) < 4 {
			return fmt.Errorf("unexpected batch reply %v", v)
		}
		var n [4]int64
		for j := range n {
			if n[j], ok = r[j].(int64); !ok {
				return fmt.Errorf("unexpected batch reply %v", v)
			}
		}
		if n[0] < 0 {
			out[i] = Result{Err: errors.New("failed in Redis (a key of the wrong type?)")}
			continue
		}
		out[i] = Result{Seq: n[0], Receivers: n[1], Duplicate: n[2] == 1, deadline: n[3]}
	}
	return nil
}

// pushEach pushes the messages one by one (Cluster), a few at a time: one goroutine per
// message would be many for 1,000; a few callers keep the batcher's pipelines full. Messages
// to one user go through the same caller, in order.
func (s *Redis) pushEach(ctx context.Context, msgs []Message) []Result {
	out := make([]Result, len(msgs))
	done := make(chan struct{}, len(msgs))
	const callers = 16
	lanes := make([][]int, min(callers, len(msgs)))
	for i, m := range msgs {
		l := int(crc32.ChecksumIEEE([]byte(m.User)) % uint32(len(lanes)))
		lanes[l] = append(lanes[l], i)
	}
	for _, lane := range lanes {
		go func() {
			for _, i := range lane {
				r, err := s.Push(ctx, msgs[i].User, msgs[i].Data, msgs[i].PushOptions)
				if err != nil {
					r.Err = err
				}
				out[i] = r
				done <- struct{}{}
			}
		}()
	}
	for range msgs {
		<-done
	}
	return out
}
