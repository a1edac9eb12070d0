package web_test

// Tests of wsgateway.js on its own: the module is imported by a page of the real gateway and
// pointed at a fake WebSocket server that misbehaves on request (closes with a given code,
// stays silent, sends binary), so that every branch of the reconnect policy is exercised.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// fakeServer is a WebSocket endpoint whose behaviour each connection picks with its query:
//
//	case=NAME   groups the connections of one client (required)
//	close=CODE  close with CODE right away, or after=MS milliseconds
//	silent=1    read everything, answer nothing (a dead link as the client sees it)
//	drop=1      cut the TCP connection without a close frame (the browser reports 1006)
//	binary=1    send one binary frame, then idle
type fakeServer struct {
	srv    *httptest.Server
	origin string // the page's origin; other origins are refused, as the gateway does
	stop   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	arrived map[string][]time.Time // case → arrival of each connection
	queries map[string][]string    // case → raw query of each connection
	pings   map[string]int         // case → text "ping" frames received
	conns   map[*websocket.Conn]struct{}
}

func startFake(t *testing.T, origin string) *fakeServer {
	t.Helper()
	f := &fakeServer{
		origin:  origin,
		stop:    make(chan struct{}),
		arrived: make(map[string][]time.Time),
		queries: make(map[string][]string),
		pings:   make(map[string]int),
		conns:   make(map[*websocket.Conn]struct{}),
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		close(f.stop)
		f.mu.Lock()
		for c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.srv.Close()
		f.wg.Wait() // hijacked connections are not waited for by httptest
	})
	return f
}

// url is the endpoint for one client, in http:// form: the client must turn it into ws://.
func (f *fakeServer) url(query string) string { return f.srv.URL + "/ws?" + query }

func (f *fakeServer) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.arrived[name])
}

func (f *fakeServer) times(name string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.arrived[name])
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	f.wg.Add(1)
	defer f.wg.Done()
	q := r.URL.Query()
	name := q.Get("case")
	f.mu.Lock()
	f.arrived[name] = append(f.arrived[name], time.Now())
	f.queries[name] = append(f.queries[name], r.URL.RawQuery)
	f.mu.Unlock()

	up := websocket.Upgrader{CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == f.origin }}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	f.mu.Lock()
	f.conns[c] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		_ = c.Close()
	}()

	switch {
	case q.Get("drop") != "":
		return // the deferred Close cuts the TCP connection, no close frame
	case q.Get("binary") != "":
		_ = c.WriteMessage(websocket.BinaryMessage, []byte{0xff, 0x00, 0x01})
	case q.Get("close") != "":
		code, _ := strconv.Atoi(q.Get("close"))
		if ms, _ := strconv.Atoi(q.Get("after")); ms > 0 {
			timer := time.NewTimer(time.Duration(ms) * time.Millisecond)
			select {
			case <-timer.C:
			case <-f.stop:
				timer.Stop()
				return
			}
		}
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "test close"), time.Now().Add(patience))
	}
	// Read until the client goes (or answers the close); count its pings, answer none.
	_ = c.SetReadDeadline(time.Now().Add(2 * patience))
	for {
		kind, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		if kind == websocket.TextMessage && string(data) == "ping" {
			f.mu.Lock()
			f.pings[name]++
			f.mu.Unlock()
		}
	}
}

// jsEvent is one event of a GatewayClient as the harness records it.
type jsEvent struct {
	Type   string  `json:"type"`
	T      float64 `json:"t"` // performance.now()
	State  string  `json:"state"`
	Data   string  `json:"data"`
	Code   int     `json:"code"`
	Reason string  `json:"reason"`
	Delay  float64 `json:"delay"`
}

// harness is a tab of the real gateway with wsgateway.js imported and a start(name, options)
// function that creates a client, records its events in runs[name].log and connects it.
// Options are a JavaScript object literal, so they can hold functions.
const harness = `(async () => {
  const { GatewayClient } = await import("/static/wsgateway.js");
  window.runs = {};
  window.start = (name, opts) => {
    const log = [];
    const c = new GatewayClient(opts);
    for (const type of ["open", "message", "statechange", "close", "retry", "error"]) {
      c.addEventListener(type, (e) => log.push({
        type, t: performance.now(), state: e.state, code: e.code, reason: e.reason, delay: e.delay,
        data: typeof e.data === "string" ? e.data : e.data instanceof ArrayBuffer ? "ArrayBuffer:" + new Uint8Array(e.data).join(",") : undefined,
      }));
    }
    window.runs[name] = { c, log };
    c.connect();
    return c.state;
  };
  return true;
})()`

type clientHarness struct {
	*tab
	gw   *gateway
	fake *fakeServer
}

func startHarness(t *testing.T) clientHarness {
	t.Helper()
	gw := startGateway(t, devConfig())
	tb := newTab(t, startBrowser(t), true)
	tb.do(chromedp.Navigate(gw.base + "/healthz")) // any page of the gateway's origin
	if !mustEval[bool](tb, harness) {
		t.Fatal("harness did not load")
	}
	return clientHarness{tab: tb, gw: gw, fake: startFake(t, gw.base)}
}

// start creates and connects a client; opts is a JavaScript object literal.
func (h clientHarness) start(name, opts string) {
	h.t.Helper()
	mustEval[string](h.tab, fmt.Sprintf(`start(%q, %s)`, name, opts))
}

func (h clientHarness) state(name string) string {
	return mustEval[string](h.tab, fmt.Sprintf(`runs[%q].c.state`, name))
}

func (h clientHarness) events(name string) []jsEvent {
	return mustEval[[]jsEvent](h.tab, fmt.Sprintf(`runs[%q].log`, name))
}

func ofType(evs []jsEvent, typ string) []jsEvent {
	var out []jsEvent
	for _, e := range evs {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// TestClientCloseCodes: what the client does after each close code. 4001 (kicked) and the
// codes that mean a client bug stop it for good; 1001, 1013, other codes and a cut connection
// make it reconnect. The token, from a function called per attempt, replaces user_id.
func TestClientCloseCodes(t *testing.T) {
	h := startHarness(t)
	cases := []struct {
		name  string
		query string
		stop  bool
		code  int
	}{
		{"kicked", "close=4001", true, 4001},
		{"invalid-utf8", "close=1007", true, 1007},
		{"policy", "close=1008", true, 1008},
		{"too-big", "close=1009", true, 1009},
		{"going-away", "close=1001", false, 1001},
		{"slow-consumer", "close=1013", false, 1013},
		{"internal-error", "close=1011", false, 1011},
		{"dropped", "drop=1", false, 1006},
	}
	// Every client at once; backoff.max of 50 ms means a client that were to reconnect would
	// do so within the consistency window below many times over.
	for _, c := range cases {
		h.start(c.name, fmt.Sprintf(`{url: %q, userId: "u1", backoff: {initial: 20, max: 50}}`,
			h.fake.url("case="+c.name+"&"+c.query)))
	}
	h.start("token", fmt.Sprintf(`{url: %q, userId: "ignored", token: (() => { let n = 0; return async () => "tok-" + (++n); })(), backoff: {initial: 20, max: 50}}`,
		h.fake.url("case=token&close=1011")))

	for _, c := range cases {
		if c.stop {
			wait.For(t, patience, func() bool { return h.state(c.name) == "stopped" }, "%s: state stopped", c.name)
		} else {
			wait.For(t, patience, func() bool { return h.fake.count(c.name) >= 3 }, "%s: reconnected twice", c.name)
		}
		closes := ofType(h.events(c.name), "close")
		if len(closes) == 0 || closes[0].Code != c.code {
			t.Errorf("%s: close events %+v, want the first with code %d", c.name, closes, c.code)
		}
	}
	consistently(t, time.Second, func() (bool, string) {
		for _, c := range cases {
			if !c.stop {
				continue
			}
			if n, s := h.fake.count(c.name), h.state(c.name); n != 1 || s != "stopped" {
				return false, fmt.Sprintf("%s: %d connections, state %q", c.name, n, s)
			}
		}
		return true, ""
	}, "stopped clients stay stopped")
	for _, c := range cases {
		if !c.stop {
			continue
		}
		var states []string
		for _, e := range ofType(h.events(c.name), "statechange") {
			states = append(states, e.State)
		}
		if want := []string{"connecting", "open", "stopped"}; !slices.Equal(states, want) {
			t.Errorf("%s: states %v, want %v", c.name, states, want)
		}
	}

	wait.For(t, patience, func() bool { return h.fake.count("token") >= 2 }, "token client reconnected")
	h.fake.mu.Lock()
	queries := slices.Clone(h.fake.queries["token"][:2])
	h.fake.mu.Unlock()
	for i, q := range queries {
		if !strings.Contains(q, fmt.Sprintf("token=tok-%d", i+1)) || strings.Contains(q, "user_id") {
			t.Errorf("attempt %d query %q: want token=tok-%d (a fresh token per attempt) and no user_id", i+1, q, i+1)
		}
	}
	h.fake.mu.Lock()
	q := h.fake.queries["going-away"][0]
	h.fake.mu.Unlock()
	if !strings.Contains(q, "user_id=u1") {
		t.Errorf("query %q: want user_id=u1 when there is no token", q)
	}
}

// TestClientBackoff: with Math.random pinned near 1, the waits are the ceilings of full jitter.
// They double from backoff.initial up to backoff.max after closes that call for backoff; stay
// at most backoff.initial after 1001/1013; and start again from backoff.initial when each
// connection stayed open for stableAfter.
func TestClientBackoff(t *testing.T) {
	h := startHarness(t)
	mustEval[bool](h.tab, `(Math.random = () => 0.999, true)`)
	h.start("grows", fmt.Sprintf(`{url: %q, userId: "u2", stableAfter: 60000, backoff: {initial: 100, max: 800}}`,
		h.fake.url("case=grows&close=1011")))
	h.start("quick", fmt.Sprintf(`{url: %q, userId: "u3", stableAfter: 60000, backoff: {initial: 100, max: 800}}`,
		h.fake.url("case=quick&close=1013")))
	h.start("reset", fmt.Sprintf(`{url: %q, userId: "u4", stableAfter: 200, backoff: {initial: 100, max: 3200}}`,
		h.fake.url("case=reset&close=1011&after=300")))

	const n = 6
	for _, name := range []string{"grows", "quick", "reset"} {
		wait.For(t, patience, func() bool { return h.fake.count(name) >= n }, "%s: %d connections", name, n)
	}

	// The waits the client chose, from its "retry" events: exact, as Math.random is pinned.
	delays := func(name string) []float64 {
		var out []float64
		for _, e := range ofType(h.events(name), "retry")[:n-1] {
			out = append(out, e.Delay)
		}
		return out
	}
	ceilings := map[string][]float64{
		"grows": {100, 200, 400, 800, 800}, // doubling, capped at backoff.max
		"quick": {100, 100, 100, 100, 100}, // 1013: within backoff.initial, however many in a row
		"reset": {100, 100, 100, 100, 100}, // each connection was stable: back to backoff.initial
	}
	for name, want := range ceilings {
		got := delays(name)
		for i := range want {
			if w := want[i] * 0.999; got[i] < w-0.01 || got[i] > w+0.01 {
				t.Errorf("%s: retry waits %v, want %v × 0.999 (Math.random)", name, got, want)
				break
			}
		}
	}

	// The waits are kept: the browser's timers never fire early, so each gap between two
	// connections at the server is at least its wait (plus the 300 ms the reset case stays open).
	for name, want := range ceilings {
		ts := h.fake.times(name)
		for i := range want {
			least := time.Duration(want[i] * 0.99 * float64(time.Millisecond))
			if name == "reset" {
				least += 300 * time.Millisecond
			}
			if gap := ts[i+1].Sub(ts[i]); gap < least {
				t.Errorf("%s: gap %d = %v, want at least %v", name, i+1, gap, least)
			}
		}
	}
}

// TestClientLiveness: against the real gateway the client's "ping"s are answered with "pong",
// which keeps an otherwise silent connection open and never shows up as a message; against a
// server that answers nothing, the client gives up after pingInterval + pongTimeout and
// reconnects. Binary frames arrive as ArrayBuffer. close() ends the client for good.
func TestClientLiveness(t *testing.T) {
	h := startHarness(t)
	wsURL := "ws" + strings.TrimPrefix(h.gw.base, "http") + "/ws"
	h.start("real", fmt.Sprintf(`{url: %q, userId: "lena", pingInterval: 100, pongTimeout: 1000}`, wsURL))
	h.start("silent", fmt.Sprintf(`{url: %q, userId: "u5", pingInterval: 200, pongTimeout: 300, backoff: {initial: 20, max: 50}}`,
		h.fake.url("case=silent&silent=1")))
	h.start("binary", fmt.Sprintf(`{url: %q, userId: "u6"}`, h.fake.url("case=binary&binary=1")))

	wait.For(t, patience, func() bool { return h.state("real") == "open" }, "real: open")
	// Fifteen ping intervals in which the gateway sends nothing but pongs. A pong that did not
	// count as a sign of life would end the connection after 1.1 s, within the window.
	consistently(t, 1500*time.Millisecond, func() (bool, string) {
		evs := h.events("real")
		ok := h.state("real") == "open" && len(ofType(evs, "close")) == 0 && len(ofType(evs, "message")) == 0
		return ok, fmt.Sprintf("%+v", evs)
	}, "real: open, no close, no message (pongs are swallowed)")
	h.gw.push(t, "lena", `{"x": 1}`)
	wait.For(t, patience, func() bool { return len(ofType(h.events("real"), "message")) == 1 }, "real: one message")
	if m := ofType(h.events("real"), "message"); m[0].Data != `{"x": 1}` {
		t.Errorf("real: message %q, want {\"x\": 1}", m[0].Data)
	}

	wait.For(t, patience, func() bool { return h.fake.count("silent") >= 2 }, "silent: reconnected after the liveness timeout")
	evs := h.events("silent")
	opens, closes := ofType(evs, "open"), ofType(evs, "close")
	if len(opens) == 0 || len(closes) == 0 {
		t.Fatalf("silent: events %+v, want an open and a close", evs)
	}
	if c := closes[0]; c.Code != 1006 || !strings.HasPrefix(c.Reason, "liveness timeout") {
		t.Errorf("silent: close %+v, want 1006 liveness timeout", c)
	}
	if d := closes[0].T - opens[0].T; d < 450 { // 50 ms for the open event's own dispatch and timer coarsening
		t.Errorf("silent: gave up %.0fms after open, want at least pingInterval + pongTimeout (500ms)", d)
	}
	h.fake.mu.Lock()
	pings := h.fake.pings["silent"]
	h.fake.mu.Unlock()
	if pings == 0 {
		t.Error("silent: the server got no text ping")
	}

	wait.For(t, patience, func() bool { return len(ofType(h.events("binary"), "message")) == 1 }, "binary: one message")
	if m := ofType(h.events("binary"), "message"); m[0].Data != "ArrayBuffer:255,0,1" {
		t.Errorf("binary: message %q, want an ArrayBuffer of 255,0,1", m[0].Data)
	}

	mustEval[bool](h.tab, `runs["real"].c.close(), true`)
	if s := h.state("real"); s != "closed" {
		t.Errorf("real: state %q after close(), want closed", s)
	}
	wait.For(t, patience, func() bool { return !h.gw.online(t, "lena") }, "lena offline after close()")
	consistently(t, 700*time.Millisecond, func() (bool, string) {
		online, s := h.gw.online(t, "lena"), h.state("real")
		return !online && s == "closed", fmt.Sprintf("online %v, state %q", online, s)
	}, "real: closed for good")
	closes = ofType(h.events("real"), "close")
	if len(closes) != 1 || closes[0].Code != 1000 {
		t.Errorf("real: close events %+v, want one with 1000", closes)
	}
}
