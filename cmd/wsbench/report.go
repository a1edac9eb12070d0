package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"sort"
	"strings"
	"time"
)

// result is the run's figures; it is printed as the RESULT line. Rates are per second,
// latencies in milliseconds, CPU in percent of one core.
type result struct {
	Scenario   string   `json:"scenario"`
	Server     string   `json:"server"` // gateway or centrifuge
	Mode       string   `json:"mode"`   // gateway: the clients' subprotocol, v1 or raw; centrifuge: plain or history N
	Conns      int      `json:"conns"`
	Targets    []string `json:"targets"`
	API        string   `json:"api,omitempty"`
	Via        string   `json:"via,omitempty"`
	Rate       int      `json:"target_rate,omitempty"`
	Duration   float64  `json:"duration_s"`
	Publishers int      `json:"publishers,omitempty"`
	Batch      int      `json:"batch,omitempty"`
	Window     int      `json:"window,omitempty"`
	Payload    int      `json:"payload_bytes"`
	GOMAXPROCS int      `json:"generator_gomaxprocs"`

	Connected       int     `json:"connected"`
	ConnectErrors   int     `json:"connect_errors"`
	ConnectSeconds  float64 `json:"connect_s"`
	ConnectRate     float64 `json:"connects_per_s"`
	ConnectOtherCPU float64 `json:"connect_other_cpu_pct"`

	RSSBeforeBytes         int64   `json:"server_rss_before_bytes,omitempty"`
	RSSAfterBytes          int64   `json:"server_rss_after_bytes,omitempty"`
	RSSPerConnBytes        float64 `json:"server_rss_per_conn_bytes,omitempty"`
	RSSPerConnSettledBytes float64 `json:"server_rss_per_conn_settled_bytes,omitempty"`
	RedisMemBeforeBytes    int64   `json:"redis_used_memory_before_bytes,omitempty"`
	RedisMemAfterBytes     int64   `json:"redis_used_memory_after_bytes,omitempty"`
	RedisBytesPerUser      float64 `json:"redis_bytes_per_user,omitempty"`
	StillOpen              int     `json:"still_open,omitempty"`

	SendSeconds       float64   `json:"send_s,omitempty"`
	Sent              int64     `json:"sent"`
	Accepted          int64     `json:"accepted"`
	SendErrors        int64     `json:"send_errors"`
	Expected          int64     `json:"expected_deliveries"`
	Received          int64     `json:"received"`
	Lost              int64     `json:"lost"`
	Duplicated        int64     `json:"duplicated"`
	Reordered         int64     `json:"reordered"`
	Offline           int64     `json:"reported_offline"`
	ClosedDuringRun   int64     `json:"closed_during_run"`
	CloseCodes        string    `json:"close_codes,omitempty"`
	BadFrames         int64     `json:"bad_frames,omitempty"`
	PushRate          float64   `json:"pushes_per_s"`
	DeliveryRate      float64   `json:"deliveries_per_s"`
	GeneratorLagMaxMs float64   `json:"generator_lag_max_ms,omitempty"`
	Latency           *latency  `json:"latency_ms,omitempty"`
	LatencyPerNode    []latency `json:"latency_ms_per_node,omitempty"`

	ServerCPU []float64 `json:"server_cpu_pct,omitempty"`
	RedisCPU  float64   `json:"redis_cpu_pct,omitempty"`
	// RedisCommands is INFO commandstats over the measured phase and its drain.
	RedisCommands map[string]redisCmd `json:"redis_commands,omitempty"`
	GeneratorCPU  float64             `json:"generator_cpu_pct,omitempty"`
	// OtherCPU is what other processes used meanwhile (the machine may be shared): a run with
	// a large value measured them too.
	OtherCPU       float64 `json:"other_cpu_pct"`
	OtherCPUBefore float64 `json:"other_cpu_pct_before,omitempty"`

	Drops  *dropsResult  `json:"drops,omitempty"`
	Memory *memoryResult `json:"memory,omitempty"`

	SendErrorSamples []string `json:"send_error_samples,omitempty"`
	Error            string   `json:"error,omitempty"`
}

type latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

func (r *result) fill(cfg *config) {
	r.Scenario, r.Mode, r.Conns, r.Targets, r.API = cfg.Scenario, cfg.Mode, cfg.Conns, cfg.Targets, cfg.API
	r.Duration, r.Payload, r.GOMAXPROCS = cfg.Duration.Seconds(), cfg.Payload, runtime.GOMAXPROCS(0)
	r.Server = cfg.Server
	if cfg.Server == srvCentrifuge {
		r.Mode = "plain"
		if cfg.CentrifugeHistory > 0 {
			r.Mode = fmt.Sprintf("history %d", cfg.CentrifugeHistory)
		}
	}
	switch cfg.Scenario {
	case scLatency, scCrossNode:
		r.Via, r.Rate, r.Publishers = cfg.Via, cfg.Rate, cfg.Publishers
	case scThroughput, scBroadcast:
		r.Publishers, r.Window = cfg.Publishers, cfg.Window
	case scBatch, scBulk:
		r.Publishers, r.Window, r.Batch = cfg.Publishers, cfg.Window, cfg.BatchSize
	}
}

func latencyOf(s *histSnapshot) latency {
	return latency{
		Count: s.total, Mean: ms(s.Mean()),
		P50: ms(s.Quantile(0.50)), P90: ms(s.Quantile(0.90)), P99: ms(s.Quantile(0.99)),
		P999: ms(s.Quantile(0.999)), Max: ms(s.Max()),
	}
}

// ms rounds to microseconds.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func (b *bench) closeCodes() string {
	var codes map[int]int
	if b.apps != nil {
		codes = b.apps.closeCodes()
	} else {
		b.fleet.codeMu.Lock()
		defer b.fleet.codeMu.Unlock()
		codes = b.fleet.closeCodes
	}
	var parts []string
	for code, n := range codes {
		name := fmt.Sprint(code)
		switch code {
		case -1:
			name = "no-close-frame"
		case closeSilent:
			name = "silence-timeout"
		}
		parts = append(parts, fmt.Sprintf("%s×%d", name, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// summary prints the human summary and the RESULT line.
func (b *bench) summary(w io.Writer, r *result) {
	if b.fleet != nil {
		r.CloseCodes = b.closeCodes()
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("== %s: %d connections (%s %s) to %s", r.Scenario, r.Conns, r.Server, r.Mode, strings.Join(r.Targets, ", "))
	p("connect:     %d open, %d failed, %.2fs, %.0f connections/s", r.Connected, r.ConnectErrors, r.ConnectSeconds, r.ConnectRate)
	if m := r.Memory; m != nil {
		p("redis:       %.0f B per idle connected user (%s clients)", m.IdleBytesPerUser, m.Mode)
		if m.StoredUsers > 0 && m.StoredPerUser > 0 {
			p("stored:      %.0f B per stored message (%d users × %d messages, nobody connected; %.0f B right after the pushes)",
				m.StoredBytesPerMsg, m.StoredUsers, m.StoredPerUser, m.StoredFreshPerMsg)
		}
		if m.HistoryPerUser > 0 {
			p("history:     %.0f B per active user with %d acknowledged messages (%.0f B right after the pushes)",
				m.HistoryBytesPerUser, m.HistoryPerUser, m.HistoryFreshPerUser)
		}
	} else if r.Scenario == scIdle {
		if r.RSSAfterBytes > 0 {
			p("server RSS:  %.1f MiB → %.1f MiB: %.0f B per connection (%.0f B right after connecting)",
				float64(r.RSSBeforeBytes)/(1<<20), float64(r.RSSAfterBytes)/(1<<20), r.RSSPerConnBytes, r.RSSPerConnSettledBytes)
		}
		if r.RedisMemAfterBytes > 0 {
			p("redis:       used_memory %.1f MiB → %.1f MiB: %.0f B per user",
				float64(r.RedisMemBeforeBytes)/(1<<20), float64(r.RedisMemAfterBytes)/(1<<20), r.RedisBytesPerUser)
		}
		p("still open:  %d", r.StillOpen)
	} else {
		p("sent:        %d requests in %.2fs, %d accepted, %d errors: %.0f pushes/s", r.Sent, r.SendSeconds, r.Accepted, r.SendErrors, r.PushRate)
		if r.Rate > 0 {
			p("rate:        target %d/s, reached %.0f/s (worst generator lag behind schedule %.1f ms)", r.Rate, r.PushRate, r.GeneratorLagMaxMs)
		}
		p("deliveries:  %d expected, %d received: %.0f deliveries/s", r.Expected, r.Received, r.DeliveryRate)
		p("errors:      lost %d, duplicated %d, reordered %d, reported offline %d, connections closed %d %s",
			r.Lost, r.Duplicated, r.Reordered, r.Offline, r.ClosedDuringRun, r.CloseCodes)
		if l := r.Latency; l != nil && l.Count > 0 {
			p("latency:     p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms (mean %.2f, %d samples)",
				l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Count)
		}
		for i, l := range r.LatencyPerNode {
			p("  node %d:    p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d samples)", i, l.P50, l.P99, l.Max, l.Count)
		}
		var cpu []string
		for i, c := range r.ServerCPU {
			cpu = append(cpu, fmt.Sprintf("gateway[%d] %.0f%%", i, c))
		}
		if r.RedisCPU > 0 {
			cpu = append(cpu, fmt.Sprintf("redis %.0f%%", r.RedisCPU))
		}
		cpu = append(cpu, fmt.Sprintf("wsbench %.0f%%", r.GeneratorCPU), fmt.Sprintf("other processes %.0f%%", r.OtherCPU))
		p("cpu:         %s (of one core, during the send phase)", strings.Join(cpu, ", "))
		if len(r.RedisCommands) > 0 {
			p("redis cmds:  %s", formatCommands(r.RedisCommands))
		}
		if d := r.Drops; d != nil {
			p("drops:       %s clients, %d of %d frozen (silence timeout %.1fs), %d reconnects, %d gap/reset events",
				d.Mode, d.Frozen, d.FrozenPlanned, d.SilenceS, d.Reconnects, d.GapsResets)
			p("delivered:   %.3f%% of %d accepted pushes (%d sent): missing %d, duplicates %d, seq mismatches %d, unaccepted but delivered %d",
				d.DeliveredPct, d.Accepted, d.Sent, d.Missing, d.Duplicates, d.Mismatched, d.Unaccepted)
			p("wire:        %d pushes seen crossing the wire, %d frames carried one a second time", d.OnWire, d.WireDuplicates)
			p("replay:      %d reconnects caught up on %d messages: p50 %.1f ms, p99 %.1f ms, max %.1f ms; %d had nothing pending; freeze → reconnected p50 %.0f ms, max %.0f ms",
				d.Replays, d.Replayed, d.ReplayP50, d.ReplayP99, d.ReplayMax, d.NothingPending, d.OutageP50, d.OutageMax)
		}
		for _, e := range r.SendErrorSamples {
			p("send error:  %s", e)
		}
	}
	if r.Error != "" {
		p("ERROR:       %s", r.Error)
	}
	js, _ := json.Marshal(r)
	p("RESULT %s", js)
}
