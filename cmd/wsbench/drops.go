package main

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/wsgateway/wsgateway/internal/ctxsleep"
)

// dropsResult is what the drops scenario adds to the RESULT line.
type dropsResult struct {
	Mode          string  `json:"mode"`
	SilenceS      float64 `json:"silence_timeout_s"`
	FrozenPlanned int     `json:"frozen_planned"`
	Frozen        int     `json:"frozen"`
	Reconnects    int64   `json:"reconnects"`
	GapsResets    int64   `json:"gap_reset_events"`
	tally
	DeliveredPct float64 `json:"delivered_pct"` // of accepted pushes
	ReplayP50    float64 `json:"replay_p50_ms"`
	ReplayP99    float64 `json:"replay_p99_ms"`
	ReplayMax    float64 `json:"replay_max_ms"`
	OutageP50    float64 `json:"outage_p50_ms"` // freeze → connected again
	OutageMax    float64 `json:"outage_max_ms"`
}

// plannedFreeze is one client to freeze and when, after the start of the measured phase.
type plannedFreeze struct {
	client int
	at     time.Duration
}

// freezePlan picks round(frac·n) distinct clients and a moment for each, uniform in
// [from, to), in the order of their moments.
func freezePlan(rng *rand.Rand, n int, frac float64, from, to time.Duration) []plannedFreeze {
	k := int(math.Round(frac * float64(n)))
	plan := make([]plannedFreeze, 0, k)
	for _, c := range rng.Perm(n)[:k] {
		plan = append(plan, plannedFreeze{client: c, at: from + time.Duration(rng.Int64N(int64(max(to-from, 1))))})
	}
	slices.SortFunc(plan, func(a, b plannedFreeze) int { return int(a.at - b.at) })
	return plan
}

// drops runs the measured phase of the drops scenario: --rate pushes/s to random users for
// --duration, open loop, while the planned clients freeze one by one. Each frozen client
// finds the silence by itself, reconnects on a fresh socket (resuming with since in v1) and
// goes on; at the end the ledger says what reached whom.
func (b *bench) drops(ctx context.Context) error {
	cfg, apps := b.cfg, b.apps
	senders, err := b.senders(ctx, min(cfg.Publishers, cfg.Conns))
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range senders {
			s.close()
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x5eed))
	// Freezes end early enough that the last frozen client notices and returns while pushes
	// still flow.
	plan := freezePlan(rng, cfg.Conns, cfg.Frozen, cfg.Duration/20, cfg.Duration-cfg.Silence-time.Second)
	dr := &dropsResult{Mode: cfg.Mode, SilenceS: cfg.Silence.Seconds(), FrozenPlanned: len(plan)}
	b.res.Drops = dr
	b.logf("drops (%s): %d pushes/s to random users for %s, %d of %d clients freeze at random moments, silence timeout %s",
		cfg.Mode, cfg.Rate, cfg.Duration, len(plan), cfg.Conns, cfg.Silence)

	fctx, stopFreezes := context.WithCancel(ctx)
	var frozen int
	var wg sync.WaitGroup
	b.phase(ctx, func(ctx context.Context) {
		start := time.Since(b.base)
		wg.Add(1)
		go func() {
			defer wg.Done()
			frozen = b.freezeAll(fctx, plan, start)
		}()
		b.dropsLoop(ctx, senders, rng.Uint64())
	})
	stopFreezes()
	wg.Wait()

	t := apps.led.count(cfg.Mode == modeV1)
	apps.led.replays(&t)
	dr.tally, dr.Frozen = t, frozen
	dr.Reconnects, dr.GapsResets = apps.reconnects.Load(), apps.gaps.Load()
	if t.Accepted > 0 {
		dr.DeliveredPct = 100 * float64(t.Delivered) / float64(t.Accepted)
	}
	dr.ReplayP50, dr.ReplayP99 = quantile(t.ReplayDelays, 0.5), quantile(t.ReplayDelays, 0.99)
	dr.ReplayMax = quantile(t.ReplayDelays, 1)
	dr.OutageP50, dr.OutageMax = quantile(t.Outages, 0.5), quantile(t.Outages, 1)
	r := b.res
	r.Lost, r.Duplicated = t.Missing, t.Duplicates
	if ctx.Err() != nil {
		return errStopped
	}
	return nil
}

// freezeAll freezes the planned clients at their moments and returns how many it froze. A
// client caught between two connections is tried again for a while.
func (b *bench) freezeAll(ctx context.Context, plan []plannedFreeze, start time.Duration) int {
	n := 0
	for _, p := range plan {
		ctxsleep.Sleep(ctx, start+p.at-time.Since(b.base))
		c := b.apps.clients[p.client]
		for try := 0; ctx.Err() == nil; try++ {
			if c.freeze(time.Since(b.base)) {
				n++
				break
			}
			if try == 50 {
				b.logf("freeze: %s had no open connection for 5 s, not frozen", c.user)
				break
			}
			ctxsleep.Sleep(ctx, 100*time.Millisecond)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return n
}

// dropsLoop sends Rate pushes/s for Duration, each to a random user, open loop as openLoop:
// push k is due at start + k/Rate and carries k and that time; user u goes through worker
// u % W, so one user's pushes leave in the order of their numbers.
func (b *bench) dropsLoop(ctx context.Context, senders []*sender, seed uint64) {
	cfg, led := b.cfg, b.apps.led
	rng := rand.New(rand.NewPCG(seed, 0xd0d0))
	b.schedule(ctx, senders, len(led.user), func(k int) job { return job{user: rng.IntN(cfg.Conns), k: k} },
		func(s *sender, j job, one []int) {
			s.data = appendPayload(s.data[:0], payload{pub: pubDrops, seq: uint64(j.k) + 1, ts: int64(j.sched)}, cfg.Payload)
			led.sending(j.k, j.user, time.Since(b.base))
			resp := s.push(one, s.data)
			if resp == nil {
				led.answered(j.k, -1)
				return
			}
			if bytes.Contains(resp, []byte(`"online":false`)) {
				b.cnt.expected.Add(1) // stored: the client still gets it, when it resumes
			}
			led.answered(j.k, answeredSeq(resp))
		})
}
