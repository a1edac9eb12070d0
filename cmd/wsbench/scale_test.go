package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	gwconfig "github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

func TestDeltaWire(t *testing.T) {
	var h histogram
	for i := 1; i <= 100; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	first := h.snapshot()
	for i := 1; i <= 50; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	d := deltaWire(h.snapshot(), first)
	if d.Total != 50 {
		t.Fatalf("delta holds %d samples, want 50", d.Total)
	}
	// Two processes' deltas merge into one distribution.
	var merged histSnapshot
	merged.add(d)
	merged.add(d)
	if merged.total != 100 {
		t.Fatalf("merged %d samples, want 100", merged.total)
	}
	// The delta's maximum is its highest bucket's upper edge, not the cumulative 100 ms.
	if m := merged.Max(); m < 50*time.Microsecond || m > 51*time.Microsecond {
		t.Errorf("max %v, want 50µs within a bucket", m)
	}
	if p := merged.Quantile(0.5); p < 25*time.Microsecond || p > 26*time.Microsecond {
		t.Errorf("p50 %v, want 25µs within a bucket", p)
	}
	if all := deltaWire(h.snapshot(), nil); all.Total != 150 || all.Max != uint64(100*time.Millisecond) {
		t.Errorf("full snapshot: %d samples, max %d", all.Total, all.Max)
	}
}

func TestScaleUsers(t *testing.T) {
	s := &scale{cfg: &scaleConfig{Procs: 6}, maxPer: 17}
	for _, level := range []int{1, 6, 7, 50, 100} {
		// The users of a level are exactly the first perProc clients of every process.
		want := map[int]bool{}
		for p := range 6 {
			for i := range s.perProc(level, p) {
				want[p*17+i] = true
			}
		}
		got := map[int]bool{}
		for r := range level {
			got[s.userOf(r)] = true
		}
		if len(got) != level || len(want) != level {
			t.Fatalf("level %d: %d distinct users, processes hold %d", level, len(got), len(want))
		}
		for u := range got {
			if !want[u] {
				t.Errorf("level %d: user %d is not connected", level, u)
			}
		}
	}
}

func TestParseScaleFlags(t *testing.T) {
	cfg, err := parseScaleFlags([]string{"--gateway-redis", "--redis-url redis://x:1", "--levels", "10,20"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Nodes != 6 || cfg.Procs != 6 || cfg.Rate != 10000 || len(cfg.Levels) != 2 || cfg.ClientBin == "" {
		t.Errorf("defaults: %+v", cfg)
	}
	for _, args := range [][]string{
		{},
		{"--gateway-redis", "x", "--levels", "20,10"},
		{"--gateway-redis", "x", "--via", "fcall"},
		{"--gateway-redis", "x", "--via", "pigeon"},
	} {
		if _, err := parseScaleFlags(args, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

func TestScaleSVG(t *testing.T) {
	var rs []scaleResult
	for _, label := range []string{"redis", "cluster"} {
		for _, n := range []int{10000, 50000, 100000} {
			rs = append(rs, scaleResult{Label: label, Conns: n,
				Broadcasts: []scaleBroadcast{{LastMs: float64(n) / 100}},
				Push:       &scalePush{Latency: latency{P50: 2, P99: float64(n) / 1000}}})
		}
	}
	for _, in := range [][]scaleResult{rs, nil} {
		var out bytes.Buffer
		if err := writeScaleSVG(&out, in, "title <&>"); err != nil {
			t.Fatal(err)
		}
		svg := out.String()
		if err := xml.Unmarshal(out.Bytes(), new(struct{ XMLName xml.Name })); err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		if in != nil && (!strings.Contains(svg, "cluster: push p99") || !strings.Contains(svg, "100k")) {
			t.Errorf("chart lacks a series or the 100k tick:\n%s", svg)
		}
	}
}

// TestScaleClient drives a scale-client over its pipe protocol against a real gateway.
func TestScaleClient(t *testing.T) {
	const secret = "wsbench-secret-of-at-least-32-bytes"
	n := gwtest.Start(t, "scale-test", gwtest.Options{
		Config:       func(c *gwconfig.Config) { c.JWTSecret = secret },
		Ready:        10 * time.Second,
		ShutdownWait: 10 * time.Second,
		LogTail:      20,
	})
	cfg := &config{Mode: modeRaw, UserPrefix: "u", DialTimeout: 10 * time.Second, Conns: 20,
		DialConcurrency: 4, Targets: []string{"ws://" + n.Addr}, JWTSecret: secret, Payload: 100}
	base := time.Now()
	sc := newScaleClient(cfg, base, 100) // users u100..u119
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan int)
	go func() {
		code := sc.serve(inR, outW)
		sc.closeFrom(0)
		outW.Close()
		done <- code
	}()
	dec := json.NewDecoder(outR)
	call := func(line string) clientStats {
		t.Helper()
		if _, err := io.WriteString(inW, line+"\n"); err != nil {
			t.Fatal(err)
		}
		var st clientStats
		if err := dec.Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}

	if st := call("connect 10"); st.Err != "" || st.Open != 10 || st.Connected != 10 {
		t.Fatalf("connect 10: %+v", st)
	}
	call("measure 1")
	call("hist")
	body := `{"user_id":"u105","data":` + string(appendPayload(nil, payload{pub: 2, seq: 1, ts: int64(time.Since(base))}, 100)) + `}`
	resp, err := http.Post(n.URL("/api/v1/push"), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push: HTTP %d", resp.StatusCode)
	}
	wait.For(t, 10*time.Second, func() bool { return call("stats").Received == 1 }, "u105 never got its push")
	if st := call("hist"); st.Hist == nil || st.Hist.Total != 1 {
		t.Errorf("hist after one push: %+v", st.Hist)
	}
	if st := call("hist"); st.Hist.Total != 0 {
		t.Errorf("second hist is not a delta: %+v", st.Hist)
	}
	if st := call("close 4"); st.Open != 4 || st.Closed != 0 {
		t.Errorf("close 4: %+v (closes the client made are not losses)", st)
	}
	if st := call("connect 8"); st.Err == "" {
		t.Errorf("connect after close accepted: %+v", st)
	}
	if st := call("nonsense"); st.Err == "" {
		t.Error("unknown command accepted")
	}
	if _, err := io.WriteString(inW, "quit\n"); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 0 {
		t.Errorf("serve returned %d", code)
	}
}
