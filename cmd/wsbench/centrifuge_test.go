package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
)

func TestMain(m *testing.M) { os.Exit(gwbin.After(m).Run()) }

func TestCentrifugeObjects(t *testing.T) {
	type obj struct {
		kind centrifugeKind
		data string
	}
	pl := string(appendPayload(nil, payload{pub: 3, seq: 7, ts: 99}, 60))
	for _, tc := range []struct {
		frame string
		want  []obj
	}{
		{`{}`, []obj{{cfPing, ""}}},
		{`{"id":1,"connect":{"client":"c","version":"0.40.1","subs":{"user:u1":{}},"ping":25,"pong":true}}`, []obj{{cfReply, ""}}},
		{`{"id":1,"error":{"code":101,"message":"unauthorized"}}`, []obj{{cfError, ""}}},
		// Several objects in one frame, a publication with history (offset, epoch) among them.
		{`{"push":{"channel":"user:u1","pub":{"data":` + pl + `,"offset":3}}}` + "\n{}\n" +
			`{"push":{"channel":"user:u1","pub":{"offset":4,"data":` + pl + `}}}`,
			[]obj{{cfPublish, pl}, {cfPing, ""}, {cfPublish, pl}}},
		{`{"push":{"channel":"user:u1","join":{"info":{}}}}`, []obj{{cfOther, ""}}},
		{`{"id":2,"rpc":{}}`, []obj{{cfOther, ""}}},
	} {
		var got []obj
		centrifugeObjects([]byte(tc.frame), func(kind centrifugeKind, data, _ []byte) {
			if kind == cfPublish {
				p, ok := parsePayload(data)
				if !ok || p != (payload{pub: 3, seq: 7, ts: 99}) {
					t.Errorf("%s: payload %+v, %v", tc.frame, p, ok)
				}
				data = data[:len(pl)]
			}
			got = append(got, obj{kind, string(data)})
		})
		if len(got) != len(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.frame, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: object %d is %v, want %v", tc.frame, i, got[i], tc.want[i])
			}
		}
	}
}

// TestCentrifugeFleet runs a fleet connection against a fake peer: it connects only once the
// connect reply came (a publication in the same frame counts), answers {} pings with {}, and
// takes the payloads out of the publications of a multi-object frame.
func TestCentrifugeFleet(t *testing.T) {
	pl := func(pub int, seq uint64) string {
		return string(appendPayload(nil, payload{pub: pub, seq: seq, ts: 1}, 60))
	}
	pong := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != centrifugePath || r.URL.Query().Get("user_id") != "u0" {
			http.Error(w, "bad path or user", http.StatusBadRequest)
			return
		}
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, m, err := ws.ReadMessage(); err != nil || string(m) != string(centrifugeConnect) {
			t.Errorf("connect command %q, %v", m, err)
			return
		}
		push := func(p string) string { return `{"push":{"channel":"user:u0","pub":{"data":` + p + `,"offset":1}}}` }
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{"client":"c","ping":25,"pong":true}}`+"\n"+push(pl(0, 0))))
		_ = ws.WriteMessage(websocket.TextMessage, []byte(push(pl(1, 1))+"\n{}\n"+push(pl(1, 2))))
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Errorf("no pong: %v", err)
			return
		}
		pong <- string(m)
		_, _, _ = ws.ReadMessage() // until the client closes
	}))
	defer srv.Close()
	cfg, err := parseFlags([]string{"--scenario", "latency", "--server", "centrifuge", "--conns", "1",
		"--source-addrs", "", "--target", "ws://" + strings.TrimPrefix(srv.URL, "http://")}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(cfg, time.Now(), &counters{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.connect(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer f.close(ctx)
	select {
	case m := <-pong:
		if m != "{}" {
			t.Errorf("ping answered with %q", m)
		}
	case <-ctx.Done():
		t.Fatal("no pong")
	}
	if err := waitFor(ctx, 5*time.Second, func() bool { return f.cnt.received.Load() == 2 }); err != nil {
		t.Fatalf("received %d of 2: %v", f.cnt.received.Load(), err)
	}
	if p, b, d := f.cnt.probes.Load(), f.cnt.badFrames.Load(), f.cnt.dup.Load(); p != 1 || b != 0 || d != 0 {
		t.Errorf("probes %d, bad frames %d, duplicates %d; want 1, 0, 0", p, b, d)
	}
}

func TestParseFlagsServer(t *testing.T) {
	for _, args := range [][]string{
		{"--scenario", "broadcast", "--server", "centrifuge"},
		{"--scenario", "latency", "--server", "centrifuge", "--via", "redis", "--redis", "x:1"},
		{"--scenario", "idle", "--server", "nats"},
		{"--scenario", "idle", "--spawn-centrifuge", "x", "--server", "gateway"},
		{"--scenario", "idle", "--centrifuge-history", "100"},
	} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	c, err := parseFlags([]string{"--scenario", "throughput", "--spawn-centrifuge", "peer -x", "--redis", "x:1"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Server != srvCentrifuge || !c.Dev {
		t.Errorf("--spawn-centrifuge: server %q, dev %v; want centrifuge, true", c.Server, c.Dev)
	}
}

// TestCompareTiny is the comparison in miniature: a short throughput run against a spawned
// gateway and against the spawned centrifuge peer (built from bench/centrifuge-peer), both on
// one real redis-server; each must deliver every push it accepted.
func TestCompareTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway and the centrifuge peer")
	}
	rs := redistest.Start(t)
	gw := gwbin.Path(t)
	peer := filepath.Join(t.TempDir(), "centrifuge-peer")
	build := exec.Command("go", "build", "-o", peer, ".")
	build.Dir = filepath.Join("..", "..", "bench", "centrifuge-peer")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the peer: %v\n%s", err, out)
	}
	for _, side := range [][]string{
		{"--spawn-gateway", gw, "--mode", "v1"},
		{"--spawn-centrifuge", peer, "--centrifuge-history", "10"},
	} {
		args := append([]string{"--scenario", "throughput", "--conns", "40", "--publishers", "4",
			"--duration", "1s", "--settle", "100ms", "--progress", "10s", "--redis", rs.URL(),
			"--gateway-cpu", "", "--redis-cpu", ""}, side...)
		var out bytes.Buffer
		if code := run(args, &out, &out); code != 0 {
			t.Fatalf("%v: exit %d\n%s", side, code, out.String())
		}
		var r result
		_, line, _ := strings.Cut(out.String(), "RESULT ")
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%v: RESULT: %v\n%s", side, err, out.String())
		}
		if r.Connected != 40 || r.Accepted == 0 || r.Lost != 0 || r.Received != r.Expected || r.Expected != r.Accepted {
			t.Errorf("%v: connected %d, accepted %d, expected %d, received %d, lost %d\n%s",
				side, r.Connected, r.Accepted, r.Expected, r.Received, r.Lost, out.String())
		}
		if r.Latency == nil || r.Latency.Count == 0 {
			t.Errorf("%v: no latency samples", side)
		}
	}
}
