package faults

import (
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/faultproxy"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// lostWithin is the gateway's bound for a message lost on the pub/sub path: it reaches every
// live connection within 10 s.
const lostWithin = 10 * time.Second

// A node's pub/sub connection goes silent: a proxy between the node and Redis swallows what
// Redis sends on it, without closing it, so Redis still counts the node as the user's
// subscriber (pushes answer online:true) and the node sees nothing wrong on the socket. The
// node's own probe stops coming back; it rebuilds the connection and reads the inbox of every
// user it holds (Hub.Resync). The v1 user on that node gets every message pushed into the
// silence within 10 s, in order, on the same connection — and no later push is made until then,
// so nothing but that catch-up can deliver them.
func TestPubSubBlackholed(t *testing.T) {
	rs := redistest.Start(t)
	// The proxy notes the node's pub/sub connection by its SUBSCRIBE (or SSUBSCRIBE).
	wp := faultproxy.Start(t, rs.Addr)
	wp.Mark(faultproxy.Upstream, "subscribe")
	a := startNode(t, "a", onRedis(rs, redistest.Prefix(t)), server.Options{
		BusRedisAddr:  wp.Addr(),
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  1500 * time.Millisecond,
	})
	r := newReader(t, client.Options{URL: userURL(a.Addr, "held")}, true)
	l := newLedger()
	ledgers := map[string]*ledger{"held": l}
	run := func(tag string, n int64, what string) {
		p := startPusher(t, &pusher{bases: []string{a.URL("")}, users: []string{"held"}, tag: tag,
			every: 40 * time.Millisecond, ledgers: ledgers})
		p.waitSent(t, n, what)
		p.stop()
	}

	run("live", 20, "before the wedge")
	r.waitAll(t, "held before the wedge", l, timeout)

	rebuilt := a.Metric("wsgateway_pubsub_reconnects_total")
	if n := wp.BlackholeMarked(faultproxy.Downstream); n == 0 {
		t.Fatal("no subscribed connection through the proxy to wedge")
	}
	wedgedAt := time.Now()
	// Redis still counts the wedged connection as the user's subscriber.
	if ans := mustPush(t, a.URL(""), "held", "", `"wedged-0"`); !ans.Online {
		t.Fatalf("push into the wedged link answered %+v, want online:true (Redis still counts the node)", ans)
	} else {
		l.accept(`"wedged-0"`, ans.Seq)
	}
	run("wedged", 15, "into the wedged link")
	accepted, _ := l.snapshot()
	wait.For(t, time.Until(wedgedAt.Add(lostWithin)), func() bool { return r.has(accepted) },
		"messages pushed into the wedged link did not arrive within %v: %s", lostWithin,
		wait.Lazy(func() string { return missing(r.received(), accepted) }))
	t.Logf("the messages pushed into the silence arrived %v after it began", time.Since(wedgedAt).Round(time.Millisecond))
	// The proxy closes nothing by itself: the node closed the wedged connection. Its end
	// reaches the proxy through Redis's side, hence the poll.
	wait.For(t, timeout, func() bool { return wp.BlackholedOpen() == 0 }, "the wedged connection is still open after the rebuild")
	if swallowed := wp.Dropped(faultproxy.Downstream); swallowed == 0 {
		t.Fatal("the proxy swallowed nothing on the wedged connection")
	}
	if a.Metric("wsgateway_pubsub_reconnects_total") <= rebuilt || a.Metric("wsgateway_pubsub_probe_failures_total") == 0 {
		t.Fatal("the node did not rebuild its pub/sub connection after a probe failure")
	}

	run("after", 20, "after the rebuild")
	r.waitAll(t, "held", l, timeout)
	if n := len(r.eventsOf(client.EventConnected)); n != 1 {
		t.Fatalf("the client connected %d times, want once: the node must recover, not the client", n)
	}
}
