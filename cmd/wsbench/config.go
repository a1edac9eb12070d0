package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Scenarios, each described in usageText.
const (
	scIdle       = "idle"
	scLatency    = "latency"
	scThroughput = "throughput"
	scBroadcast  = "broadcast"
	scBatch      = "batch"
	scBulk       = "bulk"
	scCrossNode  = "cross-node"
	scDrops      = "drops"
	scMemory     = "memory"
)

var scenarios = []string{scIdle, scLatency, scThroughput, scBroadcast, scBatch, scBulk, scCrossNode, scDrops, scMemory}

// Kinds of server (--server).
const (
	srvGateway    = "gateway"
	srvCentrifuge = "centrifuge"
)

// Client modes of the drops and memory scenarios.
const (
	modeV1  = "v1"
	modeRaw = "raw"
)

// config is every setting of one run. parseFlags fills it and checks it in one place.
type config struct {
	Scenario string

	// Where the gateway is. Targets are the nodes the clients connect to (ws://host:port);
	// API is the node the pushes go through (http://host:port).
	Targets []string
	API     string
	Redis   string // host:port or redis:// URL, for --via redis, INFO memory and INFO cpu

	Conns           int
	DialConcurrency int
	DialTimeout     time.Duration
	SourceAddrs     []net.IP
	UserPrefix      string
	Dev             bool
	JWTSecret       string
	APIKey          string
	KeyPrefix       string

	Rate       int
	Duration   time.Duration
	Publishers int
	Via        string
	BatchSize  int
	Window     int
	Payload    int
	Probe      bool
	Settle     time.Duration
	Drain      time.Duration
	Deadline   time.Duration
	Progress   time.Duration
	WaitQuiet  time.Duration
	Autogroup  int

	ServerPIDs []int
	RedisPID   int

	SVG          string
	ProfileURL   string
	ProfileOut   string
	SpawnGateway string
	GatewayArgs  string
	SpawnRedis   string
	Nodes        int

	// Server is the kind of server under test: srvGateway, or srvCentrifuge (the reference
	// peer of bench/centrifuge-peer, a push server on Centrifugo's engine; centrifuge.go).
	Server            string
	SpawnCentrifuge   string
	CentrifugeHistory int
	GatewayCPU        string
	RedisCPU          string

	// drops and memory: clients of the client package.
	Mode        string
	Frozen      float64
	Silence     time.Duration
	FreezeHold  time.Duration
	History     int
	Stored      int
	StoredUsers int
	ExpireWait  time.Duration
}

const usageText = `Usage: wsbench --scenario NAME [flags]

wsbench opens --conns WebSocket connections to a wsgateway (distinct users u0..uN-1, client
side spread over --source-addrs so ports do not run out), waits until every connection is
subscribed (a probe push to every user must arrive), runs one scenario, prints a progress line
every second, a human summary, and one machine-readable line "RESULT {json}".

Scenarios:
  idle        connect rate; server RSS per connection (/proc/<pid>/status VmRSS of
              --server-pids, before and after connecting); Redis used_memory per user (--redis)
  latency     open loop: --rate pushes/s for --duration, over HTTP or straight into Redis
              (--via http|redis|fcall). Every payload carries a sequence number and its
              *scheduled* send time, so a gateway (or generator) that falls behind shows it in
              the latency instead of hiding it. p50/p90/p99/max, lost, duplicated, reordered,
              and the rate actually reached
  throughput  --publishers concurrent HTTP publishers, single-user pushes as fast as possible
              for --duration: pushes/s accepted and deliveries/s
  broadcast   --publishers concurrent HTTP publishers of /api/v1/broadcast, at most --window
              broadcasts not yet delivered everywhere: deliveries/s to all --conns
  batch       --publishers concurrent HTTP publishers of pushes with user_ids lists of
              --batch users: pushes/s and deliveries/s
  bulk        --publishers concurrent HTTP publishers of bulk pushes ({"messages": […]}) of
              --batch different messages, each to its own user: requests/s (pushes/s) and
              messages/s (deliveries/s)
  cross-node  like latency, with the clients spread over several --target nodes and the
              pushes going through --api, another node
  drops       clients of the Go client package (--mode v1: wsgateway.v1 with resume and acks;
              raw: no subprotocol); --rate pushes/s to random users for --duration while a
              --frozen fraction of the clients freezes, each once at a random moment: its
              socket stops forwarding both ways without closing (reads wait, writes vanish, the
              gateway sees no FIN until --freeze-hold later). Each frozen client notices the
              silence (--silence), reconnects on a fresh socket and resumes. Delivered fraction
              of the pushes answered 200, missing, duplicates (at the application and on the
              wire), seq mismatches, and the replay delay p50/p99 (reconnect → every push sent
              before it has arrived)
  memory      Redis used_memory per idle connected user (client package, --mode), then per
              stored message (--stored messages to each of --stored-users users nobody
              holds), then per active user with acknowledged history (--history messages to
              every connected user); each read right after the pushes and again once the
              gateway's own push ids expired (--expire-wait)

Each connection's messages come from one ordered publisher stream (a user belongs to one
publisher), so "reordered" and "duplicated" are checked per connection and publisher; "lost" is
expected deliveries (recipients the API reported online) minus distinct ones received.

With --server centrifuge (or --spawn-centrifuge) the server is the reference peer of
bench/centrifuge-peer, a push server on Centrifugo's engine: the clients speak its protocol
(connect command, answered {} pings, publications carrying the same payloads), pushes go to its
POST /api/v1/push, and idle, latency and throughput measure it exactly as the gateway.
cmd/wsbench/compare.sh runs both side by side.

Every loop is bounded: the run stops by itself at --deadline whatever happens.

Flags:
`

// parseFlags reads args into a validated config; --help prints the usage to out.
func parseFlags(args []string, out io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("wsbench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)

	var targets, sources, pids, rate, publishers, window string
	fs.StringVar(&c.Scenario, "scenario", "", "one of "+strings.Join(scenarios, ", ")+" (required)")
	fs.StringVar(&targets, "target", "ws://127.0.0.1:8080", "comma-separated WebSocket base URLs of the nodes the clients connect to (/ws is appended)")
	fs.StringVar(&c.API, "api", "", "HTTP base URL of the node pushes go through (default: the first --target; cross-node: required unless --spawn-gateway)")
	fs.StringVar(&c.Redis, "redis", "", "Redis host:port or redis:// URL: INFO memory/cpu figures, and the publisher for --via redis|fcall")
	fs.IntVar(&c.Conns, "conns", 1000, "WebSocket connections, one user each (u0..uN-1)")
	fs.IntVar(&c.DialConcurrency, "dial-concurrency", 256, "handshakes in flight while connecting")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", 10*time.Second, "bound of one handshake (each connection is tried up to 3 times)")
	fs.StringVar(&sources, "source-addrs", "127.0.0.2-127.0.0.50", "client source addresses, a range a.b.c.d-a.b.c.e or a comma list; empty = kernel's choice")
	fs.StringVar(&c.UserPrefix, "user-prefix", "u", "user ids are this prefix plus the connection index")
	fs.BoolVar(&c.Dev, "dev", false, "the gateway runs with --dev: connect with ?user_id= instead of a token")
	fs.StringVar(&c.JWTSecret, "jwt-secret", "wsbench-secret-of-at-least-32-bytes", "HS256 secret to sign client tokens with (unless --dev; the gateway wants 32 bytes or more)")
	fs.StringVar(&c.APIKey, "api-key", "k", "bearer key for /api/* (empty: send none)")
	fs.StringVar(&c.KeyPrefix, "key-prefix", "ws:", "the gateway's Redis key prefix (for --via redis|fcall)")
	fs.StringVar(&rate, "rate", "", "latency, cross-node: pushes per second (default 2000)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "length of the measured phase (idle: how long the connections stay idle before the second RSS reading)")
	fs.StringVar(&publishers, "publishers", "", "concurrent publishers (throughput 64, batch 8, broadcast 1, latency/cross-node 256 open-loop workers)")
	fs.StringVar(&c.Via, "via", "http", "latency, cross-node: http (POST /api/v1/push), redis (PUBLISH to the user's channel) or fcall (FCALL wsgateway_push)")
	fs.IntVar(&c.BatchSize, "batch", 100, "batch: users per push (user_ids); bulk: messages per request (at most 1000)")
	fs.StringVar(&window, "window", "", "most messages sent but not yet delivered to all their recipients before publishers wait; 0 = no limit (default: broadcast 8, others 0)")
	fs.IntVar(&c.Payload, "payload", 100, "approximate payload size in bytes (the JSON \"data\" delivered to clients)")
	fs.BoolVar(&c.Probe, "probe", true, "before measuring, push one probe to every user and wait until all arrived (proves every connection is subscribed end to end)")
	fs.DurationVar(&c.Settle, "settle", 2*time.Second, "pause after connecting before the baseline readings and the scenario")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "after the last send, wait at most this long for outstanding deliveries")
	fs.DurationVar(&c.Deadline, "deadline", 0, "hard deadline of the whole run (default: duration + settle + drain + 3 min)")
	fs.DurationVar(&c.Progress, "progress", time.Second, "progress line interval")
	fs.IntVar(&c.Autogroup, "autogroup-nice", 0, "set the nice value of wsbench's scheduler autogroup (Linux, root; run under setsid so the group holds only the benchmark and what it spawns); 0 = leave it")
	fs.DurationVar(&c.WaitQuiet, "wait-quiet", 0, "before measuring, wait up to this long until other processes use < 15% of a core for 3 s (a shared machine); 0 = don't wait")
	fs.StringVar(&pids, "server-pids", "", "comma-separated gateway PIDs for RSS (VmRSS) and CPU readings")
	fs.IntVar(&c.RedisPID, "redis-pid", 0, "redis-server PID for its RSS/CPU (optional; --redis gives used_memory and used_cpu)")
	fs.StringVar(&c.SVG, "svg", "", "write the latency distribution (histogram + CDF) as a self-contained SVG to this file")
	fs.StringVar(&c.ProfileURL, "server-profile", "", "pprof CPU profile URL of a gateway (e.g. http://127.0.0.1:6060/debug/pprof/profile), fetched over the measured phase (idle: over --duration from the first connect)")
	fs.StringVar(&c.ProfileOut, "server-profile-out", "cpu.pprof", "where --server-profile writes the profile")
	fs.StringVar(&c.SpawnGateway, "spawn-gateway", "", "start the gateway(s) from this command line (binary plus optional arguments; gateway flags are appended), stop them at the end")
	fs.StringVar(&c.GatewayArgs, "gateway-args", "", "extra flags for spawned gateways (space-separated)")
	fs.StringVar(&c.SpawnRedis, "spawn-redis", "", "start this redis-server on a free port (--save \"\" --appendonly no), stop it at the end")
	fs.StringVar(&c.Server, "server", "", "the server under test: gateway, or centrifuge (the reference peer in bench/centrifuge-peer: its client protocol and push API; idle, latency and throughput only); default gateway, centrifuge with --spawn-centrifuge")
	fs.StringVar(&c.SpawnCentrifuge, "spawn-centrifuge", "", "start the centrifuge peer from this command line (binary plus optional arguments; -addr and -redis are appended), pinned like a gateway (--gateway-cpu), stop it at the end")
	fs.IntVar(&c.CentrifugeHistory, "centrifuge-history", 0, "with --spawn-centrifuge: keep this many publications per user with recovery on (the peer's -history), the match for wsgateway.v1; 0 = plain pub/sub, the match for raw mode")
	fs.IntVar(&c.Nodes, "nodes", 0, "gateway nodes to spawn (default 1; cross-node 3: clients on all but the first, pushes through the first)")
	fs.StringVar(&c.GatewayCPU, "gateway-cpu", "0", "taskset CPU list for spawned gateways (empty: no pinning)")
	fs.StringVar(&c.RedisCPU, "redis-cpu", "1", "taskset CPU list for a spawned redis-server (empty: no pinning)")
	var silence string
	fs.StringVar(&c.Mode, "mode", "", "v1: the clients offer wsgateway.v1 (drops, memory: the client package's, which ack and resume; the other scenarios: wsbench's readers, which never ack); raw: no subprotocol (default drops, memory v1, others raw)")
	fs.Float64Var(&c.Frozen, "frozen", 0.2, "drops: fraction of the clients that freeze once during the run")
	fs.StringVar(&silence, "silence", "", "drops, memory: the clients' silence timeout (client.Options.SilenceTimeout; default drops 3s, memory the client's 35s)")
	fs.DurationVar(&c.FreezeHold, "freeze-hold", 40*time.Second, "drops: how long a frozen socket stays open after its client dropped it (the run's end closes it sooner)")
	fs.IntVar(&c.History, "history", 50, "memory: messages pushed to (and acknowledged by) every connected user")
	fs.IntVar(&c.Stored, "stored", 50, "memory: messages stored for each user nobody holds")
	fs.IntVar(&c.StoredUsers, "stored-users", 1000, "memory: users nobody holds who get --stored messages")
	fs.DurationVar(&c.ExpireWait, "expire-wait", 65*time.Second, "memory: after the pushes of a phase, wait this long before the second reading (the gateway keeps its own push ids a minute); 0 = one reading")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, usageText)
			fs.SetOutput(out)
			fs.PrintDefaults()
			return nil, flag.ErrHelp
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if c.Targets, err = parseURLs(targets, "ws", "wss"); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if c.SourceAddrs, err = parseAddrs(sources); err != nil {
		return nil, fmt.Errorf("source-addrs: %w", err)
	}
	if c.ServerPIDs, err = parseInts(pids); err != nil {
		return nil, fmt.Errorf("server-pids: %w", err)
	}
	c.Rate = defaultInt(rate, 2000)
	c.Publishers = defaultInt(publishers, map[string]int{
		scIdle: 1, scThroughput: 64, scBatch: 8, scBulk: 8, scBroadcast: 1, scLatency: 256, scCrossNode: 256, scDrops: 256, scMemory: 1,
	}[c.Scenario])
	c.Window = defaultInt(window, map[string]int{scBroadcast: 8}[c.Scenario])
	if c.Mode == "" {
		c.Mode = modeRaw
		if c.Scenario == scDrops || c.Scenario == scMemory {
			c.Mode = modeV1
		}
	}
	c.Silence = 35 * time.Second
	if c.Scenario == scDrops {
		c.Silence = 3 * time.Second
	}
	if silence != "" {
		if c.Silence, err = time.ParseDuration(silence); err != nil {
			return nil, fmt.Errorf("silence: %w", err)
		}
	}
	if c.Server == "" {
		c.Server = srvGateway
		if c.SpawnCentrifuge != "" {
			c.Server = srvCentrifuge
		}
	}
	if c.Server == srvCentrifuge {
		c.Dev = true // the peer takes the user from ?user_id=
	}
	if c.Nodes == 0 {
		c.Nodes = 1
		if c.Scenario == scCrossNode {
			c.Nodes = 3
		}
	}
	if c.Deadline == 0 {
		c.Deadline = c.Duration + c.Settle + c.Drain + 3*time.Minute
		if c.Scenario == scMemory {
			c.Deadline += 2*c.ExpireWait + 2*time.Minute
		}
	}
	return c, c.validate()
}

func (c *config) validate() error {
	if !slices.Contains(scenarios, c.Scenario) {
		return fmt.Errorf("scenario: want one of %s, got %q", strings.Join(scenarios, ", "), c.Scenario)
	}
	for _, r := range []struct {
		flag        string
		v, min, max int
	}{
		{"conns", c.Conns, 1, 1_000_000},
		{"rate", c.Rate, 1, 1_000_000},
		{"publishers", c.Publishers, 1, 4096},
		{"batch", c.BatchSize, 1, 1000},
		{"payload (bytes)", c.Payload, 60, 60000},
		{"autogroup-nice", c.Autogroup, -20, 19},
		{"nodes", c.Nodes, 1, 16},
	} {
		if r.v < r.min || r.v > r.max {
			return fmt.Errorf("%s: must be %d..%d, got %d", r.flag, r.min, r.max, r.v)
		}
	}
	switch {
	case c.DialConcurrency < 1:
		return errors.New("dial-concurrency: must be positive")
	case c.Duration <= 0 || c.Duration > time.Hour:
		return fmt.Errorf("duration: must be in (0, 1h], got %s", c.Duration)
	case c.Via != "http" && c.Via != "redis" && c.Via != "fcall":
		return fmt.Errorf("via: want http, redis or fcall, got %q", c.Via)
	case (c.Via != "http") && c.Redis == "" && c.SpawnRedis == "":
		return fmt.Errorf("via %s needs --redis or --spawn-redis", c.Via)
	case c.Window < 0:
		return errors.New("window: must not be negative")
	case c.Deadline <= 0:
		return errors.New("deadline: must be positive")
	case c.Progress <= 0:
		return errors.New("progress: must be positive")
	case c.Scenario == scCrossNode && c.SpawnGateway == "" && c.API == "":
		return errors.New("cross-node: give --api (the node pushes go through) or --spawn-gateway")
	case c.Scenario == scCrossNode && c.SpawnGateway != "" && c.Nodes < 2:
		return errors.New("cross-node: --nodes must be at least 2")
	case (c.Scenario == scBatch || c.Scenario == scBulk) && c.BatchSize*c.Publishers > c.Conns:
		return fmt.Errorf("%s: --batch × --publishers (%d) must not exceed --conns (%d): each user belongs to one publisher", c.Scenario, c.BatchSize*c.Publishers, c.Conns)
	case (c.Scenario == scThroughput) && c.Publishers > c.Conns:
		return errors.New("throughput: --publishers must not exceed --conns: each user belongs to one publisher")
	case c.Server != srvGateway && c.Server != srvCentrifuge:
		return fmt.Errorf("server: want gateway or centrifuge, got %q", c.Server)
	case c.Server == srvCentrifuge && c.Scenario != scIdle && c.Scenario != scLatency && c.Scenario != scThroughput:
		return fmt.Errorf("server centrifuge: only the idle, latency and throughput scenarios, not %s", c.Scenario)
	case c.Server == srvCentrifuge && (c.Via != "http" || c.SpawnGateway != ""):
		return errors.New("server centrifuge: pushes go over HTTP (--via http), and --spawn-centrifuge starts it, not --spawn-gateway")
	case c.SpawnCentrifuge != "" && c.Server != srvCentrifuge:
		return errors.New("spawn-centrifuge: needs --server centrifuge")
	case c.CentrifugeHistory < 0 || c.CentrifugeHistory > 0 && c.SpawnCentrifuge == "":
		return errors.New("centrifuge-history: not negative, and only with --spawn-centrifuge")
	case c.Mode != modeV1 && c.Mode != modeRaw:
		return fmt.Errorf("mode: want v1 or raw, got %q", c.Mode)
	case c.Frozen < 0 || c.Frozen > 1:
		return fmt.Errorf("frozen: must be a fraction 0..1, got %g", c.Frozen)
	case c.Silence <= 0 || c.FreezeHold <= 0:
		return errors.New("silence, freeze-hold: must be positive")
	case c.Scenario == scDrops && c.Duration < c.Silence+3*time.Second:
		return fmt.Errorf("drops: --duration must be at least --silence + 3s, so frozen clients return while pushes flow")
	case c.Scenario == scDrops && c.Via != "http":
		return errors.New("drops: pushes go over HTTP (the answer carries the seq)")
	case c.History < 0 || c.Stored < 0 || c.StoredUsers < 0 || c.ExpireWait < 0:
		return errors.New("history, stored, stored-users, expire-wait: must not be negative")
	}
	if c.API != "" {
		if _, err := parseURLs(c.API, "http", "https"); err != nil {
			return fmt.Errorf("api: %w", err)
		}
	}
	return nil
}

// parseURLs splits a comma list of URLs whose scheme must be one of schemes.
func parseURLs(s string, schemes ...string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimRight(strings.TrimSpace(f), "/")
		if f == "" {
			continue
		}
		u, err := url.Parse(f)
		if err != nil || u.Host == "" || (u.Scheme != schemes[0] && u.Scheme != schemes[1]) {
			return nil, fmt.Errorf("%q is not a %s:// or %s:// URL", f, schemes[0], schemes[1])
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	return out, nil
}

// parseAddrs reads "127.0.0.2-127.0.0.50" (the last byte varies) or "a,b,c".
func parseAddrs(s string) ([]net.IP, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if from, to, ok := strings.Cut(s, "-"); ok {
		a, b := net.ParseIP(from).To4(), net.ParseIP(to).To4()
		if a == nil || b == nil || a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] > b[3] {
			return nil, fmt.Errorf("%q is not a range a.b.c.x-a.b.c.y", s)
		}
		var out []net.IP
		for i := int(a[3]); i <= int(b[3]); i++ {
			out = append(out, net.IPv4(a[0], a[1], a[2], byte(i)))
		}
		return out, nil
	}
	var out []net.IP
	for _, f := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(f))
		if ip == nil {
			return nil, fmt.Errorf("%q is not an IP address", f)
		}
		out = append(out, ip)
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a PID", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// defaultInt parses s, or returns def when s is empty; a bad number becomes -1 so validate
// names it.
func defaultInt(s string, def int) int {
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// httpBase turns ws://h:p into http://h:p.
func httpBase(ws string) string {
	if rest, ok := strings.CutPrefix(ws, "wss://"); ok {
		return "https://" + rest
	}
	return "http://" + strings.TrimPrefix(ws, "ws://")
}
