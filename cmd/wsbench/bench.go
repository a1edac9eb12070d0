package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/ctxsleep"
)

// bench is one run: the environment, the clients, the counters and the result.
type bench struct {
	cfg   *config
	out   io.Writer
	base  time.Time
	cnt   *counters
	fleet *fleet
	apps  *appFleet     // drops, memory: clients of the client package instead of fleet's
	rdb   *redis.Client // nil without --redis
	env   environment
	res   *result

	errMu      sync.Mutex
	sendErrors []string
}

func newBench(cfg *config, out io.Writer) *bench {
	return &bench{cfg: cfg, out: out, base: time.Now(), cnt: &counters{}, res: &result{}}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.out, format+"\n", args...)
}

// run does the whole run and returns its result; the environment is stopped before it returns.
func (b *bench) run(ctx context.Context) (*result, error) {
	cfg := b.cfg
	soft, hard, err := raiseNoFile()
	if err != nil {
		b.logf("warning: could not raise RLIMIT_NOFILE: %v", err)
	} else if soft > 0 && soft < uint64(cfg.Conns)+256 {
		return nil, fmt.Errorf("open-file limit %d (hard %d) is too small for %d connections", soft, hard, cfg.Conns)
	}
	if cfg.Autogroup != 0 {
		if err := setAutogroupNice(cfg.Autogroup); err != nil {
			return nil, fmt.Errorf("autogroup-nice: %w", err)
		}
		b.logf("scheduler autogroup nice set to %d", cfg.Autogroup)
	}
	defer b.env.stop()
	if err := b.env.start(ctx, cfg, b.logf); err != nil {
		return nil, err
	}
	if cfg.API == "" {
		cfg.API = httpBase(cfg.Targets[0])
	}
	if cfg.Redis != "" {
		if b.rdb, err = newRedis(cfg.Redis, cfg.Publishers+4); err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		defer b.rdb.Close()
	}
	b.res.fill(cfg)
	b.fleet = newFleet(cfg, b.base, b.cnt)
	toks, err := b.fleet.tokens()
	if err != nil {
		return nil, err
	}

	rss0 := totalRSS(cfg.ServerPIDs)
	var mem0 int64 = -1
	if b.rdb != nil {
		if mem0, err = redisUsedMemory(ctx, b.rdb); err != nil {
			return nil, fmt.Errorf("redis INFO memory: %w", err)
		}
	}
	b.logf("connecting %d clients to %v (API %s), %d handshakes in flight, source addresses %d",
		cfg.Conns, cfg.Targets, cfg.API, cfg.DialConcurrency, len(cfg.SourceAddrs))
	if cfg.WaitQuiet > 0 {
		b.res.OtherCPUBefore = waitQuiet(ctx, b.ourPIDs(), 15, cfg.WaitQuiet, b.logf)
	}
	if cfg.Scenario == scDrops || cfg.Scenario == scMemory {
		return b.res, b.runApps(ctx, toks, mem0)
	}
	var profDone chan struct{}
	if cfg.Scenario == scIdle {
		// idle has no send phase: its profile covers the connect storm instead.
		profDone = b.fetchProfile(ctx)
	}
	err = b.connect(ctx, &b.fleet.connected, &b.fleet.dialErrs, func() error { return b.fleet.connect(ctx, toks) })
	defer b.closeFleet()
	if err != nil {
		return b.res, err
	}

	if cfg.Scenario == scIdle {
		err := b.idle(ctx, rss0, mem0)
		if profDone != nil {
			<-profDone
		}
		return b.res, err
	}
	ctxsleep.Sleep(ctx, cfg.Settle)
	if cfg.Probe {
		if err := b.probe(ctx); err != nil {
			return b.res, err
		}
		b.logf("probe: all %d connections received a push (subscribed end to end)", b.cnt.probes.Load())
	}
	if err := b.scenario(ctx); err != nil {
		return b.res, err
	}
	return b.res, b.env.check()
}

// connect runs dial (the fleet's connect) with a progress line and records the connect
// figures; the error names what failed.
func (b *bench) connect(ctx context.Context, connected, failed *atomic.Int64, dial func() error) error {
	other := b.otherCPU()
	start := time.Now()
	stop := b.ticker(func(el time.Duration) {
		b.logf("[%6.1fs] connecting: %d/%d open, %d failed", el.Seconds(), connected.Load(), b.cfg.Conns, failed.Load())
	})
	err := dial()
	stop()
	took := time.Since(start)
	b.res.ConnectOtherCPU = other()
	b.res.ConnectSeconds = took.Seconds()
	b.res.Connected = int(connected.Load())
	b.res.ConnectErrors = int(failed.Load())
	b.res.ConnectRate = float64(b.res.Connected) / took.Seconds()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	b.logf("connected %d in %.2fs: %.0f connections/s (other processes used %.0f%% of a core meanwhile)",
		b.res.Connected, took.Seconds(), b.res.ConnectRate, b.res.ConnectOtherCPU)
	return b.env.check()
}

// runApps is the rest of run for the scenarios whose clients are the client package's.
func (b *bench) runApps(ctx context.Context, toks []string, mem0 int64) error {
	cfg := b.cfg
	names := make([]string, len(b.fleet.clients))
	for i, c := range b.fleet.clients {
		names[i] = c.user
	}
	b.apps = newAppFleet(cfg, b.base, b.cnt, b.fleet.hist, &b.fleet.lastDelivery, names, toks)
	if cfg.Scenario == scDrops {
		b.apps.led = newLedger(int(float64(cfg.Rate) * cfg.Duration.Seconds()))
	}
	err := b.connect(ctx, &b.apps.connected, &b.apps.dialErrs, func() error { return b.apps.connect(ctx) })
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b.apps.close(ctx)
	}()
	if err != nil {
		return err
	}
	if cfg.Scenario == scMemory {
		if err := b.memory(ctx, mem0); err != nil {
			return err
		}
		return b.env.check()
	}
	ctxsleep.Sleep(ctx, cfg.Settle)
	if cfg.Probe {
		if err := b.probe(ctx); err != nil {
			return err
		}
		b.logf("probe: all %d clients received a push (subscribed end to end)", b.cnt.probes.Load())
	}
	if err := b.drops(ctx); err != nil {
		return err
	}
	return b.env.check()
}

// open counts the connections open now, of whichever kind of clients the run has.
func (b *bench) open() int {
	if b.apps != nil {
		return b.apps.open()
	}
	return b.fleet.open()
}

// ourPIDs are the gateway(s), Redis (when its PID is known) and wsbench.
func (b *bench) ourPIDs() []int {
	pids := append([]int{}, b.cfg.ServerPIDs...)
	if b.cfg.RedisPID > 0 {
		pids = append(pids, b.cfg.RedisPID)
	}
	return append(pids, os.Getpid())
}

// otherCPU starts measuring the CPU that processes other than ours use; the returned function
// gives it in percent of one core (-1 when /proc cannot tell).
func (b *bench) otherCPU() func() float64 {
	m := newCPUMeter(b.ourPIDs())
	busy0, err0 := machineBusy()
	return func() float64 {
		busy1, err1 := machineBusy()
		el := time.Since(m.at)
		if err0 != nil || err1 != nil || el <= 0 {
			return -1
		}
		ours := 0.0
		for _, p := range m.percent() {
			ours += max(p, 0)
		}
		return 100*float64(busy1-busy0)/float64(el) - ours
	}
}

func (b *bench) closeFleet() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b.fleet.closing.Store(true)
	b.fleet.close(ctx)
}

// ticker calls line every --progress until the returned stop is called.
func (b *bench) ticker(line func(elapsed time.Duration)) (stop func()) {
	start := time.Now()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(b.cfg.Progress)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				line(time.Since(start))
			}
		}
	}()
	return func() { close(done); <-finished }
}

// idle measures memory: RSS and Redis memory before connecting, after settling, and after
// the connections stayed idle for --duration.
func (b *bench) idle(ctx context.Context, rss0, mem0 int64) error {
	cfg := b.cfg
	n := int64(b.res.Connected)
	ctxsleep.Sleep(ctx, cfg.Settle)
	rss1 := totalRSS(cfg.ServerPIDs)
	b.logf("after %s: server RSS %s", cfg.Settle, perConn(rss0, rss1, n))
	stop := b.ticker(func(el time.Duration) {
		b.logf("[%6.1fs] idle: %d open, server RSS %s", el.Seconds(), b.fleet.open(), perConn(rss0, totalRSS(cfg.ServerPIDs), n))
	})
	cpu := newCPUMeter(cfg.ServerPIDs)
	ctxsleep.Sleep(ctx, cfg.Duration)
	stop()
	if ctx.Err() != nil {
		return errStopped
	}
	rss2 := totalRSS(cfg.ServerPIDs)
	r := b.res
	r.ServerCPU = cpu.percent()
	if rss0 >= 0 && rss2 >= 0 && len(cfg.ServerPIDs) > 0 {
		r.RSSBeforeBytes, r.RSSAfterBytes = rss0, rss2
		r.RSSPerConnBytes = float64(rss2-rss0) / float64(n)
		r.RSSPerConnSettledBytes = float64(rss1-rss0) / float64(n)
	}
	if b.rdb != nil && mem0 >= 0 {
		mem1, err := redisUsedMemory(ctx, b.rdb)
		if err != nil {
			return fmt.Errorf("redis INFO memory: %w", err)
		}
		r.RedisMemBeforeBytes, r.RedisMemAfterBytes = mem0, mem1
		r.RedisBytesPerUser = float64(mem1-mem0) / float64(n)
	}
	r.StillOpen = b.fleet.open()
	if cfg.Probe {
		if err := b.probe(ctx); err != nil {
			return err
		}
		b.logf("probe: all %d connections received a push (subscribed end to end)", b.cnt.probes.Load())
	}
	return nil
}

func perConn(before, after, n int64) string {
	if before < 0 || after < 0 {
		return "n/a (give --server-pids)"
	}
	return fmt.Sprintf("%.1f MiB → %.1f MiB, %.0f B/conn", float64(before)/(1<<20), float64(after)/(1<<20),
		float64(after-before)/float64(n))
}

// phase runs send (it returns when its sends are done) with progress lines and CPU meters,
// then waits up to --drain for the deliveries still outstanding.
func (b *bench) phase(ctx context.Context, send func(ctx context.Context)) {
	cfg, cnt, r := b.cfg, b.cnt, b.res
	pids := append([]int{}, cfg.ServerPIDs...)
	if cfg.RedisPID > 0 {
		pids = append(pids, cfg.RedisPID)
	}
	pids = append(pids, os.Getpid())
	if cfg.WaitQuiet > 0 {
		r.OtherCPUBefore = waitQuiet(ctx, pids, 15, cfg.WaitQuiet, b.logf)
	}
	// Collect the generator's own garbage (the connect storm, the probe) now, so that its
	// next GC, which has 10,000 reader stacks to scan, does not land in the first second of
	// the measured phase: in open-loop runs that stall showed up as 50-80 ms of generator
	// lag and, since pushes carry their scheduled time, in the gateway's p99.
	runtime.GC()
	cpu := newCPUMeter(pids)
	busy0, busyErr := machineBusy()
	var redisCPU0 time.Duration = -1
	if b.rdb != nil {
		if c, err := redisCPU(ctx, b.rdb); err == nil {
			redisCPU0 = c
		}
	}
	var cmds0 map[string]redisCmd
	if b.rdb != nil {
		cmds0, _ = redisCommandStats(ctx, b.rdb)
	}
	profDone := b.fetchProfile(ctx)

	var lastSent, lastRecv int64
	stop := b.ticker(func(el time.Duration) {
		s, rc := cnt.accepted.Load(), cnt.received.Load()
		snap := b.fleet.hist.snapshot()
		b.logf("[%6.1fs] pushed %d (%+d/s) err %d | received %d (%+d/s) outstanding %d | p99 %s max %s | open %d",
			el.Seconds(), s, int64(float64(s-lastSent)/cfg.Progress.Seconds()), cnt.sendErrs.Load(),
			rc, int64(float64(rc-lastRecv)/cfg.Progress.Seconds()), b.outstanding(),
			fmtDur(snap.Quantile(0.99)), fmtDur(snap.Max()), b.open())
		lastSent, lastRecv = s, rc
	})
	b.fleet.measuring.Store(true)
	start := time.Since(b.base)
	b.fleet.phaseStart.Store(int64(start))
	send(ctx)
	sendEnd := time.Since(b.base)
	r.SendSeconds = (sendEnd - start).Seconds()
	pct := cpu.percent()
	r.ServerCPU = pct[:len(cfg.ServerPIDs)]
	r.GeneratorCPU = pct[len(pct)-1]
	if cfg.RedisPID > 0 {
		r.RedisCPU = pct[len(cfg.ServerPIDs)]
	} else if redisCPU0 >= 0 {
		if c, err := redisCPU(ctx, b.rdb); err == nil {
			r.RedisCPU = 100 * float64(c-redisCPU0) / float64(sendEnd-start)
		}
	}
	if busy1, err := machineBusy(); err == nil && busyErr == nil {
		// Everything the machine did minus the gateway(s), Redis and wsbench.
		ours := r.RedisCPU + r.GeneratorCPU
		for _, c := range r.ServerCPU {
			ours += c
		}
		r.OtherCPU = 100*float64(busy1-busy0)/float64(sendEnd-start) - ours
	}
	_ = waitFor(ctx, cfg.Drain, func() bool { return b.outstanding() <= 0 })
	stop()
	if cmds0 != nil {
		if cmds1, err := redisCommandStats(ctx, b.rdb); err == nil {
			r.RedisCommands = commandDelta(cmds0, cmds1, cnt.accepted.Load())
		}
	}
	b.fleet.measuring.Store(false)
	if profDone != nil {
		<-profDone
	}

	accepted := cnt.accepted.Load()
	r.Sent, r.Accepted, r.SendErrors = cnt.sent.Load(), accepted, cnt.sendErrs.Load()
	r.Expected, r.Received = cnt.expected.Load(), cnt.received.Load()
	r.Duplicated, r.Reordered, r.Offline = cnt.dup.Load(), cnt.reordered.Load(), cnt.offline.Load()
	r.Lost = max(0, r.Expected-(r.Received-r.Duplicated))
	r.ClosedDuringRun = cnt.closed.Load()
	r.BadFrames = cnt.badFrames.Load()
	r.PushRate = float64(accepted) / r.SendSeconds
	if last := b.fleet.lastDelivery.Load(); last > int64(start) {
		r.DeliveryRate = float64(r.Received) / (time.Duration(last) - start).Seconds()
	}
	r.GeneratorLagMaxMs = ms(time.Duration(cnt.lagMax.Load()))
	l := latencyOf(b.fleet.hist.snapshot())
	r.Latency = &l
	if cfg.Scenario == scCrossNode {
		for _, h := range b.fleet.perNode {
			r.LatencyPerNode = append(r.LatencyPerNode, latencyOf(h.snapshot()))
		}
	}
	r.SendErrorSamples = b.sendErrors
}

// outstanding is deliveries promised but not received yet.
func (b *bench) outstanding() int64 {
	return b.cnt.expected.Load() - (b.cnt.received.Load() - b.cnt.dup.Load())
}

// fetchProfile starts fetching the gateway's CPU profile over the measured phase; the channel
// is closed when it is written (nil without --server-profile).
func (b *bench) fetchProfile(ctx context.Context) chan struct{} {
	if b.cfg.ProfileURL == "" {
		return nil
	}
	done := make(chan struct{})
	secs := max(1, int(b.cfg.Duration.Seconds()))
	go func() {
		defer close(done)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.cfg.ProfileURL+"?seconds="+strconv.Itoa(secs), nil)
		if err != nil {
			b.logf("profile: %v", err)
			return
		}
		resp, err := (&http.Client{Timeout: time.Duration(secs+30) * time.Second}).Do(req)
		if err != nil {
			b.logf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.logf("profile: HTTP %d", resp.StatusCode)
			return
		}
		f, err := os.Create(b.cfg.ProfileOut)
		if err != nil {
			b.logf("profile: %v", err)
			return
		}
		n, err := io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			b.logf("profile: %v", err)
			return
		}
		b.logf("profile: %d bytes written to %s", n, b.cfg.ProfileOut)
	}()
	return done
}
