package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsgateway/wsgateway/internal/ctxsleep"
	"github.com/wsgateway/wsgateway/internal/testutil/freeport"
)

// spawned is a child process wsbench started (redis-server or a gateway) and stops at the end.
type spawned struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// spawn starts argv, pinned to cpus with taskset when cpus is not empty. Its output goes to a
// log file in dir.
func spawn(name, dir, cpus string, argv []string) (*spawned, error) {
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &spawned{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); lf.Close(); close(s.done) }()
	return s, nil
}

func (s *spawned) pid() int { return s.cmd.Process.Pid }

func (s *spawned) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace, then SIGKILLs.
func (s *spawned) stop(grace time.Duration) {
	if s.exited() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// tail returns the last lines of the child's log, for error messages.
func (s *spawned) tail() string {
	b, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}

// environment is what runs the gateway side: spawned processes, or what the flags named.
type environment struct {
	dir   string
	procs []*spawned
	redis *spawned
	gws   []*spawned
}

// start spawns redis-server and the gateways when asked and points cfg at them.
func (e *environment) start(ctx context.Context, cfg *config, logf func(string, ...any)) error {
	if cfg.SpawnRedis == "" && cfg.SpawnGateway == "" && cfg.SpawnCentrifuge == "" {
		return nil
	}
	dir, err := os.MkdirTemp("", "wsbench-")
	if err != nil {
		return err
	}
	e.dir = dir
	if cfg.SpawnRedis != "" {
		port, err := freeport.Port()
		if err != nil {
			return err
		}
		r, err := spawn("redis", dir, cfg.RedisCPU, []string{cfg.SpawnRedis,
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--maxclients", "10000"})
		if err != nil {
			return err
		}
		e.redis = r
		e.procs = append(e.procs, r)
		cfg.Redis = "127.0.0.1:" + strconv.Itoa(port)
		cfg.RedisPID = r.pid()
		if err := waitFor(ctx, 10*time.Second, func() bool {
			c, err := net.DialTimeout("tcp", cfg.Redis, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		}); err != nil {
			return fmt.Errorf("redis-server did not come up: %v\n%s", err, r.tail())
		}
		logf("spawned redis-server pid %d on %s (cpus %q)", r.pid(), cfg.Redis, cfg.RedisCPU)
	}
	if cfg.SpawnGateway == "" && cfg.SpawnCentrifuge == "" {
		return nil
	}
	if cfg.Redis == "" {
		return fmt.Errorf("spawn-gateway, spawn-centrifuge: need --redis or --spawn-redis")
	}
	if cfg.SpawnCentrifuge != "" {
		return e.startCentrifuge(ctx, cfg, logf)
	}
	redisURL := cfg.Redis
	if !strings.Contains(redisURL, "://") {
		redisURL = "redis://" + redisURL
	}
	var bases []string
	cfg.ServerPIDs = nil
	for i := 0; i < cfg.Nodes; i++ {
		port, err := freeport.Port()
		if err != nil {
			return err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		argv := strings.Fields(cfg.SpawnGateway)
		argv = append(argv, "--addr", addr, "--redis-url", redisURL, "--node-id", "bench-"+strconv.Itoa(i),
			"--log-level", "warn", "--shutdown-grace", "10s")
		if cfg.Dev {
			argv = append(argv, "--dev")
		} else {
			argv = append(argv, "--jwt-secret", cfg.JWTSecret, "--api-keys", cfg.APIKey)
		}
		argv = append(argv, strings.Fields(cfg.GatewayArgs)...)
		g, err := spawn("gateway-"+strconv.Itoa(i), dir, cfg.GatewayCPU, argv)
		if err != nil {
			return err
		}
		e.gws = append(e.gws, g)
		e.procs = append(e.procs, g)
		cfg.ServerPIDs = append(cfg.ServerPIDs, g.pid())
		base := "http://" + addr
		if err := waitFor(ctx, 20*time.Second, func() bool { return httpOK(base + "/readyz") }); err != nil {
			return fmt.Errorf("gateway %d not ready: %v\n%s", i, err, g.tail())
		}
		bases = append(bases, base)
		logf("spawned gateway %d pid %d on %s (cpus %q)", i, g.pid(), addr, cfg.GatewayCPU)
	}
	// cross-node: pushes through the first node, clients on the others.
	cfg.API = bases[0]
	clientNodes := bases
	if cfg.Scenario == scCrossNode {
		clientNodes = bases[1:]
	}
	cfg.Targets = nil
	for _, b := range clientNodes {
		cfg.Targets = append(cfg.Targets, "ws://"+strings.TrimPrefix(b, "http://"))
	}
	return nil
}

// startCentrifuge spawns the centrifuge peer (README in bench/centrifuge-peer) as the one
// server node, pinned like a gateway.
func (e *environment) startCentrifuge(ctx context.Context, cfg *config, logf func(string, ...any)) error {
	port, err := freeport.Port()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	redisAddr := cfg.Redis // the peer takes host:port
	if u, err := url.Parse(cfg.Redis); err == nil && u.Host != "" {
		redisAddr = u.Host
	}
	argv := append(strings.Fields(cfg.SpawnCentrifuge), "-addr", addr, "-redis", redisAddr)
	if cfg.CentrifugeHistory > 0 {
		argv = append(argv, "-history", strconv.Itoa(cfg.CentrifugeHistory))
	}
	g, err := spawn("centrifuge", e.dir, cfg.GatewayCPU, argv)
	if err != nil {
		return err
	}
	e.gws = append(e.gws, g)
	e.procs = append(e.procs, g)
	cfg.ServerPIDs = []int{g.pid()}
	base := "http://" + addr
	// It listens once its Redis broker runs, and has no readiness route: any answer will do.
	if err := waitFor(ctx, 20*time.Second, func() bool { return httpStatus(base+"/") > 0 }); err != nil {
		return fmt.Errorf("centrifuge peer not ready: %v\n%s", err, g.tail())
	}
	logf("spawned centrifuge peer pid %d on %s, history %d (cpus %q)", g.pid(), addr, cfg.CentrifugeHistory, cfg.GatewayCPU)
	cfg.API = base
	cfg.Targets = []string{"ws://" + addr}
	return nil
}

// stop ends the gateways first (they drain to Redis), then Redis.
func (e *environment) stop() {
	for _, g := range e.gws {
		g.stop(15 * time.Second)
	}
	if e.redis != nil {
		e.redis.stop(5 * time.Second)
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// check reports a spawned process that died.
func (e *environment) check() error {
	for _, p := range e.procs {
		if p.exited() {
			return fmt.Errorf("%s exited:\n%s", p.name, p.tail())
		}
	}
	return nil
}

func httpOK(u string) bool { return httpStatus(u) == http.StatusOK }

// httpStatus GETs u and returns the status, 0 when there was no answer.
func httpStatus(u string) int {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond every 50 ms until it holds, total passes or ctx ends.
func waitFor(ctx context.Context, total time.Duration, cond func() bool) error {
	deadline := time.Now().Add(total)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", total)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		ctxsleep.Sleep(ctx, 50*time.Millisecond)
	}
}
