package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wsgateway/wsgateway/internal/ctxsleep"
	"github.com/wsgateway/wsgateway/internal/keys"
)

// scaleResult is one level of a scale run, printed as its RESULT line. Memory is read right
// after the level was connected (idle connections, before any traffic); the traffic figures
// come later, when the run comes back down to this level.
type scaleResult struct {
	Label  string `json:"label"`
	Conns  int    `json:"conns"`
	Nodes  int    `json:"nodes"`
	Procs  int    `json:"client_procs"`
	Redis  int    `json:"redis_masters"`
	Levels []int  `json:"levels"`

	ConnectSeconds float64 `json:"connect_s"`
	ConnectRate    float64 `json:"connects_per_s"`
	ConnectErrors  int64   `json:"connect_errors"`

	GatewayRSS        int64   `json:"gateway_rss_bytes"`
	GatewayRSSPerNode []int64 `json:"gateway_rss_per_node_bytes"`
	GatewayRSSPerConn float64 `json:"gateway_rss_per_conn_bytes"`
	RedisMem          int64   `json:"redis_used_memory_bytes"`
	RedisPerConn      float64 `json:"redis_bytes_per_conn"`

	IdleCPU    cpuShares        `json:"idle_cpu_pct"` // over the settle pause after connecting
	Open       int              `json:"open"`         // when the traffic began
	Broadcasts []scaleBroadcast `json:"broadcasts"`
	Push       *scalePush       `json:"push,omitempty"`

	// After the traffic: users the gateway reported offline although their connection was
	// open, and the connections the gateways ended during the whole run so far.
	OfflineAfter int            `json:"offline_after"`
	Ended        int64          `json:"ended_by_gateway"`
	CloseCodes   map[string]int `json:"close_codes,omitempty"`

	Load  string `json:"loadavg"`
	Error string `json:"error,omitempty"`
}

type scaleBroadcast struct {
	Expected int     `json:"expected"`
	Received int64   `json:"received"`
	LastMs   float64 `json:"last_ms"` // send → the last recipient has it
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
}

type scalePush struct {
	Via       string  `json:"via"`
	Rate      int     `json:"target_rate"`
	Duration  float64 `json:"duration_s"`
	Sent      int64   `json:"sent"`
	Accepted  int64   `json:"accepted"`
	Errors    int64   `json:"send_errors"`
	Offline   int64   `json:"reported_offline"`
	Expected  int64   `json:"expected_deliveries"`
	Received  int64   `json:"received"`
	Lost      int64   `json:"lost"`
	Dup       int64   `json:"duplicated"`
	Reordered int64   `json:"reordered"`
	Closed    int64   `json:"closed_during_run"`
	PushRate  float64 `json:"pushes_per_s"`
	LagMaxMs  float64 `json:"generator_lag_max_ms"`
	Latency   latency `json:"latency_ms"`

	CPU        cpuShares `json:"cpu_pct"`
	ErrSamples []string  `json:"send_error_samples,omitempty"`
}

// cpuShares is CPU use in % of one core: every gateway together, Redis (--redis-pids), the
// client processes, this process (the pushes' generator), and everything else on the machine
// (push phase only).
type cpuShares struct {
	Gateways  float64 `json:"gateways"`
	Redis     float64 `json:"redis"`
	Clients   float64 `json:"clients"`
	Generator float64 `json:"generator"`
	Other     float64 `json:"other,omitempty"`
}

// cpuPIDs are the gateways, Redis, the client processes and this one, in the order
// cpuShares reads them.
func (s *scale) cpuPIDs() []int {
	pids := append(s.gwPIDs(), s.cfg.RedisPIDs...)
	for _, k := range s.kids {
		pids = append(pids, k.cmd.Process.Pid)
	}
	return append(pids, os.Getpid())
}

func (s *scale) cpuShares(pct []float64) cpuShares {
	var c cpuShares
	ng, nr := len(s.gws), len(s.cfg.RedisPIDs)
	for i, v := range pct {
		switch {
		case i < ng:
			c.Gateways += v
		case i < ng+nr:
			c.Redis += v
		case i < len(pct)-1:
			c.Clients += v
		default:
			c.Generator = v
		}
	}
	return c
}

// connectLevel opens connections until level are open and reads the memory figures.
func (s *scale) connectLevel(ctx context.Context, level int, rss0, mem0 int64) (*scaleResult, error) {
	cfg := s.cfg
	r := &scaleResult{Label: cfg.Label, Conns: level, Nodes: cfg.Nodes, Procs: cfg.Procs,
		Redis: len(cfg.RedisAddrs), Levels: cfg.Levels}
	s.logf("connecting up to %d", level)
	start := time.Now()
	// A client process answers nothing else while it connects: no progress lines here.
	sts, err := s.callAll(ctx, func(p int) string { return "connect " + strconv.Itoa(s.perProc(level, p)) })
	tot, _ := sum(sts)
	took := time.Since(start)
	prev := 0
	for _, l := range cfg.Levels {
		if l < level {
			prev = l
		}
	}
	r.ConnectSeconds, r.ConnectErrors = took.Seconds(), tot.Errors
	r.ConnectRate = float64(level-prev) / took.Seconds()
	if err != nil {
		return nil, fmt.Errorf("connect %d: %w", level, err)
	}
	s.logf("%d open (%d new in %.1fs, %.0f/s)", tot.Open, level-prev, took.Seconds(), r.ConnectRate)
	if tot.Open != level {
		return nil, fmt.Errorf("connect %d: only %d open", level, tot.Open)
	}
	// The settle pause doubles as the idle reading: what the connections cost at rest
	// (the gateways' pings every 25 s and the answers to them).
	cpu := newCPUMeter(s.cpuPIDs())
	ctxsleep.Sleep(ctx, cfg.Settle)
	r.IdleCPU = s.cpuShares(cpu.percent())
	for _, pid := range s.gwPIDs() {
		b, _ := rssBytes(pid)
		r.GatewayRSSPerNode = append(r.GatewayRSSPerNode, b)
		r.GatewayRSS += b
	}
	r.GatewayRSSPerConn = float64(r.GatewayRSS-rss0) / float64(level)
	if r.RedisMem = s.redisMemory(ctx); r.RedisMem >= 0 && mem0 >= 0 {
		r.RedisPerConn = float64(r.RedisMem-mem0) / float64(level)
	}
	s.logf("memory at %d: gateways %.1f MiB (%.0f B/conn), Redis %.1f MiB (%.0f B/conn)", level,
		mib(r.GatewayRSS), r.GatewayRSSPerConn, mib(r.RedisMem), r.RedisPerConn)
	return r, s.checkGateways()
}

func (s *scale) checkGateways() error {
	for _, g := range s.gws {
		if g.exited() {
			return fmt.Errorf("%s exited:\n%s", g.name, g.tail())
		}
	}
	return nil
}

// progress prints line(totals) every second until done is closed.
func (s *scale) progress(ctx context.Context, done chan struct{}, line func(clientStats) string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			sts, err := s.callAll(ctx, func(int) string { return "stats" })
			if err != nil {
				return
			}
			tot, _ := sum(sts)
			s.logf("  %s", line(tot))
		}
	}
}

// probe pushes one message (publisher 0) to each of the level's users and waits until every
// open connection has it: every connection is subscribed end to end.
func (s *scale) probe(ctx context.Context, level int) error {
	offline, err := s.pushAll(level)
	if err != nil {
		return err
	}
	if offline > 0 {
		return fmt.Errorf("probe push: %d connected users were reported offline", offline)
	}
	var tot clientStats
	err = waitFor(ctx, 60*time.Second, func() bool {
		sts, err := s.callAll(ctx, func(int) string { return "stats" })
		tot, _ = sum(sts)
		return err == nil && tot.Probes >= int64(level)
	})
	if err != nil {
		return fmt.Errorf("probe: %d of %d connections got it: %v", tot.Probes, level, err)
	}
	s.logf("probe: all %d connections received a push", tot.Probes)
	return nil
}

// pushAll pushes a probe message (publisher 0) to each of the level's users, 1,000 per
// request, and returns how many the gateway reported offline: not subscribed on any node.
func (s *scale) pushAll(level int) (offline int, err error) {
	h, err := newHTTPConn(s.apis[0], s.cfg.APIKey, 30*time.Second)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	data := appendPayload(nil, payload{}, s.cfg.Payload)
	var body []byte
	for start := 0; start < level; start += 1000 {
		body = append(body[:0], `{"user_ids":[`...)
		for r := start; r < min(start+1000, level); r++ {
			if r > start {
				body = append(body, ',')
			}
			body = append(body, `"u`...)
			body = strconv.AppendInt(body, int64(s.userOf(r)), 10)
			body = append(body, '"')
		}
		body = append(body, `],"data":`...)
		body = append(body, data...)
		body = append(body, '}')
		status, resp, err := h.do("POST", "/api/v1/push", body)
		if err != nil || status != http.StatusOK {
			return offline, fmt.Errorf("probe push: HTTP %d %s %v", status, resp, err)
		}
		offline += bytes.Count(resp, []byte(`"online":false`))
	}
	return offline, nil
}

// closeTo closes the clients beyond the level's. Connections the gateways ended before are
// not reopened: the level's figures count the ones still open.
func (s *scale) closeTo(ctx context.Context, level int) error {
	sts, err := s.callAll(ctx, func(p int) string { return "close " + strconv.Itoa(s.perProc(level, p)) })
	if err != nil {
		return err
	}
	if tot, _ := sum(sts); tot.Open != level {
		s.logf("after closing down to %d: %d open (%d ended by the other side so far, close codes %v)",
			level, tot.Open, tot.Closed, tot.CloseCodes)
	}
	ctxsleep.Sleep(ctx, s.cfg.Settle)
	return nil
}

// traffic runs the broadcasts and the push phase of one level.
func (s *scale) traffic(ctx context.Context, r *scaleResult, level int, dur time.Duration) error {
	sts, err := s.callAll(ctx, func(int) string { return "measure 1" })
	if err != nil {
		return err
	}
	tot, _ := sum(sts)
	r.Open = tot.Open
	for range s.cfg.Broadcasts {
		b, err := s.broadcast(ctx, tot.Open)
		if err != nil {
			return err
		}
		r.Broadcasts = append(r.Broadcasts, b)
		s.logf("broadcast to %d: %d received, the last after %.1f ms (p50 %.1f ms)", level, b.Received, b.LastMs, b.P50Ms)
		ctxsleep.Sleep(ctx, time.Second)
	}
	p, err := s.pushes(ctx, level, dur)
	r.Push = p
	r.Load = loadavg()
	if err == nil {
		// Were all the users still subscribed after all this? (A node rebuilds its pub/sub
		// connection when its own probe is late, and subscribes every user again.)
		r.OfflineAfter, err = s.pushAll(level)
		sts, serr := s.callAll(ctx, func(int) string { return "stats" })
		tot, _ := sum(sts)
		r.Ended, r.CloseCodes = tot.Closed, tot.CloseCodes
		err = errors.Join(err, serr)
	}
	if p != nil {
		s.logf("pushes at %d: %d accepted (%.0f/s), lost %d, dup %d; p50 %.2f p99 %.2f max %.2f ms; lag max %.0f ms; CPU gateways %.0f%% Redis %.0f%% clients %.0f%% generator %.0f%% others %.0f%%",
			level, p.Accepted, p.PushRate, p.Lost, p.Dup, p.Latency.P50, p.Latency.P99, p.Latency.Max, p.LagMaxMs,
			p.CPU.Gateways, p.CPU.Redis, p.CPU.Clients, p.CPU.Generator, p.CPU.Other)
	}
	return err
}

// broadcast sends one broadcast (publisher 1) through the first node and waits until each of
// the open connections has it; the last arrival is the latest delivery any client process
// saw, since nothing else is sent meanwhile.
func (s *scale) broadcast(ctx context.Context, open int) (scaleBroadcast, error) {
	out := scaleBroadcast{Expected: open}
	before, err := s.callAll(ctx, func(int) string { return "hist" })
	if err != nil {
		return out, err
	}
	tot0, _ := sum(before)
	h, err := newHTTPConn(s.apis[0], s.cfg.APIKey, 30*time.Second)
	if err != nil {
		return out, err
	}
	defer h.Close()
	if status, _, err := h.do("GET", "/healthz", nil); err != nil || status != http.StatusOK {
		return out, fmt.Errorf("broadcast: healthz %d %v", status, err)
	}
	s.bcastNo++
	sent := time.Since(s.base)
	body := append([]byte(`{"data":`), appendPayload(nil, payload{pub: 1, seq: s.bcastNo, ts: int64(sent)}, s.cfg.Payload)...)
	body = append(body, '}')
	if status, resp, err := h.do("POST", "/api/v1/broadcast", body); err != nil || status != http.StatusOK {
		return out, fmt.Errorf("broadcast: HTTP %d %s %v", status, resp, err)
	}
	var tot clientStats
	_ = waitFor(ctx, 60*time.Second, func() bool {
		sts, err := s.callAll(ctx, func(int) string { return "stats" })
		tot, _ = sum(sts)
		return err != nil || tot.Received-tot0.Received >= int64(open)
	})
	sts, err := s.callAll(ctx, func(int) string { return "hist" })
	if err != nil {
		return out, err
	}
	tot, hs := sum(sts)
	out.Received = tot.Received - tot0.Received
	out.LastMs = ms(time.Duration(tot.LastDelivery) - sent)
	out.P50Ms, out.P99Ms = ms(hs.Quantile(0.5)), ms(hs.Quantile(0.99))
	return out, nil
}

// scaleKeys are the gateways' keys: they run with the default --key-prefix.
var scaleKeys = keys.Prefix("ws:")

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
