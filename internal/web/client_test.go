package web_test

// Tests of wsgateway.js on its own: the module is imported by a page of the real gateway and
// pointed either at that gateway (the wsgateway.v1 protocol end to end: resume, acks, gap,
// reset, raw mode) or at a fake WebSocket server that misbehaves on request (closes with a
// given code, stays silent, sends binary, sends the frames it is told to), so that every branch
// of the reconnect policy and of the frame parser is exercised.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// fakeServer is a WebSocket endpoint whose behaviour each connection picks with its query:
//
//	case=NAME   groups the connections of one client (required)
//	raw=1       select no subprotocol even when the client offers wsgateway.v1 (an old gateway)
//	send=FRAME  send FRAME as a text frame; repeated, in order, on every connection, first
//	close=CODE  close with CODE right away, or after=MS milliseconds
//	silent=1    read everything, answer nothing (a dead link as the client sees it)
//	drop=1      cut the TCP connection without a close frame (the browser reports 1006)
//	binary=1    send one binary frame (bytes ff 00 01; "7 " before them with wsgateway.v1), then idle
//
// It records every text frame the client sends (pings, acks) with its arrival time.
type fakeServer struct {
	srv    *httptest.Server
	origin string // the page's origin; other origins are refused, as the gateway does
	stop   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	arrived map[string][]time.Time // case → arrival of each connection
	queries map[string][]string    // case → raw query of each connection
	pings   map[string]int         // case → text "ping" frames received
	got     map[string][]frameIn   // case → every other text frame received, in order
	conns   map[*websocket.Conn]struct{}
}

// frameIn is one text frame the client sent to the fake.
type frameIn struct {
	data string
	at   time.Time
}

func startFake(t *testing.T, origin string) *fakeServer {
	t.Helper()
	f := &fakeServer{
		origin:  origin,
		stop:    make(chan struct{}),
		arrived: make(map[string][]time.Time),
		queries: make(map[string][]string),
		pings:   make(map[string]int),
		got:     make(map[string][]frameIn),
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
	if q.Get("raw") == "" {
		up.Subprotocols = []string{"wsgateway.v1"}
	}
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

	for _, frame := range q["send"] {
		if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			return
		}
	}
	switch {
	case q.Get("drop") != "":
		return // the deferred Close cuts the TCP connection, no close frame
	case q.Get("binary") != "":
		frame := []byte{0xff, 0x00, 0x01}
		if c.Subprotocol() == "wsgateway.v1" {
			frame = append([]byte("7 "), frame...)
		}
		_ = c.WriteMessage(websocket.BinaryMessage, frame)
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
		if kind != websocket.TextMessage {
			continue
		}
		f.mu.Lock()
		if string(data) == "ping" {
			f.pings[name]++
		} else {
			f.got[name] = append(f.got[name], frameIn{string(data), time.Now()})
		}
		f.mu.Unlock()
	}
}

// frames returns the text frames other than "ping" that the clients of case name sent.
func (f *fakeServer) frames(name string) []frameIn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got[name])
}

// query is the raw query of the i-th connection of case name.
func (f *fakeServer) query(name string, i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[name][i]
}

// jsEvent is one event of a GatewayClient as the harness records it.
type jsEvent struct {
	Type     string  `json:"type"`
	T        float64 `json:"t"` // performance.now()
	State    string  `json:"state"`
	Data     string  `json:"data"`
	Seq      *int64  `json:"seq"` // message: nil for a message without a number
	Code     int     `json:"code"`
	Reason   string  `json:"reason"`
	Delay    float64 `json:"delay"`
	Protocol string  `json:"protocol"` // open
	Since    *int64  `json:"since"`    // open
	From     int64   `json:"from"`     // gap
	To       int64   `json:"to"`       // gap
	Latest   int64   `json:"latest"`   // reset
	Exp      float64 `json:"exp"`      // refresh: ms since the epoch
	Error    string  `json:"error"`    // error
}

// jsSocket is one WebSocket the page opened, as the harness's wrapper records it.
type jsSocket struct {
	URL      string    `json:"url"`
	Offered  []string  `json:"offered"`  // the subprotocols asked for
	Protocol string    `json:"protocol"` // the one the server selected, once open
	Got      []string  `json:"got"`      // frames received (binary as "ArrayBuffer:b,b,…")
	Sent     []string  `json:"sent"`     // frames sent
	SentAt   []float64 `json:"sentAt"`   // performance.now() of each
}

// harness is a tab of the real gateway with wsgateway.js imported and a start(name, options,
// setup) function that creates a client, records its events in runs[name].log, calls setup
// with it (optional) and connects it. Options are a JavaScript object literal, so they can hold
// functions. WebSocket is wrapped, so that sockets lists every socket the page opened with the
// frames that went through it: what the server sent, not only what the client delivered.
const harness = `(async () => {
  const { GatewayClient } = await import("/static/wsgateway.js");
  const show = (d) => typeof d === "string" ? d : d instanceof ArrayBuffer ? "ArrayBuffer:" + new Uint8Array(d).join(",") : String(d);
  window.sockets = [];
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      const rec = { url: String(url), offered: protocols === undefined ? null : [].concat(protocols), protocol: "", got: [], sent: [], sentAt: [] };
      this.rec = rec;
      window.sockets.push(rec);
      this.addEventListener("open", () => { rec.protocol = this.protocol; });
      this.addEventListener("message", (e) => rec.got.push(show(e.data)));
    }
    send(data) {
      this.rec.sent.push(show(data));
      this.rec.sentAt.push(performance.now());
      super.send(data);
    }
  };
  window.runs = {};
  window.start = (name, opts, setup) => {
    const log = [];
    const c = new GatewayClient(opts);
    for (const type of ["open", "message", "gap", "reset", "statechange", "close", "retry", "refresh", "error"]) {
      c.addEventListener(type, (e) => log.push({
        type, t: performance.now(), state: e.state, code: e.code, reason: e.reason, delay: e.delay,
        data: e.data === undefined ? undefined : show(e.data), seq: e.seq, protocol: e.protocol, since: e.since,
        from: e.from, to: e.to, latest: e.latest, exp: e.exp, error: e.error === undefined ? undefined : String(e.error),
      }));
    }
    window.runs[name] = { c, log };
    if (setup) setup(c);
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
	return startHarnessWith(t, devConfig())
}

// startHarnessWith is startHarness with a gateway of cfg.
func startHarnessWith(t *testing.T, cfg config.Config) clientHarness {
	t.Helper()
	gw := startGateway(t, cfg)
	h := clientHarness{tab: newTab(t, startBrowser(t), true), gw: gw, fake: startFake(t, gw.base)}
	h.load()
	return h
}

// load (re)loads the harness page: a fresh page of the gateway's origin, so its localStorage
// is what the last page left.
func (h clientHarness) load() {
	h.t.Helper()
	h.do(chromedp.Navigate(h.gw.base + "/healthz")) // any page of the gateway's origin
	if !mustEval[bool](h.tab, harness) {
		h.t.Fatal("harness did not load")
	}
}

// start creates and connects a client; opts is a JavaScript object literal.
func (h clientHarness) start(name, opts string) {
	h.t.Helper()
	mustEval[string](h.tab, fmt.Sprintf(`start(%q, %s)`, name, opts))
}

// startWith is start with a setup function (JavaScript source) called with the client before
// it connects, e.g. to add a listener that must see the first event.
func (h clientHarness) startWith(name, opts, setup string) {
	h.t.Helper()
	mustEval[string](h.tab, fmt.Sprintf(`start(%q, %s, %s)`, name, opts, setup))
}

// wsURL is the gateway's /ws endpoint.
func (h clientHarness) wsURL() string { return "ws" + strings.TrimPrefix(h.gw.base, "http") + "/ws" }

// sockets lists the sockets the page opened whose URL contains part, oldest first.
func (h clientHarness) sockets(part string) []jsSocket {
	h.t.Helper()
	return mustEval[[]jsSocket](h.tab, fmt.Sprintf(`sockets.filter((s) => s.url.includes(%q))`, part))
}

// messages returns the client's message events.
func (h clientHarness) messages(name string) []jsEvent { return ofType(h.events(name), "message") }

// waitMessages waits until the client delivered n messages.
func (h clientHarness) waitMessages(name string, n int) []jsEvent {
	h.t.Helper()
	var got []jsEvent
	wait.For(h.t, patience, func() bool {
		got = h.messages(name)
		return len(got) >= n
	}, "%s: %d messages (last seen: %s)", name, n, lazy(func() string { return fmt.Sprintf("%+v", got) }))
	return got
}

func (h clientHarness) state(name string) string {
	return mustEval[string](h.tab, fmt.Sprintf(`runs[%q].c.state`, name))
}

func (h clientHarness) events(name string) []jsEvent {
	return mustEval[[]jsEvent](h.tab, fmt.Sprintf(`runs[%q].log`, name))
}

// seqOf is a message event's number, -1 for none.
func seqOf(e jsEvent) int64 { return num(e.Seq) }

// num is *p, or -1 for nil (JavaScript's null).
func num(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

// seqs lists the numbers of message events (-1 for none).
func seqs(evs []jsEvent) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = seqOf(e)
	}
	return out
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
// codes that mean a client bug stop it for good; 1001, 1013, 4002, other codes and a cut
// connection make it reconnect. The token, from a function called per attempt, replaces user_id.
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
		{"token-expired", "close=4002", false, 4002},
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
// at most backoff.initial after 1013 (1001 and 4002 alike); and start again from backoff.initial when each
// connection stayed open for stableAfter.
func TestClientBackoff(t *testing.T) {
	h := startHarness(t)
	mustEval[bool](h.tab, `(Math.random = () => 0.999, true)`)
	h.start("grows", fmt.Sprintf(`{url: %q, userId: "u2", stableAfter: 60000, backoff: {initial: 100, max: 800}}`,
		h.fake.url("case=grows&close=1011")))
	h.start("quick", fmt.Sprintf(`{url: %q, userId: "u3", stableAfter: 60000, backoff: {initial: 100, max: 800}}`,
		h.fake.url("case=quick&close=1013")))
	h.start("expired", fmt.Sprintf(`{url: %q, userId: "u12", stableAfter: 60000, backoff: {initial: 100, max: 800}}`,
		h.fake.url("case=expired&close=4002")))
	h.start("reset", fmt.Sprintf(`{url: %q, userId: "u4", stableAfter: 200, backoff: {initial: 100, max: 3200}}`,
		h.fake.url("case=reset&close=1011&after=300")))

	const n = 6
	for _, name := range []string{"grows", "quick", "expired", "reset"} {
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
		"grows":   {100, 200, 400, 800, 800}, // doubling, capped at backoff.max
		"quick":   {100, 100, 100, 100, 100}, // 1013: within backoff.initial, however many in a row
		"expired": {100, 100, 100, 100, 100}, // 4002 (token expired): the same, with a new token each time
		"reset":   {100, 100, 100, 100, 100}, // each connection was stable: back to backoff.initial
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
// reconnects. Binary frames arrive as ArrayBuffer, without the number that wsgateway.v1 puts
// before the payload. close() ends the client for good.
func TestClientLiveness(t *testing.T) {
	h := startHarness(t)
	h.start("real", fmt.Sprintf(`{url: %q, userId: "lena", pingInterval: 100, pongTimeout: 1000}`, h.wsURL()))
	h.start("silent", fmt.Sprintf(`{url: %q, userId: "u5", pingInterval: 200, pongTimeout: 300, backoff: {initial: 20, max: 50}}`,
		h.fake.url("case=silent&silent=1")))
	h.start("binary", fmt.Sprintf(`{url: %q, userId: "u6"}`, h.fake.url("case=binary&binary=1")))
	h.start("binary-raw", fmt.Sprintf(`{url: %q, userId: "u7", protocol: "raw"}`, h.fake.url("case=binary-raw&binary=1")))

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
	if m := ofType(h.events("real"), "message"); m[0].Data != `{"x": 1}` || seqOf(m[0]) != 1 {
		t.Errorf("real: message %+v, want {\"x\": 1} with seq 1", m[0])
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

	for _, name := range []string{"binary", "binary-raw"} {
		wait.For(t, patience, func() bool { return len(h.messages(name)) == 1 }, "%s: one message", name)
		m := h.messages(name)[0]
		if m.Data != "ArrayBuffer:255,0,1" {
			t.Errorf("%s: message %q, want an ArrayBuffer of 255,0,1", name, m.Data)
		}
		if got := seqOf(m); (name == "binary" && got != 7) || (name == "binary-raw" && got != -1) {
			t.Errorf("%s: seq %d, want 7 with wsgateway.v1 and none (-1) in raw mode", name, got)
		}
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

// sendQuery is the fake's query that sends frames, in order, on every connection.
func sendQuery(frames ...string) string {
	var b strings.Builder
	for _, f := range frames {
		b.WriteString("&send=" + url.QueryEscape(f))
	}
	return b.String()
}

// TestClientV1Frames: the parser on the frames a wsgateway.v1 server may send: numbered and
// unnumbered messages (an empty payload too), a number at or below the position (dropped), gap
// (the position moves to its end), reset (numbering starts again), pong and a frame of an
// unknown kind (neither is a message). Across reconnects the client resumes with
// since=<last seq> and drops what it had. A server that selects no subprotocol (a gateway
// before wsgateway.v1) is refused by Chromium itself, so such a client never opens and keeps
// backing off (protocol "raw" is the way to talk to one); with protocol "raw" the frames
// arrive as they are.
func TestClientV1Frames(t *testing.T) {
	h := startHarness(t)
	h.start("frames", fmt.Sprintf(`{url: %q, userId: "u8"}`, h.fake.url("case=frames"+sendQuery(
		"1 a", "2 b b", "- c", "2 b b", "1 a", "gap 3 5", `6 {"d":6}`, "4 late", "pong", "hello 1 2",
		"reset 2", "1 again", "2 again 2", "3 ", "- "))))
	h.start("resume", fmt.Sprintf(`{url: %q, userId: "u9", backoff: {initial: 20, max: 50}}`,
		h.fake.url("case=resume&close=1011&after=300"+sendQuery("1 a", "2 b"))))
	h.start("old", fmt.Sprintf(`{url: %q, userId: "u10", backoff: {initial: 20, max: 50}}`, h.fake.url("case=old&raw=1"+sendQuery("1 a"))))
	h.start("old-raw", fmt.Sprintf(`{url: %q, userId: "u11", protocol: "raw"}`, h.fake.url("case=old-raw&raw=1"+sendQuery("1 a"))))

	type ev struct {
		Type string
		Data string
		Seq  int64
	}
	summary := func(evs []jsEvent) []ev {
		var out []ev
		for _, e := range evs {
			switch e.Type {
			case "message":
				out = append(out, ev{e.Type, e.Data, seqOf(e)})
			case "gap":
				out = append(out, ev{"gap", fmt.Sprintf("%d-%d", e.From, e.To), 0})
			case "reset":
				out = append(out, ev{"reset", "", e.Latest})
			}
		}
		return out
	}
	want := []ev{
		{"message", "a", 1}, {"message", "b b", 2}, {"message", "c", -1},
		{"gap", "3-5", 0}, {"message", `{"d":6}`, 6},
		{"reset", "", 2}, {"message", "again", 1}, {"message", "again 2", 2}, {"message", "", 3}, {"message", "", -1},
	}
	var got []ev
	wait.For(t, patience, func() bool {
		got = summary(h.events("frames"))
		return len(got) >= len(want)
	}, "frames: %d events (last seen: %s)", len(want), lazy(func() string { return fmt.Sprint(got) }))
	// Later frames would have been delivered by now (they came in one burst before the last).
	if !slices.Equal(got, want) {
		t.Errorf("frames: events\n %v\nwant\n %v", got, want)
	}
	if n := mustEval[int](h.tab, `runs["frames"].c.lastSeq`); n != 3 {
		t.Errorf("frames: lastSeq %d, want 3", n)
	}

	wait.For(t, patience, func() bool { return len(ofType(h.events("resume"), "open")) >= 3 }, "resume: reconnected twice")
	if q := h.fake.query("resume", 0); strings.Contains(q, "since") {
		t.Errorf("resume: first query %q, want no since (no position known yet)", q)
	}
	for i := 1; i < 3; i++ {
		if q := h.fake.query("resume", i); !strings.Contains(q, "since=2") {
			t.Errorf("resume: query %d %q, want since=2", i, q)
		}
	}
	if got := seqs(h.messages("resume")); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("resume: message seqs %v, want [1 2]: what came again is dropped", got)
	}
	var since []string
	for _, e := range ofType(h.events("resume"), "open")[:3] {
		if e.Protocol != "wsgateway.v1" {
			t.Errorf("resume: open event %+v, want protocol wsgateway.v1", e)
		}
		since = append(since, fmt.Sprint(num(e.Since)))
	}
	if want := []string{"-1", "2", "2"}; !slices.Equal(since, want) {
		t.Errorf("resume: open events' since %v, want %v (-1: none)", since, want)
	}

	m := h.waitMessages("old-raw", 1)
	if m[0].Data != "1 a" || m[0].Seq != nil {
		t.Errorf("old-raw: message %+v, want the frame as it is, without a number", m[0])
	}
	if o := ofType(h.events("old-raw"), "open"); len(o) != 1 || o[0].Protocol != "raw" || o[0].Since != nil {
		t.Errorf("old-raw: open events %+v, want one with protocol raw and no since", o)
	}
	wait.For(t, patience, func() bool { return h.fake.count("old") >= 3 }, "old: tried three times")
	evs := h.events("old")
	if n := len(ofType(evs, "open")) + len(ofType(evs, "message")); n != 0 || h.state("old") == "stopped" {
		t.Errorf("old: events %+v, want no open and no message, and retries", evs)
	}
	for _, c := range ofType(evs, "close") {
		if c.Code != 1006 {
			t.Errorf("old: close %+v, want 1006 (the browser failed the handshake)", c)
		}
	}
}

// TestClientAcks: acks are cumulative and batched: a burst of 200 messages is acknowledged
// with a few acks, the last "ack 200"; a lone message is acknowledged ackInterval (100 ms)
// after it arrived, not at once; however low ackEvery is set, two acks are at least 50 ms
// apart (acks count toward the gateway's max-inbound-rate); and close() acknowledges what
// arrived before the close frame, even from inside a message listener.
func TestClientAcks(t *testing.T) {
	h := startHarness(t)
	burst := make([]string, 200)
	for i := range burst {
		burst[i] = fmt.Sprintf("%d m", i+1)
	}
	h.start("burst", fmt.Sprintf(`{url: %q, userId: "a1"}`, h.fake.url("case=burst"+sendQuery(burst...))))
	h.start("one", fmt.Sprintf(`{url: %q, userId: "a2"}`, h.fake.url("case=one"+sendQuery("1 x"))))
	h.start("pace", fmt.Sprintf(`{url: %q, userId: "a3", ackEvery: 1}`, h.fake.url("case=pace"+sendQuery(burst[:100]...))))
	h.startWith("close", fmt.Sprintf(`{url: %q, userId: "a4", ackInterval: 600000}`, h.fake.url("case=close"+sendQuery("1 x"))),
		`(c) => c.addEventListener("message", () => c.close())`)

	acks := func(name string) []string {
		var out []string
		for _, f := range h.fake.frames(name) {
			out = append(out, f.data)
		}
		return out
	}
	waitAck := func(name, last string) {
		t.Helper()
		wait.For(t, patience, func() bool {
			a := acks(name)
			return len(a) > 0 && a[len(a)-1] == last
		}, "%s: last frame %q (last seen: %s)", name, last, lazy(func() string { return fmt.Sprint(acks(name)) }))
	}

	waitAck("burst", "ack 200")
	got := acks("burst")
	// Three after 64 messages each at most, and one per 100 ms while the burst arrives: on a
	// busy machine that can take a while, so the bound only tells batching from one per message.
	if len(got) > 20 {
		t.Errorf("burst: %d acks %v, want a few (cumulative, batched)", len(got), got)
	}
	last := 0
	for _, a := range got {
		n, err := strconv.Atoi(strings.TrimPrefix(a, "ack "))
		if err != nil || n <= last {
			t.Errorf("burst: acks %v, want \"ack <n>\" with n increasing", got)
			break
		}
		last = n
	}

	waitAck("one", "ack 1")
	if d := h.fake.frames("one")[0].at.Sub(h.fake.times("one")[0]); d < 95*time.Millisecond { // 5 ms for clock granularity
		t.Errorf("one: acked %v after the connection arrived, want at least ackInterval (100ms)", d)
	}

	waitAck("pace", "ack 100")
	var times []float64
	for _, sock := range h.sockets("case=pace") {
		for i, f := range sock.Sent {
			if f != "ping" {
				times = append(times, sock.SentAt[i])
			}
		}
	}
	for i := 1; i < len(times); i++ {
		if d := times[i] - times[i-1]; d < 49 { // 1 ms for timer coarsening
			t.Errorf("pace: acks sent %.1f ms apart (at %v), want at least 50 ms", d, times)
		}
	}

	waitAck("close", "ack 1")
	if got := acks("close"); len(got) != 1 {
		t.Errorf("close: frames %v, want only ack 1", got)
	}
	if s := h.state("close"); s != "closed" {
		t.Errorf("close: state %q, want closed", s)
	}
}

// pushN pushes data1..dataN-style payloads ("<prefix><i>" as JSON strings, i from..to).
func pushN(t *testing.T, gw *gateway, user, prefix string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		gw.push(t, user, fmt.Sprintf(`"%s%d"`, prefix, i))
	}
}

// kick disconnects every connection of user through the API (4001: the client stops) and
// waits until the gateway no longer counts the user online.
func kick(t *testing.T, gw *gateway, user string) {
	t.Helper()
	if status, body := gw.call(t, http.MethodDelete, "/api/v1/users/"+user+"/connections", ""); status != http.StatusOK {
		t.Fatalf("kick %s: %d %s", user, status, body)
	}
	wait.For(t, patience, func() bool { return !gw.online(t, user) }, "%s offline after the kick", user)
}

// withoutPongs drops the "pong" frames from what a socket received.
func withoutPongs(frames []string) []string {
	return slices.DeleteFunc(slices.Clone(frames), func(f string) bool { return f == "pong" })
}

// withoutPings drops the "ping" frames from what a socket sent.
func withoutPings(frames []string) []string {
	return slices.DeleteFunc(slices.Clone(frames), func(f string) bool { return f == "ping" })
}

// TestClientResume: a client kicked by the API (4001: stopped) and connected again resumes
// with since=<last seq>: the gateway sends exactly what it missed, once, in order. No ack had
// reached the gateway (ackInterval is out of reach), so without since it would have sent all
// six again: the frames on the second socket show that it did not.
func TestClientResume(t *testing.T) {
	h := startHarness(t)
	h.start("r", fmt.Sprintf(`{url: %q, userId: "rosa", ackInterval: 600000, ackEvery: 100000}`, h.wsURL()))
	wait.For(t, patience, func() bool { return h.state("r") == "open" }, "r: open")
	pushN(t, h.gw, "rosa", "m", 1, 3)
	h.waitMessages("r", 3)

	kick(t, h.gw, "rosa")
	wait.For(t, patience, func() bool { return h.state("r") == "stopped" }, "r: stopped by the kick")
	pushN(t, h.gw, "rosa", "m", 4, 5)
	mustEval[bool](h.tab, `runs["r"].c.connect(), true`)
	h.waitMessages("r", 5)
	pushN(t, h.gw, "rosa", "m", 6, 6)
	msgs := h.waitMessages("r", 6)

	var data []string
	for _, m := range msgs {
		data = append(data, m.Data)
	}
	if want := []string{`"m1"`, `"m2"`, `"m3"`, `"m4"`, `"m5"`, `"m6"`}; !slices.Equal(data, want) {
		t.Errorf("messages %v, want %v", data, want)
	}
	if got := seqs(msgs); !slices.Equal(got, []int64{1, 2, 3, 4, 5, 6}) {
		t.Errorf("seqs %v, want 1..6", got)
	}
	socks := h.sockets("user_id=rosa")
	if len(socks) != 2 {
		t.Fatalf("sockets %+v, want 2", socks)
	}
	for i, s := range socks {
		if !slices.Equal(s.Offered, []string{"wsgateway.v1"}) || s.Protocol != "wsgateway.v1" {
			t.Errorf("socket %d: offered %v, got %q; want wsgateway.v1 both", i, s.Offered, s.Protocol)
		}
		if slices.ContainsFunc(s.Sent, func(f string) bool { return strings.HasPrefix(f, "ack") }) {
			t.Errorf("socket %d sent %v: no ack was due yet", i, s.Sent)
		}
	}
	if strings.Contains(socks[0].URL, "since") || !strings.Contains(socks[1].URL, "since=3") {
		t.Errorf("URLs %q, %q: want none, then since=3", socks[0].URL, socks[1].URL)
	}
	if got, want := withoutPongs(socks[1].Got), []string{`4 "m4"`, `5 "m5"`, `6 "m6"`}; !slices.Equal(got, want) {
		t.Errorf("second socket received %q, want exactly %q", got, want)
	}
}

// unacked connects to the gateway as user without since, which sends every message the user
// has not acknowledged, and returns what comes before the answer to a "ping": those messages.
// With v1 the probe acknowledges nothing, so it can be repeated; a raw connection counts what
// it is sent as received.
func (g *gateway) unacked(t *testing.T, user string, v1 bool) []string {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: patience}
	if v1 {
		d.Subprotocols = []string{"wsgateway.v1"}
	}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(g.base, "http")+"/ws?user_id="+url.QueryEscape(user), nil)
	if err != nil {
		t.Fatalf("probe as %s: %v", user, err)
	}
	resp.Body.Close()
	defer c.Close()
	if got := c.Subprotocol(); (got == "wsgateway.v1") != v1 {
		t.Fatalf("probe as %s: subprotocol %q", user, got)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatalf("probe as %s: %v", user, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(patience))
	var out []string
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("probe as %s: %v (after %q)", user, err, out)
		}
		if string(data) == "pong" {
			break
		}
		out = append(out, string(data))
	}
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
	return out
}

// TestClientAcksReachGateway: the client's acks reach the gateway: once they are recorded
// (within about a second: the gateway writes positions in batches), a connection without since,
// which gets every unacknowledged message, gets nothing old — with wsgateway.v1 and raw.
func TestClientAcksReachGateway(t *testing.T) {
	h := startHarness(t)
	h.start("a", fmt.Sprintf(`{url: %q, userId: "abe"}`, h.wsURL()))
	wait.For(t, patience, func() bool { return h.state("a") == "open" }, "a: open")
	pushN(t, h.gw, "abe", "n", 1, 3)
	h.waitMessages("a", 3)

	var old []string
	wait.For(t, patience, func() bool {
		old = h.gw.unacked(t, "abe", true)
		return len(old) == 0
	}, "a v1 connection without since gets nothing old (last seen: %s)", lazy(func() string { return fmt.Sprint(old) }))
	if old := h.gw.unacked(t, "abe", false); len(old) != 0 {
		t.Errorf("a raw connection got %q, want nothing old", old)
	}
	sent := withoutPings(h.sockets("user_id=abe")[0].Sent)
	if i := slices.Index(sent, "ack 3"); i < 0 || len(sent) > 3 {
		t.Errorf("the client sent %q, want ack 3 among a few frames", sent)
	}
}

// TestClientGap: the gateway keeps 3 messages (offline-max); a client that had 1..2 and comes
// back after 8 more were pushed gets "gap 3 7" as a gap event, then 8..10, and its position
// moves past the gap.
func TestClientGap(t *testing.T) {
	cfg := devConfig()
	cfg.OfflineMax = 3
	h := startHarnessWith(t, cfg)
	h.start("g", fmt.Sprintf(`{url: %q, userId: "gil"}`, h.wsURL()))
	wait.For(t, patience, func() bool { return h.state("g") == "open" }, "g: open")
	pushN(t, h.gw, "gil", "g", 1, 2)
	h.waitMessages("g", 2)

	kick(t, h.gw, "gil")
	wait.For(t, patience, func() bool { return h.state("g") == "stopped" }, "g: stopped by the kick")
	pushN(t, h.gw, "gil", "g", 3, 10)
	mustEval[bool](h.tab, `runs["g"].c.connect(), true`)
	h.waitMessages("g", 5)

	var order []string
	for _, e := range h.events("g") {
		switch e.Type {
		case "gap":
			order = append(order, fmt.Sprintf("gap %d-%d", e.From, e.To))
		case "message":
			order = append(order, fmt.Sprintf("%d %s", seqOf(e), e.Data))
		}
	}
	if want := []string{`1 "g1"`, `2 "g2"`, "gap 3-7", `8 "g8"`, `9 "g9"`, `10 "g10"`}; !slices.Equal(order, want) {
		t.Errorf("events %q, want %q", order, want)
	}
	if n := mustEval[int](h.tab, `runs["g"].c.lastSeq`); n != 10 {
		t.Errorf("lastSeq %d, want 10", n)
	}
	if o := ofType(h.events("g"), "open"); len(o) != 2 || num(o[1].Since) != 2 {
		t.Errorf("open events %+v, want the second with since 2", o)
	}
}

// TestClientReset: a client whose position is above the user's latest number (given with the
// since option here; in life, the user's state expired on the gateway) gets a reset event,
// then the user's messages from 1, and keeps counting from there — in localStorage too.
func TestClientReset(t *testing.T) {
	h := startHarness(t)
	pushN(t, h.gw, "rex", "r", 1, 2) // stored: rex is offline
	h.start("x", fmt.Sprintf(`{url: %q, userId: "rex", since: 100, storageKey: "seq:rex"}`, h.wsURL()))
	h.waitMessages("x", 2)
	pushN(t, h.gw, "rex", "r", 3, 3)
	h.waitMessages("x", 3)

	var order []string
	for _, e := range h.events("x") {
		switch e.Type {
		case "reset":
			order = append(order, fmt.Sprintf("reset %d", e.Latest))
		case "message":
			order = append(order, fmt.Sprintf("%d %s", seqOf(e), e.Data))
		}
	}
	if want := []string{"reset 2", `1 "r1"`, `2 "r2"`, `3 "r3"`}; !slices.Equal(order, want) {
		t.Errorf("events %q, want %q", order, want)
	}
	if !strings.Contains(h.sockets("user_id=rex")[0].URL, "since=100") {
		t.Errorf("URL %q, want since=100", h.sockets("user_id=rex")[0].URL)
	}
	if got := mustEval[string](h.tab, `[runs["x"].c.lastSeq, localStorage.getItem("seq:rex")].join()`); got != "3,3" {
		t.Errorf("lastSeq, stored position = %s, want 3,3", got)
	}
}

// TestClientPersistsPosition: with storageKey the position survives a page load: the new page's
// client starts from it (since=3) and gets only what was pushed meanwhile. The old page,
// whose ackInterval was out of reach, acknowledged what it had as it went (pagehide). Without
// storageKey a new client knows no position.
func TestClientPersistsPosition(t *testing.T) {
	h := startHarness(t)
	h.start("p", fmt.Sprintf(`{url: %q, userId: "pia", storageKey: "seq:pia", ackInterval: 600000, ackEvery: 100000}`, h.wsURL()))
	pushN(t, h.gw, "pia", "p", 1, 3)
	h.waitMessages("p", 3)
	if got := mustEval[string](h.tab, `localStorage.getItem("seq:pia")`); got != "3" {
		t.Fatalf("stored position %q, want 3", got)
	}

	h.load() // a new page; the old one goes, and its socket with it
	var old []string
	wait.For(t, patience, func() bool {
		old = h.gw.unacked(t, "pia", true)
		return len(old) == 0
	}, "the old page acknowledged 1..3 as it went (last seen: %s)", lazy(func() string { return fmt.Sprint(old) }))
	pushN(t, h.gw, "pia", "p", 4, 5)

	fresh := `(async () => {
	  const { GatewayClient } = await import("/static/wsgateway.js");
	  return [new GatewayClient({ storageKey: "seq:pia" }).lastSeq, new GatewayClient({}).lastSeq];
	})()`
	if got := mustEval[[]*int64](h.tab, fresh); len(got) != 2 || num(got[0]) != 3 || got[1] != nil {
		t.Errorf("a new client's lastSeq with and without storageKey: %v, want 3 and null", got)
	}
	h.start("p", fmt.Sprintf(`{url: %q, userId: "pia", storageKey: "seq:pia"}`, h.wsURL()))
	msgs := h.waitMessages("p", 2)
	if got := seqs(msgs); !slices.Equal(got, []int64{4, 5}) {
		t.Errorf("after the reload: seqs %v, want [4 5]", got)
	}
	if o := ofType(h.events("p"), "open"); len(o) != 1 || num(o[0].Since) != 3 {
		t.Errorf("open events %+v, want one with since 3", o)
	}
	if got := withoutPongs(h.sockets("user_id=pia")[0].Got); !slices.Equal(got, []string{`4 "p4"`, `5 "p5"`}) {
		t.Errorf("the new page's socket received %q, want 4 and 5 only", got)
	}
	if got := mustEval[string](h.tab, `localStorage.getItem("seq:pia")`); got != "5" {
		t.Errorf("stored position %q, want 5", got)
	}
}

// TestClientRawMode: with protocol "raw" the client offers no subprotocol, sends no since and
// no acks, and delivers the frames as they are, with no number: the stored message first (a
// connect without since), then live ones.
func TestClientRawMode(t *testing.T) {
	h := startHarness(t)
	h.gw.push(t, "ray", `"stored"`)
	h.start("w", fmt.Sprintf(`{url: %q, userId: "ray", protocol: "raw", since: 5, storageKey: "seq:ray"}`, h.wsURL()))
	h.waitMessages("w", 1)
	h.gw.push(t, "ray", `{"n": 1}`)
	msgs := h.waitMessages("w", 2)

	if msgs[0].Data != `"stored"` || msgs[1].Data != `{"n": 1}` || msgs[0].Seq != nil || msgs[1].Seq != nil {
		t.Errorf("messages %+v, want \"stored\" and {\"n\": 1} as pushed, without numbers", msgs)
	}
	if o := ofType(h.events("w"), "open"); len(o) != 1 || o[0].Protocol != "raw" || o[0].Since != nil {
		t.Errorf("open events %+v, want one with protocol raw and no since", o)
	}
	socks := h.sockets("user_id=ray")
	if len(socks) != 1 || socks[0].Offered != nil || socks[0].Protocol != "" || strings.Contains(socks[0].URL, "since") {
		t.Fatalf("sockets %+v, want one offering no subprotocol, without since", socks)
	}
	if sent := withoutPings(socks[0].Sent); len(sent) != 0 {
		t.Errorf("sent %q, want nothing but pings (no acks in raw mode)", sent)
	}
	if got := mustEval[string](h.tab, `String(runs["w"].c.lastSeq) + "," + localStorage.getItem("seq:ray")`); got != "null,null" {
		t.Errorf("lastSeq, stored = %s, want null,null", got)
	}
}
