package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// The core guarantee. A pusher sends thousands of sequence-numbered messages through the APIs
// of alternating nodes while the user keeps disconnecting (cleanly) and reconnecting to A and
// B in turn; a final connection collects the tail. Across all connections, in the order they
// existed, every number must arrive exactly once and strictly increasing: what a closing
// connection had not sent stays unacknowledged in the inbox (a raw connection acknowledges
// what it wrote, recorded before its close frame goes out), and a reconnect (on any node)
// reads it before anything live.
func TestOrderAcrossReconnects(t *testing.T) {
	c := newCluster(t)
	const user, total = "ord", 3000
	nodes, p, sessions := alternate(t, c, user, total, func(i int, n, _ *node, cl *client) session {
		// Hold the connection for a varying while (0 to 40ms), so that closes hit every
		// phase: during the flush, mid-stream and between pushes.
		time.Sleep(time.Duration(i%5) * 10 * time.Millisecond)
		frames, err := cl.closeClean()
		if err != nil {
			t.Fatalf("closing connection %d on %s: %v", i, n.ID, err)
		}
		return session{n.ID, frames}
	})
	p.check(t)
	sessions = append(sessions, finalSession(t, c, nodes[0], nodes[1], user))
	checkSessions(t, sessions, total)
	for _, n := range nodes {
		wait.For(t, timeout, n.idle, "node %s never finished its closed connections", n.ID)
	}
	c.waitAcked(user)
	t.Logf("%d pushes (%d stored offline by the push itself) over %d connections", total, p.queued, len(sessions))
}

// alternate starts nodes a and b of c and a pusher of total messages to user through both,
// then dials one connection of user after another until the pusher is done, on a and b in turn:
// conn gets the connection's number, its node, the other node and the connection, and returns
// what it received.
func alternate(t *testing.T, c *cluster, user string, total int, conn func(i int, n, other *node, cl *client) session) ([]*node, *pusher, []session) {
	nodes := []*node{c.startNode("a"), c.startNode("b")}
	p := startPusher(t, c, user, total, nodes...)
	var sessions []session
	for i := 0; !p.finished(); i++ {
		n := nodes[i%2]
		sessions = append(sessions, conn(i, n, nodes[(i+1)%2], dial(t, n.Addr, as(user))))
	}
	return nodes, p, sessions
}

// Server-initiated closes keep the guarantee too: the user is kicked (4001) again and again
// while pushes flow, and reconnects to the other node the moment the close frame arrives.
// The kicked node must have stored what it had not sent before the client learns of the
// close, or the next node's flush misses it.
func TestOrderAcrossKicks(t *testing.T) {
	c := newCluster(t)
	const user, total = "kicked", 1500
	nodes, p, sessions := alternate(t, c, user, total, func(i int, n, other *node, cl *client) session {
		time.Sleep(time.Duration(i%4) * 10 * time.Millisecond)
		status, body, err := c.do(http.MethodDelete, other.URL("/api/v1/users/"+user+"/connections"), nil)
		if err != nil || status != http.StatusOK {
			t.Fatalf("kick: %d %s %v", status, body, err)
		}
		// A kick may also hit the next connection if it is faster than the kick's delivery
		// to the other node; that connection then simply ends early, with 4001 as well.
		if code := cl.closeCode(t, fmt.Sprintf("connection %d on %s", i, n.ID)); code != 4001 {
			t.Fatalf("connection %d on %s: close code %d (%v), want 4001", i, n.ID, code, cl.err())
		}
		return session{n.ID, cl.received()}
	})
	p.check(t)
	// The last kick may still be on its way to either node: wait until it has been applied
	// (nobody holds the user) before the final connection, so that it does not end that one.
	for _, n := range nodes {
		wait.For(t, timeout, n.idle, "node %s still holds a kicked connection", n.ID)
	}
	sessions = append(sessions, finalSession(t, c, nodes[0], nodes[1], user))
	checkSessions(t, sessions, total)
	t.Logf("%d pushes over %d connections", total, len(sessions))
}

// Shutdown (SIGTERM's drain) under load: the user's node shuts down while pushes keep coming
// through another node; the client gets 1001 and reconnects at once to the next node, twice.
// Everything arrives exactly once and in order: the draining node stores what it had not sent
// before it sends 1001.
func TestShutdownUnderLoad(t *testing.T) {
	c := newCluster(t)
	a, b, cn := c.startNode("a"), c.startNode("b"), c.startNode("c")
	const user, total = "drained", 1500
	p := startPusher(t, c, user, total, cn)

	var sessions []session
	for i, n := range []*node{a, b} {
		cl := dial(t, n.Addr, as(user))
		wait.For(t, timeout, func() bool { return p.pushed.Load() >= int64(total*(i+1)/3) || p.finished() },
			"pusher stalled at %s", wait.Lazy(func() string { return strconv.FormatInt(p.pushed.Load(), 10) }))
		stopped := make(chan error, 1)
		go func() { stopped <- n.Shutdown() }()
		if code := cl.closeCode(t, "on "+n.ID); code != websocket.CloseGoingAway {
			t.Fatalf("on %s: close code %d (%v), want 1001", n.ID, code, cl.err())
		}
		sessions = append(sessions, session{n.ID, cl.received()})
		// Reconnect at once (next iteration or the final connection), while n may still be
		// shutting down; its Shutdown is checked afterwards.
		defer func() {
			if err := <-stopped; err != nil {
				t.Errorf("node %s shutdown: %v", n.ID, err)
			}
		}()
	}
	for !p.finished() {
		cl := dial(t, cn.Addr, as(user))
		wait.For(t, timeout, func() bool { return p.finished() || cl.count() > 0 }, "nothing arrives on c")
		frames, err := cl.closeClean()
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, session{cn.ID, frames})
	}
	p.check(t)
	sessions = append(sessions, finalSession(t, c, cn, cn, user))
	checkSessions(t, sessions, total)
}

// session is what one connection received, in order.
type session struct {
	node   string
	frames []frame
}

// finalSession connects to n, pushes an end marker through via and collects everything up
// to it. Order is guaranteed, so once the marker arrived everything pushed before it did,
// and anything misplaced (a duplicate, a late flush) would show up before it.
func finalSession(t *testing.T, c *cluster, n, via *node, user string) session {
	t.Helper()
	cl := dial(t, n.Addr, as(user))
	c.push(via.URL(""), user, `"end"`)
	wait.For(t, timeout, func() bool {
		f := cl.received()
		return len(f) > 0 && string(f[len(f)-1].data) == `"end"`
	}, "final connection never received the end marker; got %s", wait.Lazy(func() string { return ranges(cl.received()) }))
	frames, err := cl.closeClean()
	if err != nil {
		t.Fatalf("closing the final connection: %v", err)
	}
	return session{n.ID, frames[:len(frames)-1]}
}

// checkSessions verifies that across sessions, in order, the numbers 1..total arrived
// exactly once each and strictly increasing; on failure it shows every session compactly.
func checkSessions(t *testing.T, sessions []session, total int) {
	t.Helper()
	seen := make(map[int]int, total) // number → session index
	last := 0
	var problems []string
	for si, s := range sessions {
		for fi, f := range s.frames {
			v, err := strconv.Atoi(string(f.data))
			if err != nil {
				t.Fatalf("session %d (%s) frame %d: unexpected %v", si, s.node, fi, f)
			}
			if prev, dup := seen[v]; dup {
				problems = append(problems, fmt.Sprintf("%d twice: sessions %d and %d", v, prev, si))
			} else if v <= last {
				problems = append(problems, fmt.Sprintf("%d after %d in session %d (frame %d)", v, last, si, fi))
			}
			seen[v] = si
			last = max(last, v)
		}
	}
	var missing []int
	for i := 1; i <= total; i++ {
		if _, ok := seen[i]; !ok {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d numbers never arrived: %v", len(missing), total, missing[:min(20, len(missing))]))
	}
	if len(problems) > 0 {
		var b strings.Builder
		for si, s := range sessions {
			fmt.Fprintf(&b, "  session %d on %s: %s\n", si, s.node, ranges(s.frames))
		}
		t.Fatalf("%d problems, first ones: %s\nsessions:\n%s", len(problems),
			strings.Join(problems[:min(10, len(problems))], "; "), b.String())
	}
}

// ranges renders numbered frames compactly: "1-17 20 18-19".
func ranges(frames []frame) string {
	var parts []string
	start, prev := -1, -1
	flush := func() {
		switch {
		case start < 0:
		case start == prev:
			parts = append(parts, strconv.Itoa(start))
		default:
			parts = append(parts, fmt.Sprintf("%d-%d", start, prev))
		}
	}
	for _, f := range frames {
		v, err := strconv.Atoi(string(f.data))
		if err != nil {
			flush()
			start, prev = -1, -1
			parts = append(parts, string(f.data))
			continue
		}
		if start >= 0 && v == prev+1 {
			prev = v
			continue
		}
		flush()
		start, prev = v, v
	}
	flush()
	if len(parts) == 0 {
		return "(nothing)"
	}
	return strings.Join(parts, " ")
}
