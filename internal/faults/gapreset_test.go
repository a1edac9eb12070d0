package faults

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// offline-max 5 kept messages 8..12 of 12; a client resuming from 3 (since=3) asked for 4..12.
// It gets the frame "gap 4 7", seen as an EventGap before message 8, then 8..12 once, in order,
// and its position moves past the gap.
func TestGapWhenTrimmed(t *testing.T) {
	rs := redistest.Start(t)
	a := startNode(t, "a", func(c *config.Config) {
		onRedis(rs, redistest.Prefix(t))(c)
		c.OfflineMax = 5
	}, server.Options{})

	l := newLedger()
	for i := 1; i <= 12; i++ {
		data := strconv.Quote("g-" + strconv.Itoa(i))
		ans := mustPush(t, a.URL(""), "gappy", "", data)
		if ans.Seq != int64(i) {
			t.Fatalf("push %d got seq %d", i, ans.Seq)
		}
		if i >= 8 {
			l.accept(data, ans.Seq)
		}
	}
	r := newReader(t, client.Options{URL: userURL(a.Addr, "gappy"), Since: 3}, true)
	r.waitFrom(t, "gappy", l, timeout, 8) // 8..12, nothing else
	gaps := r.eventsOf(client.EventGap)
	if len(gaps) != 1 || gaps[0].From != 4 || gaps[0].To != 7 {
		t.Fatalf("gap events %+v, want one for 4..7", gaps)
	}
	if g, m := r.trailIndex("[gap 4-7]"), r.trailIndex("8 "); g < 0 || g > m {
		t.Fatalf("the gap was not reported before message 8: %s", r.tail(10))
	}
	if last := r.c.Last(); last != 12 {
		t.Fatalf("Last() = %d, want 12", last)
	}
}

// A user's state expires (offline-ttl and resume-ttl of 1 s on node A, really waited out in
// Redis) and numbering starts again at 1. Two clients see it as a reset:
//   - "live" stays connected to A across the expiry at position 3; the new message 1 arrives
//     live, the node sees the number fall, sends "reset 1" and then message 1 — an EventReset,
//     then the message;
//   - "back" resumes (a restarted app with its saved position 3, since=3) on node B after two
//     new messages: "reset 2", then 1 and 2.
//
// The new messages are pushed through node B, whose default offline-ttl keeps them.
func TestResetAfterExpiry(t *testing.T) {
	rs := redistest.Start(t)
	prefix := redistest.Prefix(t)
	a := startNode(t, "a", func(c *config.Config) {
		onRedis(rs, prefix)(c)
		c.OfflineTTL, c.ResumeTTL = time.Second, time.Second
	}, server.Options{})
	b := startNode(t, "b", onRedis(rs, prefix), server.Options{})
	rdb := rs.Client(t)

	users := []string{"live", "back"}
	old := map[string]*ledger{}
	for _, u := range users {
		old[u] = newLedger()
		for i := 1; i <= 3; i++ {
			data := strconv.Quote("old-" + strconv.Itoa(i))
			old[u].accept(data, mustPush(t, a.URL(""), u, "", data).Seq)
		}
	}
	live := newReader(t, client.Options{URL: userURL(a.Addr, "live")}, true)
	live.waitAll(t, "live before the expiry", old["live"], timeout)
	first := newReader(t, client.Options{URL: userURL(a.Addr, "back")}, true)
	first.waitAll(t, "back before the expiry", old["back"], timeout)
	saved := first.c.Last()
	_ = first.c.Close() // acknowledges what it got
	if saved != 3 {
		t.Fatalf("back's position is %d, want 3", saved)
	}

	var keys []string
	for _, u := range users {
		keys = append(keys, prefix+"inbox:{"+u+"}", prefix+"inbox:{"+u+"}:state")
	}
	wait.For(t, timeout, func() bool {
		n, err := rdb.Exists(context.Background(), keys...).Result()
		return err == nil && n == 0
	}, "the users' inbox keys never expired")

	fresh := map[string]*ledger{"live": newLedger(), "back": newLedger()}
	for i := 1; i <= 2; i++ {
		for _, u := range users {
			data := strconv.Quote("new-" + strconv.Itoa(i))
			ans := mustPush(t, b.URL(""), u, "", data)
			if ans.Seq != int64(i) {
				t.Fatalf("%s: push %d after the expiry got seq %d: numbering did not start again", u, i, ans.Seq)
			}
			fresh[u].accept(data, ans.Seq)
		}
		if i == 1 {
			// live's catch-up then reads while 1 is the latest number: its reset says 1.
			wait.For(t, timeout, func() bool { return live.count() >= 4 }, "live: %s", wait.Lazy(func() string { return live.tail(10) }))
		}
	}

	// live: the three old messages, the reset, then the new ones from 1.
	wait.For(t, timeout, func() bool { return live.count() >= 5 }, "live: %s", wait.Lazy(func() string { return live.tail(10) }))
	got := live.received()
	checkOnce(t, "live before the reset", got[:3], old["live"], 1)
	checkOnce(t, "live after the reset", got[3:], fresh["live"], 1)
	if resets := live.eventsOf(client.EventReset); len(resets) != 1 || resets[0].Latest != 1 {
		t.Fatalf("live: reset events %+v, want one with latest 1", resets)
	}
	if rst, m := live.trailIndex("[reset 1]"), live.trailIndex(`1 "new-1"`); rst < 0 || rst > m {
		t.Fatalf("live: the reset was not reported before the new message 1: %s", live.tail(10))
	}

	back := newReader(t, client.Options{URL: userURL(b.Addr, "back"), Since: saved}, true)
	back.waitAll(t, "back", fresh["back"], timeout)
	if resets := back.eventsOf(client.EventReset); len(resets) != 1 || resets[0].Latest != 2 {
		t.Fatalf("back: reset events %+v, want one with latest 2", resets)
	}
	if len(back.eventsOf(client.EventGap)) != 0 {
		t.Fatalf("back: a gap after the reset: %s", back.tail(10))
	}
}

// trailIndex returns the position of the first entry of the trail that starts with prefix, -1
// when none does.
func (r *reader) trailIndex(prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range r.trail {
		if strings.HasPrefix(s, prefix) {
			return i
		}
	}
	return -1
}
