package e2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// A client on node A gets a push made through node B's API, byte for byte: the JSON text of
// "data" exactly as sent (odd spacing, escapes and non-ASCII included), as one text frame.
func TestCrossNodePush(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")

	alice := dial(t, a.Addr, as("alice"))
	data := `{"text":  "grüße \u00e9\n",  "n": [1,2 , 3.50], "nested": {"ok" :true}}`
	res := c.push(b.URL(""), "alice", data)
	if !res.Online || res.Queued || res.UserID != "alice" {
		t.Fatalf("push result %+v, want online:true queued:false for alice", res)
	}
	alice.expectTexts(t, 0, "alice on A", data)
	c.waitAcked("alice") // written to a raw connection: acknowledged
}

// One user on two nodes: both devices get one copy of one push.
func TestMultiDeviceAcrossNodes(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")

	onA := dial(t, a.Addr, as("carol"))
	onB := dial(t, b.Addr, as("carol"))
	if res := c.push(a.URL(""), "carol", `"one"`); !res.Online {
		t.Fatalf("push result %+v, want online", res)
	}
	// A second push marks the end: anything duplicated would show up before it.
	c.push(b.URL(""), "carol", `"two"`)
	onA.expectTexts(t, 0, "carol on A", `"one"`, `"two"`)
	onB.expectTexts(t, 0, "carol on B", `"one"`, `"two"`)
}

// A raw PUBLISH to the user's channel (what redis-cli users do) arrives verbatim: valid UTF-8
// as a text frame, anything else as a binary frame.
func TestRawPublish(t *testing.T) {
	c := newCluster(t)
	a, _ := c.startNode("a"), c.startNode("b")
	ctx := context.Background()

	alice := dial(t, a.Addr, as("alice"))
	ch := c.prefix + "user:{alice}"
	text := "plain text, not JSON: ünïcödé ✓"
	bin := []byte{0xff, 0xfe, 0x00, 0x01, 'h', 'i', 0xc3}
	for _, payload := range []any{text, bin} {
		n, err := c.rdb.Publish(ctx, ch, payload).Result()
		if err != nil || n != 1 {
			t.Fatalf("PUBLISH %s: %d receivers, %v; want exactly 1 (node A)", ch, n, err)
		}
	}
	got := alice.waitFrames(t, 2, "alice")
	if got[0].typ != websocket.TextMessage || string(got[0].data) != text {
		t.Errorf("frame 0 = %v, want text %q", got[0], text)
	}
	if got[1].typ != websocket.BinaryMessage || string(got[1].data) != string(bin) {
		t.Errorf("frame 1 = %v, want binary %x", got[1], bin)
	}
	// Fire-and-forget: nothing is stored for a raw PUBLISH.
	if n := c.offlineLen("alice"); n != 0 {
		t.Errorf("inbox has %d entries after raw PUBLISHes", n)
	}
}

// The documented Redis Function pushes as the API does: with bob offline the message waits in
// his inbox (receivers 0) and he gets it on connecting to either node; with bob online it is
// delivered live (receivers 1).
func TestPushOrStoreFunction(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	ctx := context.Background()
	keys := []string{c.prefix + "user:{bob}", c.prefix + "inbox:{bob}"}
	fcall := func(payload string) int64 {
		t.Helper()
		v, err := c.rdb.FCall(ctx, "wsgateway_push", keys, payload).Int64Slice()
		if err != nil || len(v) != 2 {
			t.Fatalf("FCALL wsgateway_push %q: %v, %v", payload, v, err)
		}
		return v[1] // [seq, receivers]
	}

	if n := fcall("hello"); n != 0 {
		t.Fatalf("FCALL with bob offline returned %d, want 0 (stored)", n)
	}
	if n := c.offlineLen("bob"); n != 1 {
		t.Fatalf("inbox holds %d unacknowledged messages, want 1", n)
	}
	onB := dial(t, b.Addr, as("bob"))
	onB.expectTexts(t, 0, "bob on B", "hello")

	if n := fcall("live"); n != 1 {
		t.Fatalf("FCALL with bob online returned %d, want 1 (one subscribed node)", n)
	}
	onB.expectTexts(t, 1, "bob on B", "live")
	if _, err := onB.closeClean(); err != nil {
		t.Fatalf("close: %v", err)
	}
	wait.For(t, timeout, b.idle, "node B still holds bob")

	if n := fcall("again"); n != 0 {
		t.Fatalf("FCALL after bob left returned %d, want 0 (stored)", n)
	}
	onA := dial(t, a.Addr, as("bob"))
	onA.expectTexts(t, 0, "bob on A", "again")
	c.waitAcked("bob")
}

// Messages stored through node A's API are flushed, in order and exactly once, when the user
// connects to node B; a live push made after the connect arrives after the whole backlog.
func TestOfflineFlushOnOtherNode(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")

	const backlog = 50
	var want []string
	for i := 1; i <= backlog; i++ {
		msg := fmt.Sprintf(`{"i":%d}`, i)
		want = append(want, msg)
		if res := c.push(a.URL(""), "dave", msg); res.Online || !res.Queued {
			t.Fatalf("push %d with dave offline: %+v, want queued", i, res)
		}
	}
	onB := dial(t, b.Addr, as("dave"))
	if res := c.push(a.URL(""), "dave", `"live"`); !res.Online {
		t.Fatalf("live push after connect: %+v, want online", res)
	}
	onB.expectTexts(t, 0, "dave on B", append(want, `"live"`)...)
	c.waitAcked("dave") // a raw connection acknowledges what it wrote, recorded within a second

	// Exactly once: a second connection (on A) gets nothing of the backlog again, only what
	// is pushed now.
	onA := dial(t, a.Addr, as("dave"))
	c.push(b.URL(""), "dave", `"end"`)
	onA.expectTexts(t, 0, "dave's second device on A", `"end"`)
	onB.expectTexts(t, backlog+1, "dave on B", `"end"`)
}
