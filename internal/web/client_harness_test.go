package web_test

// The client tests' harness: a tab of the real gateway with wsgateway.js imported, what it
// records of each client and socket, and the gateway-side helpers the tests share.

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

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
	h := clientHarness{tab: newTab(t, startBrowser(t), true), gw: gw, fake: startFake(t, gw.URL(""))}
	h.load()
	return h
}

// load (re)loads the harness page: a fresh page of the gateway's origin, so its localStorage
// is what the last page left.
func (h clientHarness) load() {
	h.t.Helper()
	h.do(chromedp.Navigate(h.gw.URL("") + "/healthz")) // any page of the gateway's origin
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
func (h clientHarness) wsURL() string { return wsclient.URL(h.gw.Addr, wsclient.Options{}) }

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

// waitState waits until the client name is in state want.
func (h clientHarness) waitState(name, want string) {
	h.t.Helper()
	wait.For(h.t, patience, func() bool { return h.state(name) == want }, "%s: state %s", name, want)
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

// pushN pushes data1..dataN-style payloads ("<prefix><i>" as JSON strings, i from..to).
func pushN(t *testing.T, gw *gateway, user, prefix string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		gw.push(t, user, fmt.Sprintf(`"%s%d"`, prefix, i))
	}
}

// kick disconnects every connection of user through the API (4001: the client stops), waits
// until the gateway no longer counts the user online and the client name is stopped.
func (h clientHarness) kick(name, user string) {
	h.t.Helper()
	if status, body := h.gw.call(h.t, http.MethodDelete, "/api/v1/users/"+user+"/connections", ""); status != http.StatusOK {
		h.t.Fatalf("kick %s: %d %s", user, status, body)
	}
	wait.For(h.t, patience, func() bool { return !h.gw.online(h.t, user) }, "%s offline after the kick", user)
	h.waitState(name, "stopped")
}

// awayAndBack has client name (of user) receive <prefix>1..<prefix><had>, be kicked (stopped),
// miss what is pushed up to <prefix><upTo>, and connect again.
func (h clientHarness) awayAndBack(name, user, prefix string, had, upTo int) {
	h.t.Helper()
	h.waitState(name, "open")
	pushN(h.t, h.gw, user, prefix, 1, had)
	h.waitMessages(name, had)
	h.kick(name, user)
	pushN(h.t, h.gw, user, prefix, had+1, upTo)
	mustEval[bool](h.tab, fmt.Sprintf(`runs[%q].c.connect(), true`, name))
}

// withoutPongs drops the "pong" frames from what a socket received.
func withoutPongs(frames []string) []string {
	return slices.DeleteFunc(slices.Clone(frames), func(f string) bool { return f == "pong" })
}

// withoutPings drops the "ping" frames from what a socket sent.
func withoutPings(frames []string) []string {
	return slices.DeleteFunc(slices.Clone(frames), func(f string) bool { return f == "ping" })
}

// unacked connects to the gateway as user without since, which sends every message the user
// has not acknowledged, and returns what comes before the answer to a "ping": those messages.
// With v1 the probe acknowledges nothing, so it can be repeated; a raw connection counts what
// it is sent as received.
func (g *gateway) unacked(t *testing.T, user string, v1 bool) []string {
	t.Helper()
	c := wsclient.MustDial(t, g.Addr, wsclient.Options{User: user, V1: v1, Timeout: patience})
	defer c.Close()
	c.Send(t, "ping")
	var out []string
	for m := c.NextText(t); m != "pong"; m = c.NextText(t) {
		out = append(out, m)
	}
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
	return out
}
