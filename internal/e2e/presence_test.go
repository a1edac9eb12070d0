package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

type presenceAnswer struct {
	Online      bool `json:"online"`
	Connections int  `json:"connections"`
	Nodes       int  `json:"nodes"`
}

func (c *cluster) presenceOf(base, user string) presenceAnswer {
	c.t.Helper()
	status, body, err := c.get(base + "/api/v1/users/" + user + "/presence")
	if err != nil || status != http.StatusOK {
		c.t.Fatalf("presence of %s: %d %s %v", user, status, body, err)
	}
	var p presenceAnswer
	if err := json.Unmarshal(body, &p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// userEvents returns the events of user in the stream, as "type@node".
func (c *cluster) userEvents(user string) []string {
	c.t.Helper()
	msgs, err := c.rdb.XRange(c.t.Context(), c.prefix+"events", "-", "+").Result()
	if err != nil && err != redis.Nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		if m.Values["user"] == user {
			out = append(out, fmt.Sprintf("%s@%s", m.Values["type"], m.Values["node"]))
		}
	}
	return out
}

// Presence counts a user's connections on every node, and max-conns-per-user holds across
// the deployment: the connect beyond it gets 429 on whichever node it lands.
func TestPresenceAndCapAcrossNodes(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	if p := c.presenceOf(a.URL(""), "pia"); p != (presenceAnswer{}) {
		t.Fatalf("presence before any connect: %+v", p)
	}
	var open []*client
	for i := range 16 { // the default cap
		n := []*node{a, b}[i%2]
		open = append(open, dial(t, n.Addr, as("pia")))
	}
	for _, n := range []*node{a, b} {
		if p := c.presenceOf(n.URL(""), "pia"); p != (presenceAnswer{true, 16, 2}) {
			t.Fatalf("presence via %s: %+v, want 16 connections on 2 nodes", n.ID, p)
		}
		_, resp, err := tryDial(n.Addr, as("pia"))
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("17th connect on %s: %v %v, want 429", n.ID, resp, err)
		}
	}
	// A place freed on one node is free on the other.
	if _, err := open[1].closeClean(); err != nil { // on b
		t.Fatal(err)
	}
	wait.For(t, timeout, func() bool { return c.presenceOf(a.URL(""), "pia").Connections == 15 }, "the closed connection still counts")
	dial(t, a.Addr, as("pia"))
	if p := c.presenceOf(b.URL(""), "pia"); p != (presenceAnswer{true, 16, 2}) {
		t.Fatalf("presence: %+v", p)
	}
	if got := c.userEvents("pia"); len(got) != 1 || !strings.HasPrefix(got[0], "online@") {
		t.Fatalf("events %v, want one online", got)
	}
}

// online and offline are emitted once per transition, by one node, even when a connect on one
// node races the last disconnect on another: over many transitions the stream alternates
// online, offline, online, … and ends offline.
func TestOnlineOfflineEventsUnderRace(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	const rounds = 250 // ×2 users ×2 transitions: 1,000 transitions
	var wg sync.WaitGroup
	for _, user := range []string{"race1", "race2"} {
		wg.Go(func() {
			for i := range rounds {
				x, y := a, b
				if i%2 == 1 {
					x, y = b, a
				}
				first, _, err := tryDial(x.Addr, as(user))
				if err != nil {
					t.Errorf("%s: dial: %v", user, err)
					return
				}
				// The next connect and the close run at once, on different nodes.
				var inner sync.WaitGroup
				var second *client
				inner.Go(func() { second, _, err = tryDial(y.Addr, as(user)) })
				inner.Go(func() { _, _ = first.closeClean() })
				inner.Wait()
				if err != nil {
					t.Errorf("%s: dial: %v", user, err)
					return
				}
				_, _ = second.closeClean()
			}
		})
	}
	wg.Wait()
	for _, user := range []string{"race1", "race2"} {
		wait.For(t, timeout, func() bool { return c.presenceOf(a.URL(""), user) == presenceAnswer{} }, "%s still counted", user)
		evs := c.userEvents(user)
		if len(evs) < 2 || len(evs)%2 != 0 {
			t.Fatalf("%s: %d events, want an even number ≥ 2: %v", user, len(evs), evs)
		}
		for i, e := range evs {
			want := "online@"
			if i%2 == 1 {
				want = "offline@"
			}
			if !strings.HasPrefix(e, want) {
				t.Fatalf("%s: event %d is %s, want %s… (online and offline must alternate): %v", user, i, e, want, evs)
			}
		}
		t.Logf("%s: %d transitions", user, len(evs))
	}
}

// A node killed without any clean-up leaves no ghost: within 30 s the others stop counting its
// connections (one of them emits offline for its users) and the per-user cap frees their
// places.
func TestNodeKilledLeavesNoGhost(t *testing.T) {
	c := newCluster(t)
	a := c.startNodeWith("a", func(cfg *config.Config) { cfg.MaxConnsPerUser = 2 })
	node := gwbin.Start(t, "doomed", gwbin.Options{
		Args:  []string{"--redis-url", c.redis.URL(), "--key-prefix", c.prefix, "--max-conns-per-user", "2"},
		Ready: timeout,
	})
	addr, p := node.Addr, node.Process

	dial(t, addr, as("gil"))
	dial(t, addr, as("gil"))
	dial(t, addr, as("hal"))
	dial(t, a.Addr, as("hal")) // hal stays online through node a
	if p := c.presenceOf(a.URL(""), "gil"); p.Connections != 2 {
		t.Fatalf("gil: %+v", p)
	}
	if _, resp, err := tryDial(a.Addr, as("gil")); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("gil's third connect on a: %v %v, want 429 (two on the other node)", resp, err)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	wait.For(t, 30*time.Second, func() bool { return c.presenceOf(a.URL(""), "gil") == presenceAnswer{} },
		"the killed node's connections still count after 30 s")
	t.Logf("a dead node's connections stopped counting after %v", time.Since(killed).Round(100*time.Millisecond))
	if got := c.userEvents("gil"); fmt.Sprint(got) != "[online@doomed offline@doomed]" {
		t.Fatalf("gil's events %v, want online then offline (reported for the dead node)", got)
	}
	if p := c.presenceOf(a.URL(""), "hal"); p != (presenceAnswer{true, 1, 1}) {
		t.Fatalf("hal: %+v, want his connection on a", p)
	}
	if got := c.userEvents("hal"); len(got) != 1 {
		t.Fatalf("hal's events %v: his connection on a kept him online", got)
	}
	// The places are free again: the cap counts only live connections.
	dial(t, a.Addr, as("gil"))
}
