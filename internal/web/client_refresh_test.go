package web_test

// Tests of wsgateway.js's in-band token refresh: when it refreshes (against the fake server,
// which takes any frame), and what the real gateway does with it (JWT mode, 4002 at exp).

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// tokenKit adds to the harness page:
//
//	jwt(claims, secret)  a JWT of claims, signed with HS256 (WebCrypto) when secret is given,
//	                     unsigned ("alg": "none") otherwise, for the fake server
//	tokens(name, make)   a token function that records each call: calls[name] counts them,
//	                     issued[name] lists what it returned; make(n) (n from 1) gives the token
//	                     or a promise of one, or throws
//	expIn(ms)            a NumericDate ms from now, in whole seconds as issuers write them
//	timers               how many times setTimeout was called
const tokenKit = `(() => {
  window.timers = 0;
  const setTimeoutNative = window.setTimeout;
  window.setTimeout = (...args) => (timers++, setTimeoutNative(...args));
  const enc = new TextEncoder();
  const b64u = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  window.jwt = async (claims, secret) => {
    const head = b64u(enc.encode(JSON.stringify({ alg: secret === undefined ? "none" : "HS256", typ: "JWT" })));
    const body = b64u(enc.encode(JSON.stringify(claims)));
    if (secret === undefined) return head + "." + body + ".";
    const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return head + "." + body + "." + b64u(await crypto.subtle.sign("HMAC", key, enc.encode(head + "." + body)));
  };
  window.calls = {};
  window.issued = {};
  window.tokens = (name, make) => async () => {
    const n = (calls[name] = (calls[name] || 0) + 1);
    const token = await make(n);
    (issued[name] = issued[name] || []).push(token);
    return token;
  };
  window.expIn = (ms) => Math.floor((Date.now() + ms) / 1000);
  return true;
})()`

// withTokenKit is a harness whose page has tokenKit.
func withTokenKit(h clientHarness) clientHarness {
	h.t.Helper()
	if !mustEval[bool](h.tab, tokenKit) {
		h.t.Fatal("token kit did not load")
	}
	return h
}

// calls is how many times the token function of case name was called.
func (h clientHarness) calls(name string) int {
	return mustEval[int](h.tab, fmt.Sprintf(`calls[%q] || 0`, name))
}

// issued lists the tokens the token function of case name returned, in order.
func (h clientHarness) issued(name string) []string {
	return mustEval[[]string](h.tab, fmt.Sprintf(`issued[%q] || []`, name))
}

// authSent lists the "auth <token>" frames the sockets whose URL contains part sent, with the
// performance.now() of each send.
func (h clientHarness) authSent(part string) (frames []string, at []float64) {
	for _, s := range h.sockets(part) {
		for i, f := range s.Sent {
			if strings.HasPrefix(f, "auth ") {
				frames = append(frames, f)
				at = append(at, s.SentAt[i])
			}
		}
	}
	return frames, at
}

// TestClientRefreshPlan: when the client refreshes its token in-band, against the fake server
// (which closes nothing, so every connection lives on). A token with exp about 5 s ahead is
// replaced ("auth <the function's next token>", a "refresh" event with its exp) a quarter of
// the remaining time before exp, then again before the new exp. Tokens that live 2.4 s are
// replaced every 2 s, not every 1.8 s: never sooner than 2 s after the open or the last
// refresh. No refresh for a token without exp, an opaque token, one expiring within 2 s of the
// open, one expiring in 30 days (a wait beyond the 24.8 days setTimeout holds: one that asked
// for it would fire at once, again and again), nor in raw mode. A function that returns the same token again is called but nothing is sent; one that
// fails reports an "error" event and sends nothing. The connections stay open throughout.
func TestClientRefreshPlan(t *testing.T) {
	h := withTokenKit(startHarness(t))
	const opts = `{url: %q, token: tokens(%q, %s), pingInterval: 600000%s}` // no pings: the fake answers none
	cases := []struct{ name, make, extra string }{
		{"soon", `() => jwt({sub: "s", exp: (Date.now() + 5000) / 1000})`, ""},
		{"tight", `(n) => jwt({sub: "t", exp: (Date.now() + (n === 1 ? 5000 : 2400)) / 1000})`, ""},
		{"no-exp", `() => jwt({sub: "n"})`, ""},
		{"opaque", `() => "opaque-token"`, ""},
		{"short", `() => jwt({sub: "h", exp: (Date.now() + 1500) / 1000})`, ""},
		{"far", `() => jwt({sub: "f", exp: expIn(30 * 86400 * 1000)})`, ""},
		{"same", `(() => { const t = jwt({sub: "m", exp: (Date.now() + 4000) / 1000}); return () => t; })()`, ""},
		{"failing", `(n) => { if (n > 1) throw new Error("no token today"); return jwt({sub: "e", exp: (Date.now() + 4000) / 1000}); }`, ""},
		{"raw", `() => jwt({sub: "r", exp: (Date.now() + 3000) / 1000})`, `, protocol: "raw"`},
	}
	for _, c := range cases {
		h.start(c.name, fmt.Sprintf(opts, h.fake.url("case="+c.name), c.name, c.make, c.extra))
	}

	wait.For(t, patience, func() bool { f, _ := h.authSent("case=soon"); return len(f) >= 2 }, "soon: two refreshes")
	wait.For(t, patience, func() bool { f, _ := h.authSent("case=tight"); return len(f) >= 3 }, "tight: three refreshes")
	wait.For(t, patience, func() bool { return h.calls("same") >= 2 }, "same: the function called again")
	wait.For(t, patience, func() bool { return len(ofType(h.events("failing"), "error")) > 0 }, "failing: an error event")

	origin := mustEval[float64](h.tab, `performance.timeOrigin`) // performance.now() + origin = Date.now()
	// exp of a token, in ms since the epoch.
	expOf := func(token string) float64 {
		return mustEval[float64](h.tab, fmt.Sprintf(`JSON.parse(atob(%q.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp * 1000`, token))
	}

	// soon: each refresh sends the function's next token, between the planned moment (a
	// quarter of the time left before exp, judged at the open or the last refresh) and exp.
	frames, at := h.authSent("case=soon")
	tokens := h.issued("soon")
	evs := h.events("soon")
	refreshes := ofType(evs, "refresh")
	from := origin + ofType(evs, "open")[0].T // at least the moment the client judged from
	for i := range 2 {
		if want := "auth " + tokens[i+1]; frames[i] != want {
			t.Fatalf("soon: refresh %d sent %q, want %q (the function's token %d)", i+1, frames[i], want, i+2)
		}
		exp, sent := expOf(tokens[i]), origin+at[i]
		if planned := exp - (exp-from)/4; sent < planned-20 || sent >= exp { // 20 ms: the open event came after the plan
			t.Errorf("soon: refresh %d sent %.0f ms before exp, want between exp and %.0f ms before it", i+1, exp-sent, exp-planned)
		}
		if len(refreshes) <= i || refreshes[i].Exp != expOf(tokens[i+1]) {
			t.Errorf("soon: refresh events %+v, want event %d with exp %.0f", refreshes, i+1, expOf(tokens[i+1]))
		}
		from = sent
	}

	// tight: 2.4 s tokens; a quarter before exp would be 1.8 s after the last refresh.
	_, at = h.authSent("case=tight")
	for i := 1; i < len(at); i++ {
		if d := at[i] - at[i-1]; d < 1990 { // 10 ms for timer coarsening
			t.Errorf("tight: refreshes %.0f ms apart (sent at %v), want at least 2000 ms", d, at)
		}
	}

	for _, name := range []string{"no-exp", "opaque", "short", "far", "raw"} {
		if n := h.calls(name); n != 1 {
			t.Errorf("%s: token function called %d times, want once (no refresh)", name, n)
		}
	}
	for _, name := range []string{"no-exp", "opaque", "short", "far", "raw", "same", "failing"} {
		if f, _ := h.authSent("case=" + name); len(f) != 0 {
			t.Errorf("%s: sent %q, want no auth frame", name, f)
		}
		if r := ofType(h.events(name), "refresh"); len(r) != 0 {
			t.Errorf("%s: refresh events %+v, want none", name, r)
		}
	}
	if e := ofType(h.events("failing"), "error"); !strings.Contains(e[0].Error, "no token today") {
		t.Errorf("failing: error event %+v, want the function's error", e[0])
	}
	// A handful per refresh and per connection; a timer firing early over and over would make
	// thousands.
	if n := mustEval[int](h.tab, `timers`); n > 100 {
		t.Errorf("setTimeout called %d times, want about one per refresh", n)
	}
	for _, c := range cases {
		if n, s := h.fake.count(c.name), h.state(c.name); n != 1 || s != "open" {
			t.Errorf("%s: %d connections, state %q; want one, open", c.name, n, s)
		}
	}
}

// TestClientRefreshWithGateway: against the real gateway with JWTs (HS256) and
// enforce-token-expiry on (the default). A wsgateway.v1 client whose tokens live 5 s refreshes
// in-band, so its one connection outlives its first token's exp — and its second's — and
// still receives; no reconnect. A raw-mode client cannot refresh: the gateway closes it with
// 4002 at exp, and it reconnects at once (a wait in [0, backoff.initial), not a growing
// backoff) with a new token from its function, twice over. A v1 client whose function returns
// the same token again sends nothing, gets the 4002, and comes back at once with a fresh token,
// resuming where it was.
func TestClientRefreshWithGateway(t *testing.T) {
	const secret = "refresh-test-secret-0123456789-0123456789" // HS256: at least 32 bytes
	cfg := devConfig()
	cfg.JWTSecret = secret // --dev stays on for the open API; tokens are verified and expire
	h := withTokenKit(startHarnessWith(t, cfg))
	mustEval[bool](h.tab, `(Math.random = () => 0.999, true)`) // retry waits are their ceilings × 0.999
	// Whole seconds, as issuers write them: a 5 s token has 4 to 5 s left; a 3 s one, 2 to 3 s.
	h.start("v1", fmt.Sprintf(`{url: %q, token: tokens("v1", () => jwt({sub: "rita", exp: expIn(5000)}, %q))}`, h.wsURL(), secret))
	h.start("raw", fmt.Sprintf(`{url: %q, protocol: "raw", backoff: {initial: 100, max: 30000},
		token: tokens("raw", () => jwt({sub: "rudi", exp: expIn(3000)}, %q))}`, h.wsURL(), secret))
	h.start("stale", fmt.Sprintf(`{url: %q, backoff: {initial: 100, max: 30000},
		token: tokens("stale", (() => { let first; return (n) => n === 1 ? (first = jwt({sub: "stan", exp: expIn(4000)}, %[2]q)) : n === 2 ? first : jwt({sub: "stan", exp: expIn(60000)}, %[2]q); })())}`,
		h.wsURL(), secret))

	wait.For(t, patience, func() bool { return h.state("v1") == "open" && h.state("stale") == "open" }, "v1 and stale open")
	h.gw.push(t, "stan", `"before"`)
	h.waitMessages("stale", 1)

	// v1: past its first token's exp, and past the second's, on the same connection.
	firstExp := mustEval[float64](h.tab, `JSON.parse(atob(issued["v1"][0].split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp * 1000`)
	wait.For(t, patience, func() bool {
		return h.calls("v1") >= 3 && mustEval[bool](h.tab, fmt.Sprintf(`Date.now() > %f + 1500`, firstExp))
	}, "v1: two refreshes, and 1.5 s past the first token's exp")
	h.gw.push(t, "rita", `"still here"`)
	if m := h.waitMessages("v1", 1); m[0].Data != `"still here"` || seqOf(m[0]) != 1 {
		t.Errorf("v1: message %+v, want \"still here\" with seq 1", m[0])
	}
	evs := h.events("v1")
	if o, c := ofType(evs, "open"), ofType(evs, "close"); len(o) != 1 || len(c) != 0 || h.state("v1") != "open" {
		t.Errorf("v1: %d opens, closes %+v, state %q; want one connection that stayed open", len(o), c, h.state("v1"))
	}
	frames, _ := h.authSent("token=" + h.issued("v1")[0])
	if tokens := h.issued("v1"); len(frames) < 2 || frames[0] != "auth "+tokens[1] || frames[1] != "auth "+tokens[2] {
		t.Errorf("v1: the connection sent %q, want auth with the function's second and third tokens", frames)
	}

	// raw: closed with 4002 at each exp, back at once with the next token.
	wait.For(t, patience, func() bool { return len(ofType(h.events("raw"), "open")) >= 3 }, "raw: reconnected twice")
	evs = h.events("raw")
	closes, retries := ofType(evs, "close"), ofType(evs, "retry")
	for i := range 2 {
		if closes[i].Code != 4002 {
			t.Errorf("raw: close %d %+v, want 4002 (token expired)", i+1, closes[i])
		}
		if d := retries[i].Delay; d < 99.8 || d > 100 {
			t.Errorf("raw: retry %d waits %.1f ms, want 99.9 (backoff.initial × 0.999: at once, not backing off)", i+1, d)
		}
	}
	rawTokens := h.issued("raw")
	for i := range 3 {
		if s := h.sockets("token=" + rawTokens[i]); len(s) != 1 || len(withoutPings(s[0].Sent)) != 0 {
			t.Errorf("raw: sockets with token %d: %+v, want one, sending no auth", i+1, s)
		}
	}

	// stale: the function's second token was the first again: not sent; 4002; a fresh token.
	wait.For(t, patience, func() bool { return len(ofType(h.events("stale"), "open")) >= 2 }, "stale: reconnected")
	evs = h.events("stale")
	closes, retries = ofType(evs, "close"), ofType(evs, "retry")
	if closes[0].Code != 4002 || retries[0].Delay > 100 {
		t.Errorf("stale: close %+v, retry %+v; want 4002 and a wait under backoff.initial", closes[0], retries[0])
	}
	stale := h.issued("stale")
	if f, _ := h.authSent("token=" + stale[0]); len(f) != 0 || h.calls("stale") != 3 || stale[1] != stale[0] {
		t.Errorf("stale: %d calls, first connection sent %q; want 3 calls and no auth for the same token", h.calls("stale"), f)
	}
	second := h.sockets("token=" + stale[2])
	if len(second) != 1 || !strings.Contains(second[0].URL, "since=1") {
		t.Errorf("stale: sockets with the third token %+v, want one resuming with since=1", second)
	}
	h.gw.push(t, "stan", `"after"`)
	if got := seqs(h.waitMessages("stale", 2)); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("stale: seqs %v, want [1 2]", got)
	}
}
