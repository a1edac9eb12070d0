package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// seqEvents returns user's events of type typ, as "seq@node".
func (c *cluster) seqEvents(user, typ string) []string {
	c.t.Helper()
	msgs, err := c.rdb.XRange(c.t.Context(), c.prefix+"events", "-", "+").Result()
	if err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		if m.Values["user"] == user && m.Values["type"] == typ {
			if _, ok := m.Values["ts"]; !ok {
				c.t.Fatalf("event without ts: %v", m.Values)
			}
			out = append(out, fmt.Sprintf("%s@%s", m.Values["seq"], m.Values["node"]))
		}
	}
	return out
}

// A push with "receipt": true gets one delivered event at its first acknowledgement — a v1
// ack or a raw write — and one only, however many devices get it.
func TestReceiptDelivered(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	body := func(user, data string, receipt bool) []byte {
		return fmt.Appendf(nil, `{"user_id":%q,"data":%s,"receipt":%v}`, user, data, receipt)
	}
	// v1: delivered once the client acks.
	v1 := dialV1(t, a, "rita", "")
	second := dialV1(t, b, "rita", "")
	for i, receipt := range []bool{true, false, true} {
		if status, out, err := c.do(http.MethodPost, b.URL("/api/v1/push"), body("rita", fmt.Sprint(i+1), receipt)); err != nil || status != 200 {
			t.Fatalf("push: %d %s %v", status, out, err)
		}
	}
	v1.expectTexts(t, 0, "rita", "1 1", "2 2", "3 3")
	second.expectTexts(t, 0, "rita's second device", "1 1", "2 2", "3 3")
	if got := c.seqEvents("rita", "delivered"); len(got) != 0 {
		t.Fatalf("delivered before any ack: %v", got)
	}
	v1.send(t, websocket.TextMessage, []byte("ack 2"))
	wait.For(t, timeout, func() bool { return len(c.seqEvents("rita", "delivered")) == 1 }, "no delivered event for seq 1")
	second.send(t, websocket.TextMessage, []byte("ack 3"))
	v1.send(t, websocket.TextMessage, []byte("ack 3"))
	wait.For(t, timeout, func() bool { return len(c.seqEvents("rita", "delivered")) == 2 }, "no delivered event for seq 3")
	c.waitAcked("rita")
	if got := c.seqEvents("rita", "delivered"); got[0] != "1@a" || got[1][:2] != "3@" {
		t.Fatalf("delivered events %v, want 1@a then 3@<the acking node>", got)
	}
	// Raw: the write counts.
	raw := dial(t, a.Addr, as("ron"))
	if status, out, err := c.do(http.MethodPost, a.URL("/api/v1/push"), body("ron", `"r"`, true)); err != nil || status != 200 {
		t.Fatalf("push: %d %s %v", status, out, err)
	}
	raw.expectTexts(t, 0, "ron", `"r"`)
	wait.For(t, timeout, func() bool { return len(c.seqEvents("ron", "delivered")) == 1 }, "no delivered event for a raw write")
	time.Sleep(1500 * time.Millisecond) // past an ack flush: a second event would show now
	if got := c.seqEvents("ron", "delivered"); len(got) != 1 {
		t.Fatalf("delivered %v, want exactly one", got)
	}
}

// With undelivered-after set, a message nobody acknowledged in time emits undelivered once,
// by one node; one that was acknowledged never does.
func TestUndelivered(t *testing.T) {
	c := newCluster(t)
	// Well above the second within which nodes record acknowledgements, so that quick's ack
	// is in before its deadline even on a loaded machine.
	short := func(cfg *config.Config) { cfg.UndeliveredAfter = 3 * time.Second }
	a, b := c.startNodeWith("a", short), c.startNodeWith("b", short)
	c.push(a.URL(""), "nobody", `"lost"`) // never connects
	c.push(b.URL(""), "nobody", `"lost too"`)
	cl := dialV1(t, b, "quick", "")
	c.push(a.URL(""), "quick", `"seen"`)
	cl.expectTexts(t, 0, "quick", `1 "seen"`)
	cl.send(t, websocket.TextMessage, []byte("ack 1"))
	wait.For(t, 15*time.Second, func() bool { return len(c.seqEvents("nobody", "undelivered")) == 2 },
		"undelivered events for nobody: %v", wait.Lazy(func() string { return fmt.Sprint(c.seqEvents("nobody", "undelivered")) }))
	time.Sleep(3 * time.Second) // a deadline more: a duplicate or a wrong event would show now
	if got := c.seqEvents("nobody", "undelivered"); len(got) != 2 || got[0][:2] != "1@" || got[1][:2] != "2@" {
		t.Fatalf("undelivered for nobody: %v, want seq 1 and 2 once each", got)
	}
	if got := c.seqEvents("quick", "undelivered"); len(got) != 0 {
		t.Fatalf("undelivered for an acknowledged message: %v", got)
	}
}
