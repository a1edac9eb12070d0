package web_test

// Tests of wsgateway.js against the real gateway: where a client resumes (since), what its acks
// do, gaps, resets, the position kept in localStorage, and raw mode.

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// TestClientResume: a client kicked by the API (4001: stopped) and connected again resumes
// with since=<last seq>: the gateway sends exactly what it missed, once, in order. No ack had
// reached the gateway (ackInterval is out of reach), so without since it would have sent all
// six again: the frames on the second socket show that it did not.
func TestClientResume(t *testing.T) {
	h := startHarness(t)
	h.start("r", fmt.Sprintf(`{url: %q, userId: "rosa", ackInterval: 600000, ackEvery: 100000}`, h.wsURL()))
	h.awayAndBack("r", "rosa", "m", 3, 5)
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

// TestClientAcksReachGateway: the client's acks reach the gateway: once they are recorded
// (within about a second: the gateway writes positions in batches), a connection without since,
// which gets every unacknowledged message, gets nothing old — with wsgateway.v1 and raw.
func TestClientAcksReachGateway(t *testing.T) {
	h := startHarness(t)
	h.start("a", fmt.Sprintf(`{url: %q, userId: "abe"}`, h.wsURL()))
	h.waitState("a", "open")
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
	h.awayAndBack("g", "gil", "g", 2, 10)
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
