package web_test

// Tests of wsgateway.js on its own: the module is imported by a page of the real gateway and
// pointed either at that gateway (the wsgateway.v1 protocol end to end: resume, acks, gap,
// reset, raw mode) or at a fake WebSocket server that misbehaves on request (closes with a
// given code, stays silent, sends binary, sends the frames it is told to), so that every branch
// of the reconnect policy and of the frame parser is exercised.

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

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
			h.waitState(c.name, "stopped")
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

	h.waitState("real", "open")
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
