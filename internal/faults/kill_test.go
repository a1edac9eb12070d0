package faults

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
	"github.com/wsgateway/wsgateway/internal/testutil/nginxtest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// Two gateway processes behind the shipped nginx config; a v1 client, connected through nginx
// to node X, stops reading while 32 KB pushes continue at 50 a second: its socket, nginx and
// the kernel buffers fill, then X's send queue. X is SIGKILLed with messages in its queue and
// in the kernel. Pushes go on through nginx (retried with their id after a 502 from the dead
// node, so a push X ran before dying is not stored twice). The client reads again, drains what
// reached its side, reconnects through nginx, lands on the other node and resumes with since:
// every push answered 200 arrives once, in order.
func TestNodeKilledWithMessagesInHand(t *testing.T) {
	rs := redistest.Start(t)
	prefix := redistest.Prefix(t)
	nodes := []*procNode{startProcNode(t, "x", rs.URL(), prefix), startProcNode(t, "y", rs.URL(), prefix)}
	lb := nginxtest.Start(t, "../../deploy/nginx.conf", []string{nodes[0].Addr, nodes[1].Addr})

	// The client's socket keeps a small receive buffer, as a phone's would: on loopback the
	// kernel's autotuning grows it to many megabytes, which would take a minute of pushes to
	// fill before anything waits in the node.
	dialer := &websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_ = c.(*net.TCPConn).SetReadBuffer(32 << 10)
			}
			return c, err
		},
	}
	r := newReader(t, client.Options{URL: userURL(lb, "k"), SilenceTimeout: 3 * time.Second, Dialer: dialer}, true)
	var x, y *procNode
	wait.For(t, timeout, func() bool {
		for i, n := range nodes {
			if n.Metric("wsgateway_connections") == 1 {
				x, y = n, nodes[1-i]
				return true
			}
		}
		return false
	}, "no node reports the client's connection")

	p := startPusher(t, &pusher{bases: []string{"http://" + lb}, users: []string{"k"}, tag: "s",
		every: 20 * time.Millisecond, pad: 32 << 10, retry: true})
	l := p.ledgers["k"]
	p.waitSent(t, 20, "while the client reads")
	wait.For(t, timeout, func() bool { return r.count() >= 20 }, "the first messages: %s", wait.Lazy(func() string { return r.tail(5) }))

	r.pause()
	// X has written more than the client took (the rest is in the kernel's and nginx's
	// buffers) and holds more than it has written (its send queue).
	var queued, inFlight int64
	wait.For(t, timeout, func() bool {
		delivered := int64(x.Metric("wsgateway_messages_delivered_total"))
		queued, inFlight = p.sent.Load()-delivered, delivered-int64(r.count())
		return queued >= 10 && inFlight >= 3
	}, "node %s never backed up: %s", x.ID, wait.Lazy(func() string {
		return "queued " + strconv.FormatInt(queued, 10) + ", between the node and the client " + strconv.FormatInt(inFlight, 10)
	}))
	if err := x.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait.For(t, timeout, x.Exited, "node %s survived SIGKILL", x.ID)
	t.Logf("node %s killed with about %d messages in its queue and %d between it and the client", x.ID, queued, inFlight)

	r.resume()
	waitEvent(t, r, client.EventConnected, 2)
	wait.For(t, timeout, func() bool { return y.Metric("wsgateway_connections") == 1 },
		"the client did not come back on node %s", y.ID)
	p.waitSent(t, 20, "after the reconnect")
	p.check(t)
	r.waitAll(t, "k", l, timeout)
	t.Logf("%d pushes answered 200 (%d attempts), all arrived once, in order", l.count(), p.tried.Load())
}

// procNode is a gateway run as a process (gwbin.Start), so that a test can SIGKILL it.
type procNode struct{ *gwbin.Process }

// startProcNode starts a --dev gateway process against redisURL and waits until it is ready.
// The cleanup stops it (SIGTERM, then SIGKILL) unless it is gone.
func startProcNode(t *testing.T, id, redisURL, prefix string) *procNode {
	t.Helper()
	return &procNode{gwbin.Start(t, id, gwbin.Options{
		Args:  []string{"--redis-url", redisURL, "--key-prefix", prefix, "--log-level", "debug"},
		Ready: timeout, StopSignal: syscall.SIGTERM, StopGrace: shutdownWait,
	})}
}

// Metric reads one counter or gauge from the node's /metrics, summed over its labels; -1 when
// the node does not answer.
func (n *procNode) Metric(name string) float64 {
	resp, err := httpc.Get("http://" + n.Addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}
