package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// DELETE /api/v1/users/{id}/connections on node B closes the user's connections on A and B
// with 4001, and nobody else's.
func TestKickAcrossNodes(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")

	onA := dial(t, a.Addr, as("erin"))
	onB := dial(t, b.Addr, as("erin"))
	bystander := dial(t, a.Addr, as("frank"))

	status, body, err := c.do(http.MethodDelete, b.URL("/api/v1/users/erin/connections"), nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("DELETE connections: %d %s %v", status, body, err)
	}
	if code := onA.closeCode(t, "erin on A"); code != 4001 {
		t.Errorf("erin on A closed with %d (%v), want 4001", code, onA.err())
	}
	if code := onB.closeCode(t, "erin on B"); code != 4001 {
		t.Errorf("erin on B closed with %d (%v), want 4001", code, onB.err())
	}
	wait.For(t, timeout, func() bool { return !a.Srv.ForTest().Hub().Online("erin") && !b.Srv.ForTest().Hub().Online("erin") },
		"erin still held after the kick")
	// The bystander on A is untouched and still receives.
	c.push(b.URL(""), "frank", `"still here"`)
	bystander.expectTexts(t, 0, "frank", `"still here"`)
}

// A broadcast through node A reaches every connection on A and B; nothing is stored.
func TestBroadcastAcrossNodes(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")

	clients := []*client{
		dial(t, a.Addr, as("u1")),
		dial(t, b.Addr, as("u2")),
		dial(t, b.Addr, as("u1")), // a second device of u1
	}
	data := `{"notice": "maintenance at 5"}`
	status, body, err := c.do(http.MethodPost, a.URL("/api/v1/broadcast"), []byte(`{"data": `+data+`}`))
	if err != nil || status != http.StatusOK {
		t.Fatalf("broadcast: %d %s %v", status, body, err)
	}
	for i, cl := range clients {
		cl.expectTexts(t, 0, fmt.Sprint("client ", i), data)
	}
	for _, u := range []string{"u1", "u2"} {
		if n := c.offlineLen(u); n != 0 {
			t.Errorf("offline list of %s holds %d after a broadcast", u, n)
		}
	}
}

// Presence asked through node A is true while the user is connected only to node B and turns
// false once they left.
func TestPresenceAcrossNodes(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")

	if online, err := c.presence(a.URL(""), "gina"); err != nil || online {
		t.Fatalf("presence before connecting: %v, %v; want false", online, err)
	}
	onB := dial(t, b.Addr, as("gina"))
	if online, err := c.presence(a.URL(""), "gina"); err != nil || !online {
		t.Fatalf("presence via A with gina on B: %v, %v; want true", online, err)
	}
	if a.Srv.ForTest().Hub().Online("gina") {
		t.Fatal("node A claims to hold gina's connection")
	}
	if _, err := onB.closeClean(); err != nil {
		t.Fatalf("close: %v", err)
	}
	wait.For(t, timeout, func() bool {
		online, err := c.presence(a.URL(""), "gina")
		return err == nil && !online
	}, "presence via A still true after gina left")
}

// Inbound frames go to the <prefix>upstream stream with user, node and data; the text "ping"
// is answered with "pong" and forwarded nowhere.
func TestUpstream(t *testing.T) {
	c := newCluster(t)
	a, _ := c.startNode("a"), c.startNode("b")
	ctx := context.Background()

	cl := dial(t, a.Addr, as("hank"))
	bin := []byte{0x00, 0x01, 0xfe, 0xff}
	cl.send(t, websocket.TextMessage, []byte("hi"))
	cl.send(t, websocket.BinaryMessage, bin)
	cl.send(t, websocket.TextMessage, []byte("ping"))
	cl.expectTexts(t, 0, "hank", "pong")
	// The connection reads frames in order: once this marker is in the stream, a forwarded
	// "ping" would be there too.
	cl.send(t, websocket.TextMessage, []byte("marker"))

	stream := c.prefix + "upstream"
	var entries []redis.XMessage
	wait.For(t, timeout, func() bool {
		var err error
		entries, err = c.rdb.XRange(ctx, stream, "-", "+").Result()
		return err == nil && len(entries) > 0 && entries[len(entries)-1].Values["data"] == "marker"
	}, "marker never appeared in %s", stream)

	want := []string{"hi", string(bin), "marker"}
	if len(entries) != len(want) {
		var got []any
		for _, e := range entries {
			got = append(got, e.Values["data"])
		}
		t.Fatalf("stream %s holds %d entries %q, want %q (ping must not be forwarded)", stream, len(entries), got, want)
	}
	for i, e := range entries {
		if e.Values["user"] != "hank" || e.Values["node"] != "a" || e.Values["data"] != want[i] {
			t.Errorf("entry %d = %v, want user=hank node=a data=%q", i, e.Values, want[i])
		}
	}
	if n := len(cl.received()); n != 1 {
		t.Errorf("client got %d frames, want only the pong", n)
	}
}
