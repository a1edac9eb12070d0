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
	"github.com/wsgateway/wsgateway/internal/testutil/faultproxy"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// outage is how long Redis refuses connections after the lost reply: longer than the 3 s for
// which the old offline drain retried before it gave up on messages it had already taken.
const outage = 4 * time.Second

// Issue 12 item 5, kept on the inbox: a user with stored messages connects; the node's read of
// the inbox reaches Redis, but its reply is lost (the proxy between the node and Redis drops
// it), and Redis then refuses connections for 4 s. The old drain had renamed the list before
// answering and lost the messages for good; the inbox read only reads. So the messages stay in
// Redis, unacknowledged, through the outage, and the client that connected through all this
// gets each of them once, in order, when Redis is back.
func TestInboxReadReplyLost(t *testing.T) {
	rs := redistest.Start(t)
	prefix := redistest.Prefix(t)
	proxy := faultproxy.Start(t, rs.Addr)
	// The node's Redis client goes through the proxy; its pub/sub does not, so the fault hits
	// the inbox read alone and the node stays ready (subscribed) throughout.
	a := startNode(t, "a", func(c *config.Config) {
		c.RedisURL = "redis://" + proxy.Addr() + "/0"
		c.KeyPrefix = prefix
	}, server.Options{BusRedisAddr: rs.Addr})
	rdb := rs.Client(t)

	// Large payloads: the read's reply is many times larger than any other reply on the
	// node's connections, so the size of what the proxy dropped says it was that reply.
	l := newLedger()
	for i := 1; i <= 3; i++ {
		data := strconv.Quote("late-" + strconv.Itoa(i) + "." + strings.Repeat("x", 3000))
		ans := mustPush(t, a.URL(""), "late", "", data)
		if !ans.Queued {
			t.Fatalf("push %d to the offline user: %+v, want queued", i, ans)
		}
		l.accept(data, ans.Seq)
	}

	// A first connection of another user loads the read script into Redis, so that the
	// dropped reply is the read's answer, not the NOSCRIPT error of a first EVALSHA.
	warm := newReader(t, client.Options{URL: userURL(a.Addr, "warm")}, true)
	_ = warm.c.Close()
	wait.For(t, timeout, func() bool { return a.Srv.ForTest().Hub().Conns() == 0 }, "the warm-up connection never ended")

	// The read's reply, not the presence count's small one before it.
	proxy.DropNextAtLeast(faultproxy.Downstream, 3*3000)
	r := newReader(t, client.Options{URL: userURL(a.Addr, "late")}, false)
	wait.For(t, timeout, func() bool { return proxy.Dropped(faultproxy.Downstream) > 0 }, "the node never read the inbox")
	proxy.Refuse(true)
	proxy.CloseAll() // the connection that lost the reply goes too
	down := time.Now()
	if n := proxy.Dropped(faultproxy.Downstream); n < 3*3000 {
		t.Fatalf("the proxy dropped a reply of %d bytes, not the inbox read's (more than %d)", n, 3*3000)
	}

	// Throughout the outage the messages stay in the inbox, not acknowledged, and nothing
	// reaches the client. (The outage lasts a fixed time: that is the fault, not a wait.)
	for time.Since(down) < outage {
		n, err := rdb.LLen(context.Background(), prefix+"inbox:{late}").Result()
		ack, _ := rdb.HGet(context.Background(), prefix+"inbox:{late}:state", "ack").Int64()
		if err != nil || n != 3 || ack != 0 {
			t.Fatalf("during the outage the inbox holds %d messages (%v), acknowledged up to %d; want 3 and 0", n, err, ack)
		}
		if got := r.count(); got != 0 {
			t.Fatalf("the client got %d messages while Redis refused the node: the fault did not happen as meant", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	proxy.Refuse(false)

	r.waitAll(t, "late", l, timeout)
	t.Logf("the client connected %d time(s); everything arrived %v after the outage began",
		len(r.eventsOf(client.EventConnected)), time.Since(down).Round(time.Millisecond))
}
