package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// scenario runs the measured phase of every scenario but idle.
func (b *bench) scenario(ctx context.Context) error {
	cfg := b.cfg
	n := cfg.Publishers
	if cfg.Scenario == scLatency || cfg.Scenario == scCrossNode {
		n = min(cfg.Publishers, cfg.Conns)
	}
	senders, err := b.senders(ctx, n)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range senders {
			s.close()
		}
	}()
	switch cfg.Scenario {
	case scLatency, scCrossNode:
		b.logf("%s: %d pushes/s for %s via %s, %d open-loop workers", cfg.Scenario, cfg.Rate, cfg.Duration, cfg.Via, n)
		b.phase(ctx, func(ctx context.Context) { b.openLoop(ctx, senders) })
	case scThroughput:
		b.logf("throughput: %d publishers, single-user pushes for %s (window %d)", n, cfg.Duration, cfg.Window)
		b.phase(ctx, func(ctx context.Context) { b.closedLoop(ctx, senders, 1) })
	case scBatch:
		b.logf("batch: %d publishers, pushes to %d users each for %s (window %d)", n, cfg.BatchSize, cfg.Duration, cfg.Window)
		b.phase(ctx, func(ctx context.Context) { b.closedLoop(ctx, senders, cfg.BatchSize) })
	case scBulk:
		b.logf("bulk: %d publishers, %d messages (each to its own user) per request for %s (window %d)", n, cfg.BatchSize, cfg.Duration, cfg.Window)
		b.phase(ctx, func(ctx context.Context) { b.closedLoop(ctx, senders, cfg.BatchSize) })
	case scBroadcast:
		b.logf("broadcast: %d publishers for %s, at most %d broadcasts outstanding", n, cfg.Duration, cfg.Window)
		b.phase(ctx, func(ctx context.Context) { b.closedLoop(ctx, senders, 0) })
	default:
		return fmt.Errorf("unknown scenario %q", cfg.Scenario)
	}
	if ctx.Err() != nil {
		return errStopped
	}
	return nil
}

// senders makes n publisher streams (ids 1..n) and opens their connections.
func (b *bench) senders(ctx context.Context, n int) ([]*sender, error) {
	out := make([]*sender, n)
	for i := range out {
		s, err := b.newSender(i + 1)
		if err != nil {
			return nil, err
		}
		if err := s.warm(); err != nil {
			return nil, fmt.Errorf("publisher %d: %w", i+1, err)
		}
		if ctx.Err() != nil {
			return nil, errStopped
		}
		out[i] = s
	}
	return out, nil
}

// job is one scheduled push of the open loop.
type job struct {
	user  int
	sched time.Duration // since base: the time the push should have been sent
	k     int           // drops: the push's number
}

// openLoop sends Rate pushes per second for Duration, each to the next user in turn, and
// never waits for the gateway: push i is due at start + i/Rate and carries that time as its
// timestamp, whenever it actually goes out. A push waits only for its worker; user u always
// goes through worker u % W, so one user's pushes leave in order (the ordering guarantee is per
// publisher). If the workers fall behind, the backlog shows in the latency (coordinated
// omission is avoided) and in generator_lag_max_ms.
func (b *bench) openLoop(ctx context.Context, senders []*sender) {
	cfg := b.cfg
	total := int(float64(cfg.Rate) * cfg.Duration.Seconds())
	b.schedule(ctx, senders, total, func(i int) job { return job{user: i % cfg.Conns} },
		func(s *sender, j job, one []int) {
			data := s.next(j.sched)
			if cfg.Via == "http" {
				s.push(one, data)
			} else {
				s.publish(ctx, j.user, data)
			}
		})
}

// schedule runs the open loop of openLoop and dropsLoop: job k (from mk, in order of k) is due
// at start + k/Rate and goes to worker user % W of senders, which lags behind only its own
// earlier jobs; each worker calls send for its jobs in order, with one holding the job's user,
// and drains its queue without sending once ctx ends.
func (b *bench) schedule(ctx context.Context, senders []*sender, n int, mk func(k int) job, send func(s *sender, j job, one []int)) {
	workers := len(senders)
	queues := make([]chan job, workers)
	var wg sync.WaitGroup
	for w, s := range senders {
		queues[w] = make(chan job, 1024)
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := []int{0}
			for j := range queues[w] {
				if ctx.Err() != nil {
					continue // drain the queue without sending
				}
				b.cnt.noteLag(time.Since(b.base) - j.sched)
				one[0] = j.user
				send(s, j, one)
			}
		}()
	}
	interval := float64(time.Second) / float64(b.cfg.Rate)
	start := time.Since(b.base) + time.Millisecond
loop:
	for k := range n {
		sched := start + time.Duration(float64(k)*interval)
		if wait := sched - time.Since(b.base); wait > 0 {
			time.Sleep(wait) // at most one interval (≤ 1 s)
		}
		j := mk(k)
		j.sched = sched
		select {
		case queues[j.user%workers] <- j:
		case <-ctx.Done():
			break loop
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
}

// closedLoop runs Publishers publishers as fast as the gateway answers, for Duration.
// batch 1: single-user pushes; batch K > 1: pushes to K users (user_ids), or in the bulk
// scenario K different messages to K users; 0: broadcasts.
// Every user belongs to one publisher (user % Publishers), so its messages come from one
// ordered stream. With --window, a publisher waits while more than Window messages are
// outstanding (sent, not yet received by all their recipients).
func (b *bench) closedLoop(ctx context.Context, senders []*sender, batch int) {
	cfg := b.cfg
	deadline := time.Now().Add(cfg.Duration)
	unit := int64(batch) // deliveries per message
	if batch == 0 {
		unit = int64(b.open())
	}
	limit := int64(cfg.Window) * unit
	var wg sync.WaitGroup
	for p, s := range senders {
		var own []int
		for u := p; u < cfg.Conns; u += len(senders) {
			own = append(own, u)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := make([]int, max(batch, 1))
			next := 0
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if limit > 0 {
					for b.outstanding() > limit && ctx.Err() == nil && time.Now().Before(deadline) {
						time.Sleep(200 * time.Microsecond)
					}
				}
				if batch == 0 {
					s.broadcast(s.next(time.Since(b.base)))
					continue
				}
				for i := range to {
					to[i] = own[next]
					next = (next + 1) % len(own)
				}
				if cfg.Scenario == scBulk {
					s.bulk(to)
					continue
				}
				s.push(to, s.next(time.Since(b.base)))
			}
		}()
	}
	wg.Wait()
}
