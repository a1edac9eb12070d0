package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/nginxtest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// The shipped deploy/nginx.conf in front of nodes A and B: a browser-like client (with an
// Origin) connects through it and passes the same-origin check, pushes through nginx arrive,
// least_conn spreads clients over both nodes, and when node A shuts down its clients get
// 1001, reconnect through nginx, land on B and get what was pushed meanwhile.
func TestThroughNginx(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	lb := nginxtest.Start(t, "../../deploy/nginx.conf", []string{a.Addr, b.Addr})
	lbURL := "http://" + lb
	origin := http.Header{"Origin": {lbURL}}

	// nginx passes Host with its port ($http_host), so the gateway's same-origin check sees the
	// browser's own origin; a foreign one is still refused.
	if _, resp, err := tryDial(lb, wsclient.Options{User: "mallory", Header: http.Header{"Origin": {"http://evil.example"}}}); err == nil ||
		resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a foreign Origin through nginx: %v, %v; want HTTP 403", resp, err)
	}
	first := dial(t, lb, wsclient.Options{User: "n0", Header: origin})
	data := `{"via": "nginx"}`
	if res := c.push(lbURL, "n0", data); !res.Online {
		t.Fatalf("push through nginx: %+v, want online", res)
	}
	first.expectTexts(t, 0, "n0 through nginx", data)

	clients := map[string]*client{}
	for i := 1; i <= 10; i++ {
		user := fmt.Sprintf("n%d", i)
		clients[user] = dial(t, lb, wsclient.Options{User: user, Header: origin})
	}
	if na, nb := a.Srv.ForTest().Hub().Conns(), b.Srv.ForTest().Hub().Conns(); na == 0 || nb == 0 {
		t.Fatalf("least_conn put %d connections on A and %d on B, want both used", na, nb)
	}

	var onA []string
	for user := range clients {
		if a.Srv.ForTest().Hub().Online(user) {
			onA = append(onA, user)
		}
	}
	if first.closed() {
		t.Fatal("n0's connection ended early")
	}
	if a.Srv.ForTest().Hub().Online("n0") {
		onA = append(onA, "n0")
		clients["n0"] = first
	}
	if err := a.Shutdown(); err != nil {
		t.Fatalf("node A shutdown: %v", err)
	}
	for _, user := range onA {
		if code := clients[user].closeCode(t, user); code != websocket.CloseGoingAway {
			t.Errorf("%s on A: close code %d (%v), want 1001", user, code, clients[user].err())
		}
	}

	// Pushed while they are away: stored (nginx sends the API calls to B now).
	for _, user := range onA {
		for _, m := range []string{`"m1"`, `"m2"`} {
			if res := pushViaLB(t, c, lbURL, user, m); !res.Queued {
				t.Fatalf("push %s to %s while it reconnects: %+v, want queued", m, user, res)
			}
		}
	}
	for _, user := range onA {
		cl := dial(t, lb, wsclient.Options{User: user, Header: origin})
		if !b.Srv.ForTest().Hub().Online(user) {
			t.Fatalf("%s reconnected through nginx but is not on B", user)
		}
		pushViaLB(t, c, lbURL, user, `"live"`)
		cl.expectTexts(t, 0, user+" back on B", `"m1"`, `"m2"`, `"live"`)
	}
	wait.For(t, timeout, func() bool { return b.Srv.ForTest().Hub().Conns() == 11 }, "B should hold all 11 clients, has %s",
		wait.Lazy(func() string { return strconv.Itoa(b.Srv.ForTest().Hub().Conns()) }))
}

// pushViaLB pushes through nginx right after a node went away. nginx answers 502 only when it
// sent the request to the dead node over a keep-alive connection that node had just closed
// (it does not retry a POST once sent); no live node handled it then, so it is retried.
func pushViaLB(t *testing.T, c *cluster, lbURL, user, data string) gwtest.PushResult {
	t.Helper()
	for range 3 {
		status, res, err := c.tryPush(lbURL, user, data)
		if err == nil && status == http.StatusOK {
			return res
		}
		if status != http.StatusBadGateway {
			t.Fatalf("push %s to %s through nginx: status %d, %v", data, user, status, err)
		}
		t.Logf("push %s to %s through nginx: 502, retrying", data, user)
	}
	t.Fatalf("push %s to %s through nginx: 502 three times", data, user)
	return gwtest.PushResult{}
}

// Presence and max-conns-per-user through the shipped deploy/nginx.conf in front of nodes A
// and B: 16 connects of one user through nginx (least_conn spreads them over both nodes) are
// counted as 16 connections on 2 nodes, asked through nginx too; the 17th connect through nginx
// gets HTTP 429 whichever node it lands on, and each node refuses it in turn. A place freed
// through nginx is free again.
func TestPresenceAndCapThroughNginx(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	lb := nginxtest.Start(t, "../../deploy/nginx.conf", []string{a.Addr, b.Addr})
	lbURL := "http://" + lb

	var open []*client
	for range 16 { // the default cap
		open = append(open, dial(t, lb, as("quinn")))
	}
	// dial returns once the node has registered the connection, presence included.
	if na, nb := a.Srv.ForTest().Hub().Conns(), b.Srv.ForTest().Hub().Conns(); na+nb != 16 || na == 0 || nb == 0 {
		t.Fatalf("least_conn put %d connections on A and %d on B, want 16 over both", na, nb)
	}
	for _, base := range []string{lbURL, a.URL(""), b.URL("")} {
		if p := c.presenceOf(base, "quinn"); p != (presenceAnswer{true, 16, 2}) {
			t.Fatalf("presence via %s: %+v, want 16 connections on 2 nodes", base, p)
		}
	}

	// Refused connects hold no connection at the nodes, so least_conn goes on choosing between
	// the two nodes as it did for the 16 (sequential connects: 8 each, ties taken in turn): a
	// few tries reach both. Each must be a 429, not a 101.
	refused := func(n *node) float64 { return n.Metric("wsgateway_refused_total") }
	for i := 0; refused(a) == 0 || refused(b) == 0; i++ {
		if i == 10 {
			t.Fatalf("10 refused connects through nginx: %v on A and %v on B, want both nodes to have refused one",
				refused(a), refused(b))
		}
		cl, resp, err := tryDial(lb, as("quinn"))
		if err == nil {
			cl.abort()
			t.Fatalf("connect %d beyond the cap through nginx was accepted, want HTTP 429", i+1)
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("connect %d beyond the cap through nginx: %v %v, want HTTP 429", i+1, resp, err)
		}
	}
	if p := c.presenceOf(lbURL, "quinn"); p != (presenceAnswer{true, 16, 2}) {
		t.Fatalf("presence after the refusals: %+v, want 16 connections on 2 nodes", p)
	}

	// A place freed is free again, through nginx, wherever the next connect lands.
	if _, err := open[0].closeClean(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, timeout, func() bool { return c.presenceOf(lbURL, "quinn").Connections == 15 },
		"presence after a close: %s, want 15 connections", wait.Lazy(func() string { return fmt.Sprintf("%+v", c.presenceOf(lbURL, "quinn")) }))
	dial(t, lb, as("quinn"))
	if p := c.presenceOf(lbURL, "quinn"); p != (presenceAnswer{true, 16, 2}) {
		t.Fatalf("presence after connecting again: %+v, want 16 connections on 2 nodes", p)
	}
}
