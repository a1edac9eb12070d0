package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/freeport"
)

// "wsbench scale" measures many connections over several gateway nodes and several client
// processes (BENCHMARKS.md, "100,000 connections across 6 nodes"): it starts --nodes gateways
// against a Redis that already runs (scale.sh starts one server or a Cluster) and --procs
// scale-client processes, connects --levels connections one level after the other, reading
// gateway RSS and Redis used_memory at each, then, from the highest level down (closing
// connections in between), sends broadcasts to everyone and an open-loop stream of pushes to
// random users, and prints one "RESULT {json}" per level.

// runSub runs the subcommands of the scale run; ok is false when args name none.
func runSub(args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	switch args[0] {
	case "scale":
		return runScale(args[1:], stdout, stderr), true
	case "scale-client":
		return runScaleClient(args[1:], os.Stdin, stdout, stderr), true
	case "scale-chart":
		return runScaleChart(args[1:], stdout, stderr), true
	}
	return 0, false
}

type scaleConfig struct {
	Label        string
	Gateway      string
	GatewayRedis string // the gateways' Redis flags
	RedisAddrs   []string
	RedisPIDs    []int
	Nodes        int
	Procs        int
	Levels       []int
	Rate         int
	Duration     time.Duration
	SmallDur     time.Duration
	Broadcasts   int
	Workers      int
	Via          string
	Payload      int
	Settle       time.Duration
	Drain        time.Duration
	Deadline     time.Duration
	Dir          string
	ClientBin    string
	JWTSecret    string
	APIKey       string
	DialConc     int
}

func parseScaleFlags(args []string, out io.Writer) (*scaleConfig, error) {
	c := &scaleConfig{}
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.SetOutput(out)
	var redisAddrs, redisPIDs, levels string
	fs.StringVar(&c.Label, "label", "", "name of this setup in the results (e.g. redis, cluster)")
	fs.StringVar(&c.Gateway, "gateway", "bin/gateway", "gateway binary")
	fs.StringVar(&c.GatewayRedis, "gateway-redis", "", `the gateways' Redis flags, e.g. "--redis-url redis://127.0.0.1:6379" or "--redis-cluster a,b,c" (required)`)
	fs.StringVar(&redisAddrs, "redis-addrs", "", "host:port of every Redis master, for INFO used_memory (summed)")
	fs.StringVar(&redisPIDs, "redis-pids", "", "redis-server PIDs, for their CPU")
	fs.IntVar(&c.Nodes, "nodes", 6, "gateway processes")
	fs.IntVar(&c.Procs, "procs", 6, "scale-client processes (each holds at most --levels' highest / procs connections)")
	fs.StringVar(&levels, "levels", "10000,50000,100000", "connection counts, ascending")
	fs.IntVar(&c.Rate, "rate", 10000, "pushes per second to random users (open loop)")
	fs.DurationVar(&c.Duration, "duration", 60*time.Second, "length of the push phase at the highest level")
	fs.DurationVar(&c.SmallDur, "small-duration", 20*time.Second, "length of the push phase at the other levels")
	fs.IntVar(&c.Broadcasts, "broadcasts", 3, "broadcasts to everyone at each level, one after the other")
	fs.IntVar(&c.Workers, "workers", 256, "open-loop workers, each with its own HTTP connection; worker w pushes through node w mod nodes")
	fs.StringVar(&c.Via, "via", "http", "pushes: http (POST /api/v1/push, worker w through node w mod nodes) or fcall (FCALL wsgateway_push straight into the Redis of --redis-addrs)")
	fs.IntVar(&c.Payload, "payload", 100, "payload size in bytes")
	fs.DurationVar(&c.Settle, "settle", 5*time.Second, "pause after connecting a level before the memory readings")
	fs.DurationVar(&c.Drain, "drain", 20*time.Second, "after the last push, wait at most this long for the deliveries")
	fs.DurationVar(&c.Deadline, "deadline", 40*time.Minute, "hard deadline of the whole run")
	fs.StringVar(&c.Dir, "dir", "", "directory for the gateway and client logs (default: a temporary one, removed at the end)")
	fs.StringVar(&c.ClientBin, "client-bin", "", "the wsbench binary the client processes run (default: this one)")
	fs.StringVar(&c.JWTSecret, "jwt-secret", "wsbench-secret-of-at-least-32-bytes", "HS256 secret")
	fs.StringVar(&c.APIKey, "api-key", "k", "API key")
	fs.IntVar(&c.DialConc, "dial-concurrency", 64, "handshakes in flight per client process")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	for _, f := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || (len(c.Levels) > 0 && n <= c.Levels[len(c.Levels)-1]) {
			return nil, fmt.Errorf("levels: want ascending positive counts, got %q", levels)
		}
		c.Levels = append(c.Levels, n)
	}
	if c.RedisPIDs, err = parseInts(redisPIDs); err != nil {
		return nil, fmt.Errorf("redis-pids: %w", err)
	}
	for _, a := range strings.Split(redisAddrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.RedisAddrs = append(c.RedisAddrs, a)
		}
	}
	switch {
	case c.GatewayRedis == "":
		return nil, errors.New("gateway-redis: required")
	case c.Nodes < 1 || c.Procs < 1 || c.Workers < 1 || c.Broadcasts < 0:
		return nil, errors.New("nodes, procs, workers: must be positive")
	case c.Rate < 1 || c.Duration <= 0 || c.SmallDur <= 0:
		return nil, errors.New("rate, duration, small-duration: must be positive")
	case c.Via != "http" && c.Via != "fcall":
		return nil, fmt.Errorf("via: want http or fcall, got %q", c.Via)
	case c.Via == "fcall" && len(c.RedisAddrs) == 0:
		return nil, errors.New("via fcall: give --redis-addrs")
	case c.Payload < 60:
		return nil, errors.New("payload: at least 60 bytes")
	}
	if c.ClientBin == "" {
		if c.ClientBin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// scale is one scale run.
type scale struct {
	cfg     *scaleConfig
	out     io.Writer
	base    time.Time
	dir     string
	gws     []*spawned
	apis    []string // http://host:port of every node
	kids    []*child
	maxPer  int // users reserved per client process: process p holds u<p*maxPer>...
	rdbs    []*redis.Client
	pusher  redis.UniversalClient // --via fcall: one server or the Cluster
	bcastNo uint64
	seqs    []uint64 // the push workers' last sequence numbers
}

func runScale(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseScaleFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "wsbench scale: "+err.Error())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Deadline)
	defer cancel()
	s := &scale{cfg: cfg, out: stdout, base: time.Now()}
	err = s.run(ctx)
	s.stop()
	if err != nil {
		fmt.Fprintln(stderr, "wsbench scale: "+err.Error())
		return 1
	}
	return 0
}

func (s *scale) logf(format string, args ...any) {
	fmt.Fprintf(s.out, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func (s *scale) run(ctx context.Context) error {
	cfg := s.cfg
	s.dir = cfg.Dir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "wsbench-scale-")
		if err != nil {
			return err
		}
		s.dir = d
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	for _, a := range cfg.RedisAddrs {
		rdb, err := newRedis(a, 2)
		if err != nil {
			return err
		}
		s.rdbs = append(s.rdbs, rdb)
	}
	if cfg.Via == "fcall" {
		// More than one address makes a Cluster client, which sends each FCALL to the shard
		// of its keys.
		s.pusher = redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.RedisAddrs, PoolSize: cfg.Workers, DisableIdentity: true})
	}
	if err := s.startGateways(ctx); err != nil {
		return err
	}
	top := cfg.Levels[len(cfg.Levels)-1]
	s.maxPer = (top + cfg.Procs - 1) / cfg.Procs
	if err := s.startClients(ctx); err != nil {
		return err
	}
	// Stop the children when the deadline passes: their pipes close and every call returns.
	go func() { <-ctx.Done(); s.killClients() }()

	results := make(map[int]*scaleResult, len(cfg.Levels))
	rss0, mem0 := totalRSS(s.gwPIDs()), s.redisMemory(ctx)
	s.logf("%s: %d gateways up, RSS %.1f MiB, Redis used_memory %.1f MiB; %d client processes",
		cfg.Label, cfg.Nodes, mib(rss0), mib(mem0), cfg.Procs)
	for _, level := range cfg.Levels {
		r, err := s.connectLevel(ctx, level, rss0, mem0)
		if err != nil {
			return err
		}
		results[level] = r
	}
	if err := s.probe(ctx, top); err != nil {
		return err
	}
	for i := len(cfg.Levels) - 1; i >= 0; i-- {
		level := cfg.Levels[i]
		if err := s.closeTo(ctx, level); err != nil {
			return err
		}
		r := results[level]
		dur := cfg.SmallDur
		if i == len(cfg.Levels)-1 {
			dur = cfg.Duration
		}
		err := s.traffic(ctx, r, level, dur)
		if err != nil {
			r.Error = err.Error()
		}
		line, _ := json.Marshal(r)
		fmt.Fprintf(s.out, "RESULT %s\n", line)
		if err != nil {
			return err
		}
	}
	return nil
}

// perProc is how many of the first level users client process p holds: user r of the level
// (0 ≤ r < level) is client r/procs of process r%procs.
func (s *scale) perProc(level, p int) int {
	n := level / s.cfg.Procs
	if p < level%s.cfg.Procs {
		n++
	}
	return n
}

// userOf names user r of a level.
func (s *scale) userOf(r int) int {
	return (r%s.cfg.Procs)*s.maxPer + r/s.cfg.Procs
}

func (s *scale) startGateways(ctx context.Context) error {
	cfg := s.cfg
	for i := range cfg.Nodes {
		port, err := freeport.Port()
		if err != nil {
			return err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		argv := append([]string{cfg.Gateway}, strings.Fields(cfg.GatewayRedis)...)
		argv = append(argv, "--addr", addr, "--node-id", "scale-"+strconv.Itoa(i), "--log-level", "warn",
			"--shutdown-grace", "10s", "--jwt-secret", cfg.JWTSecret, "--api-keys", cfg.APIKey)
		g, err := spawn("gateway-"+strconv.Itoa(i), s.dir, "", argv)
		if err != nil {
			return err
		}
		s.gws = append(s.gws, g)
		base := "http://" + addr
		if err := waitFor(ctx, 30*time.Second, func() bool { return httpOK(base + "/readyz") }); err != nil {
			return fmt.Errorf("gateway %d not ready: %v\n%s", i, err, g.tail())
		}
		s.apis = append(s.apis, base)
	}
	return nil
}

func (s *scale) gwPIDs() []int {
	var out []int
	for _, g := range s.gws {
		out = append(out, g.pid())
	}
	return out
}

// stop ends the client processes (they close their connections), then the gateways.
func (s *scale) stop() {
	var wg sync.WaitGroup
	for _, k := range s.kids {
		wg.Go(func() {
			_ = k.in.Close() // EOF: the child closes its connections and exits
			done := make(chan struct{})
			go func() { _ = k.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				_ = k.cmd.Process.Kill()
				<-done
			}
		})
	}
	wg.Wait()
	for _, g := range s.gws {
		wg.Go(func() { g.stop(20 * time.Second) })
	}
	wg.Wait()
	for _, r := range s.rdbs {
		r.Close()
	}
	if s.pusher != nil {
		s.pusher.Close()
	}
	if s.cfg.Dir == "" && s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// redisMemory sums used_memory over the Redis masters (-1 when unknown).
func (s *scale) redisMemory(ctx context.Context) int64 {
	if len(s.rdbs) == 0 {
		return -1
	}
	var tot int64
	for _, r := range s.rdbs {
		m, err := redisUsedMemory(ctx, r)
		if err != nil {
			return -1
		}
		tot += m
	}
	return tot
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
