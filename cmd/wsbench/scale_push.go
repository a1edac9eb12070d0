package main

// The open loop of pushes to random users of a scale level.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

type scaleJob struct {
	user  int
	sched time.Duration
}

// pushes sends Rate pushes/s for dur, each to a random user of the level, open loop: push i
// is due at start + i/Rate and carries that time, whenever it leaves (see openLoop). User r
// always goes through worker r mod workers, so a user's pushes stay in order.
func (s *scale) pushes(ctx context.Context, level int, dur time.Duration) (*scalePush, error) {
	cfg := s.cfg
	p := &scalePush{Via: cfg.Via, Rate: cfg.Rate, Duration: dur.Seconds()}
	b := &bench{cfg: &config{UserPrefix: "u", Payload: cfg.Payload}, base: s.base, cnt: &counters{}}
	workers := make([]*sender, cfg.Workers)
	if s.seqs == nil {
		s.seqs = make([]uint64, cfg.Workers)
	}
	for w := range workers {
		h, err := newHTTPConn(s.apis[w%len(s.apis)], cfg.APIKey, 10*time.Second)
		if err != nil {
			return nil, err
		}
		// Publisher 1 is the broadcasts'. A worker's numbers go on from the previous level's:
		// the clients check the order per publisher over the whole run.
		workers[w] = &sender{b: b, pub: w + 2, seq: s.seqs[w], http: h}
		defer func() { s.seqs[w] = workers[w].seq }()
		if err := workers[w].warm(); err != nil {
			return nil, err
		}
		defer h.Close()
	}
	before, err := s.callAll(ctx, func(int) string { return "hist" })
	if err != nil {
		return nil, err
	}
	tot0, _ := sum(before)

	cpu := newCPUMeter(s.cpuPIDs())
	busy0, busyErr := machineBusy()
	done := make(chan struct{})
	var lastAcc atomic.Int64
	go s.progress(ctx, done, func(tot clientStats) string {
		a := b.cnt.accepted.Load()
		defer lastAcc.Store(a)
		return fmt.Sprintf("pushed %d (%+d/s) err %d | received %d | outstanding %d | lag max %s | open %d",
			a, a-lastAcc.Load(), b.cnt.sendErrs.Load(), tot.Received-tot0.Received,
			b.cnt.expected.Load()-(tot.Received-tot0.Received-(tot.Dup-tot0.Dup)),
			fmtDur(time.Duration(b.cnt.lagMax.Load())), tot.Open)
	})

	queues := make([]chan scaleJob, len(workers))
	var wg sync.WaitGroup
	for w, snd := range workers {
		queues[w] = make(chan scaleJob, 1024)
		wg.Go(func() {
			one := []int{0}
			var batch []scaleJob
			for j := range queues[w] {
				if ctx.Err() != nil {
					continue
				}
				if s.pusher != nil {
					batch = s.fcall(ctx, b, snd, append(batch[:0], j), queues[w])
					continue
				}
				b.cnt.noteLag(time.Since(s.base) - j.sched)
				one[0] = j.user
				snd.push(one, snd.next(j.sched))
			}
		})
	}
	total := int(float64(cfg.Rate) * dur.Seconds())
	interval := float64(time.Second) / float64(cfg.Rate)
	start := time.Since(s.base) + time.Millisecond
	rng := rand.New(rand.NewPCG(uint64(level), uint64(start)))
loop:
	for i := range total {
		sched := start + time.Duration(float64(i)*interval)
		if wait := sched - time.Since(s.base); wait > 0 {
			time.Sleep(wait)
		}
		r := rng.IntN(level)
		select {
		case queues[r%len(queues)] <- scaleJob{user: s.userOf(r), sched: sched}:
		case <-ctx.Done():
			break loop
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	sendEnd := time.Since(s.base)
	p.CPU = s.cpuShares(cpu.percent())
	if busy1, err := machineBusy(); err == nil && busyErr == nil {
		p.CPU.Other = 100*float64(busy1-busy0)/float64(sendEnd-start) - p.CPU.Gateways - p.CPU.Redis - p.CPU.Clients - p.CPU.Generator
	}
	var tot clientStats
	_ = waitFor(ctx, cfg.Drain, func() bool {
		sts, err := s.callAll(ctx, func(int) string { return "stats" })
		tot, _ = sum(sts)
		return err != nil || tot.Received-tot0.Received-(tot.Dup-tot0.Dup) >= b.cnt.expected.Load()
	})
	close(done)
	sts, err := s.callAll(ctx, func(int) string { return "hist" })
	if err != nil {
		return p, err
	}
	tot, hs := sum(sts)
	c := b.cnt
	p.Sent, p.Accepted, p.Errors, p.Offline, p.Expected = c.sent.Load(), c.accepted.Load(), c.sendErrs.Load(), c.offline.Load(), c.expected.Load()
	p.Received, p.Dup = tot.Received-tot0.Received, tot.Dup-tot0.Dup
	p.Reordered, p.Closed = tot.Reordered-tot0.Reordered, tot.Closed-tot0.Closed
	p.Lost = max(0, p.Expected-(p.Received-p.Dup))
	p.PushRate = float64(p.Accepted) / (sendEnd - start).Seconds()
	p.LagMaxMs = ms(time.Duration(c.lagMax.Load()))
	p.Latency = latencyOf(hs)
	p.ErrSamples = b.sendErrors
	if ctx.Err() != nil {
		return p, errStopped
	}
	return p, s.checkGateways()
}

// fcall pushes straight into Redis, as the API would: batch plus whatever else is queued
// already (up to 64), in one pipeline, so that a generator that fell behind catches up
// instead of paying a round trip per push. The Function answers [seq, receivers];
// receivers > 0 means a node took it live. It returns batch for reuse.
func (s *scale) fcall(ctx context.Context, b *bench, snd *sender, batch []scaleJob, q chan scaleJob) []scaleJob {
more:
	for len(batch) < 64 {
		select {
		case j, ok := <-q:
			if !ok {
				break more
			}
			batch = append(batch, j)
		default:
			break more
		}
	}
	cnt := b.cnt
	pipe := s.pusher.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	now := time.Since(s.base)
	for i, j := range batch {
		cnt.noteLag(now - j.sched)
		u := "u" + strconv.Itoa(j.user)
		// A copy: the pipeline holds its arguments until Exec, the sender reuses its buffer.
		cmds[i] = pipe.FCall(ctx, "wsgateway_push", []string{scaleKeys.User(u), scaleKeys.Inbox(u)}, string(snd.next(j.sched)))
	}
	cnt.sent.Add(int64(len(batch)))
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for _, c := range cmds {
		r, err := c.Int64Slice()
		if err != nil || len(r) < 2 {
			cnt.sendErrs.Add(1)
			b.noteSendError(0, nil, fmt.Errorf("FCALL: %v %v", r, err))
			continue
		}
		cnt.accepted.Add(1)
		if r[1] > 0 {
			cnt.expected.Add(1)
		} else {
			cnt.offline.Add(1)
		}
	}
	return batch
}
