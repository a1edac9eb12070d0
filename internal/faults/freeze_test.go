package faults

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/faultproxy"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// A mobile client's network goes dark without a FIN or RST (a phone switching cells): a TCP
// proxy between the client and its node stops forwarding both ways while pushes flow at 25 a
// second. Everything the node writes meanwhile goes into a socket nobody reads. The client
// notices the silence after its SilenceTimeout (1.5 s), reconnects straight to the node (its
// new network) with since, and ends with every push exactly once, in order.
//
// With the server's default heartbeats (ping-interval 25s, pong-timeout 10s) the node notices
// the dead connection only 35 s later: the test checks that it still holds it when the client
// has everything, so the recovery cannot come from the server's side. Raw clients lost every
// message of that window (24 % in the original measurement); the catch-up on connect (a read of
// the inbox after since) is what recovers them here.
func TestFrozenNetwork(t *testing.T) {
	for _, tc := range []struct {
		name       string
		heartbeats func(*config.Config)
		// serverNotices: the node's heartbeat ends the frozen connection within the test.
		serverNotices bool
	}{
		{"default heartbeats", func(*config.Config) {}, false},
		{"short heartbeats", func(c *config.Config) {
			c.PingInterval, c.PongTimeout = 500*time.Millisecond, 500*time.Millisecond
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := redistest.Start(t)
			n := startNode(t, "a", func(c *config.Config) {
				onRedis(rs, redistest.Prefix(t))(c)
				tc.heartbeats(c)
			}, server.Options{})
			proxy := faultproxy.Start(t, n.Addr)

			// The client's URL names the proxy; its dialer takes the first connection
			// there and every later one straight to the node: the phone on a new network.
			var dials, direct atomic.Int32
			dialer := &websocket.Dialer{
				HandshakeTimeout: 5 * time.Second,
				NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					if dials.Add(1) > 1 {
						direct.Add(1)
						addr = n.Addr
					}
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				},
			}
			r := newReader(t, client.Options{
				URL:            userURL(proxy.Addr(), "phone"),
				SilenceTimeout: 1500 * time.Millisecond,
				Dialer:         dialer,
			}, true)

			p := startPusher(t, &pusher{bases: []string{n.URL("")}, users: []string{"phone"}, tag: "f", every: 40 * time.Millisecond})
			l := p.ledgers["phone"]
			p.waitSent(t, 25, "before the freeze")
			wait.For(t, timeout, func() bool { return r.count() >= 20 }, "messages before the freeze: %s", wait.Lazy(func() string { return r.tail(5) }))

			proxy.Freeze() // no FIN, no RST: the link just goes dark
			frozenAt := p.sent.Load()
			d := waitEvent(t, r, client.EventDisconnected, 1)
			if !errors.Is(d.Err, client.ErrSilent) {
				t.Fatalf("the client's connection ended with %+v, want ErrSilent", d)
			}
			waitEvent(t, r, client.EventConnected, 2)
			if direct.Load() == 0 {
				t.Fatal("the client reconnected, but not straight to the node")
			}
			missed := p.sent.Load() - frozenAt
			p.waitSent(t, 25, "after the reconnect")
			p.stop()
			r.waitAll(t, "phone", l, timeout)
			if missed < 10 {
				t.Fatalf("only %d pushes were made while the link was frozen; the test proves nothing", missed)
			}
			// With the default heartbeats the node has not noticed: the frozen connection is
			// still open there, next to the new one, so nothing the client got came from the
			// server finding out. With short ones it has dropped it by now.
			want := 2
			if tc.serverNotices {
				want = 1
			}
			wait.For(t, timeout, func() bool { return n.Srv.ForTest().Hub().Conns() == want },
				"the node holds %s connections, want %d", wait.Lazy(func() string { return strconv.Itoa(n.Srv.ForTest().Hub().Conns()) }), want)
			t.Logf("%d pushes, %d of them while the link was frozen or the client reconnecting; all arrived once, in order",
				l.count(), missed)
		})
	}
}

// waitEvent waits until the reader saw n events of type typ and returns the n-th.
func waitEvent(t *testing.T, r *reader, typ client.EventType, n int) client.Event {
	t.Helper()
	wait.For(t, timeout, func() bool { return len(r.eventsOf(typ)) >= n }, "%d %v event(s); trail: %s",
		n, typ, wait.Lazy(func() string { return r.tail(10) }))
	return r.eventsOf(typ)[n-1]
}
