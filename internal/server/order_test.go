package server_test

// End-to-end tests of order across reconnects: a client that comes and goes, a slow consumer
// closed with 1013, a reconnect while the old connection stalls.

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// The core guarantee: a client that keeps reconnecting while one publisher pushes gets every
// message exactly once and in publish order across all its connections — whether a message
// reached it live, waited in its send queue when it left (stored back offline), arrived while
// its last connection was unsubscribing, or was pushed while it was away.
func TestOrderAcrossReconnects(t *testing.T) {
	const total = 2000
	cfg := devConfig()
	cfg.OfflineMax = total // the cap must not drop anything here
	g := start(t, cfg)

	// One publisher: publish order is the order the client must see.
	ctx, cancel := context.WithCancel(context.Background())
	pushed := make(chan struct{})
	var pushErr error
	var queued, online int
	go func() {
		defer close(pushed)
		for i := range total {
			body := fmt.Sprintf(`{"user_id":"alice","data":{"seq":%d}}`, i)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.URL("")+"/api/v1/push", strings.NewReader(body))
			resp, err := g.client.Do(req)
			if err != nil {
				pushErr = fmt.Errorf("push %d: %w", i, err)
				return
			}
			var r struct{ Results []pushResult }
			err = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || len(r.Results) != 1 {
				pushErr = fmt.Errorf("push %d: HTTP %d, %+v, %v", i, resp.StatusCode, r, err)
				return
			}
			if r.Results[0].Queued {
				queued++
			} else {
				online++
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-pushed })

	rng := mrand.New(mrand.NewPCG(1, 2))
	deadline := time.Now().Add(3 * patience)
	var got []int
	conns, serverClosed := 0, 0
	for len(got) < total {
		select {
		case <-pushed:
			if pushErr != nil {
				t.Fatal(pushErr)
			}
		default:
		}
		if time.Now().After(deadline) {
			t.Logf("after %d connections only %d of %d messages arrived", conns, len(got), total)
			checkSequence(t, got, total) // says which are missing
		}
		c := g.dial(t, "alice")
		conns++
		// Read a random number of messages (each arrives, live or from the backlog: while
		// this connection lives, every push goes to it), then leave cleanly: send a close
		// and keep reading until the server's close, so that what the server wrote before
		// it saw the close is read, and what it had not written is stored back.
		target := min(len(got)+1+rng.IntN(60), total)
		ended := false
		for len(got) < target {
			_ = c.SetReadDeadline(time.Now().Add(patience))
			_, data, err := c.ReadMessage()
			if err != nil {
				// The server may close first (a 1013 when this reader fell behind);
				// that is one more reconnect, and nothing may be lost by it.
				serverClosed++
				ended = true
				break
			}
			got = append(got, seqOf(t, data))
		}
		if !ended {
			_ = c.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
			msgs, _ := c.ReadUntilClose(t)
			for _, m := range msgs {
				got = append(got, seqOf(t, m))
			}
		}
		c.Close()
	}
	<-pushed
	if pushErr != nil {
		t.Fatal(pushErr)
	}
	checkSequence(t, got, total)

	// Nothing is left over anywhere: the next message after a reconnect is a new one.
	c := g.dial(t, "alice")
	g.push(t, "alice", `{"seq":"end"}`)
	c.Expect(t, `{"seq":"end"}`)
	t.Logf("%d connections (%d closed by the server); pushes: %d live, %d waited in the inbox",
		conns, serverClosed, online, queued)
}

// A client that stops reading while messages pile up is closed with 1013 once its send queue
// is full. It still reads what was written before the close frame; everything else waits in
// the inbox, unacknowledged, and comes on the reconnect: both connections together get every
// message once, in order.
func TestSlowConsumer(t *testing.T) {
	cfg := devConfig()
	cfg.SendQueue = 8
	cfg.OfflineMax = 5000
	cfg.WriteTimeout = 2 * patience // the blocked write must outlast the test's pushing
	g := startWith(t, cfg, server.Options{CloseGrace: patience})
	c := g.connect(t, wsclient.Options{User: "alice", ReadBuffer: smallBuffer})

	// Fill the socket buffers and the queue. The messages go in as the API's push puts them
	// (Server.Push): megabytes of JSON through HTTP under -race cost seconds and test nothing
	// more. The pushes after the verdict go through the API.
	const pad = 64 << 10
	pushed := 0
	for g.Metric("wsgateway_slow_consumers_total") == 0 {
		if pushed == 2000 {
			t.Fatalf("%d messages of 64 KiB sent to a client that reads nothing, and it is still not a slow consumer", pushed)
		}
		if _, err := g.Srv.Push(context.Background(), "alice", []byte(seqData(pushed, pad))); err != nil {
			t.Fatal(err)
		}
		pushed++
	}
	// Pushes after the verdict, before the connection is gone, must not be lost either.
	for range 20 {
		g.push(t, "alice", seqData(pushed, pad))
		pushed++
	}

	msgs, code := c.ReadUntilClose(t)
	if code != websocket.CloseTryAgainLater {
		t.Fatalf("slow consumer closed with %d, want 1013", code)
	}
	var got []int
	for _, m := range msgs {
		got = append(got, seqOf(t, m))
	}
	first := len(got)

	// Reconnect at once, as 1013 asks: the backlog must already be waiting, complete.
	c2 := g.dial(t, "alice")
	for len(got) < pushed {
		_, data := c2.Next(t)
		got = append(got, seqOf(t, data))
	}
	checkSequence(t, got, pushed)
	if first == 0 || first == pushed {
		t.Fatalf("first connection got %d of %d messages; the test needs a split", first, pushed)
	}
	g.push(t, "alice", `"end"`)
	c2.Expect(t, `"end"`)

	if n := g.Metric("wsgateway_slow_consumers_total"); n != 1 {
		t.Fatalf("slow_consumers_total = %v, want 1", n)
	}
	if n := g.Metric("wsgateway_disconnects_total", "reason", "slow_consumer"); n != 1 {
		t.Fatalf("disconnects_total{reason=slow_consumer} = %v, want 1", n)
	}
	t.Logf("%d messages: %d on the first connection, %d after the reconnect", pushed, first, pushed-first)
}

// A client whose socket stalls reconnects on its own timer while the server still holds the
// old connection, already condemned as a slow consumer but stuck in a write. What the old
// connection had not written is older than anything pushed after the reconnect, so it must
// reach the new connection first (docs/protocol.md: 1013 "reconnect; what it did not get is still in the inbox";
// order after a reconnect), and nothing may be left behind for a later connect.
func TestReconnectWhileOldConnectionStalls(t *testing.T) {
	cfg := devConfig()
	cfg.SendQueue = 4
	cfg.OfflineMax = 5000
	cfg.WriteTimeout = 2 * patience // the old writer stays stuck until the client drops it
	g := startWith(t, cfg, server.Options{CloseGrace: patience})
	old := g.connect(t, wsclient.Options{User: "alice", ReadBuffer: smallBuffer})
	pushed := 0
	for g.Metric("wsgateway_slow_consumers_total") == 0 {
		if pushed == 2000 {
			t.Fatal("no slow consumer after 2000 pushes")
		}
		if _, err := g.Srv.Push(context.Background(), "alice", []byte(seqData(pushed, 64<<10))); err != nil { // as in TestSlowConsumer
			t.Fatal(err)
		}
		pushed++
	}
	// At the verdict the queue was full and the message that overflowed it was kept: at
	// least that many were never written.
	unwritten := cfg.SendQueue + 1
	verdict := pushed

	type dialed struct {
		c   *wsclient.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, _, err := wsclient.Dial(g.Addr, wsclient.Options{User: "alice", Timeout: patience})
		ch <- dialed{c, err}
	}()
	var b dialed
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	select {
	case b = <-ch:
		// It joined while the old connection is still stuck: push something live now.
		g.push(t, "alice", seqData(pushed, 0))
		pushed++
		old.Close()
	case <-timer.C:
		// It waits for the old connection to be gone, which the client now brings about.
		old.Close()
		b = <-ch
	}
	if b.err != nil {
		t.Fatalf("reconnect: %v", b.err)
	}
	t.Cleanup(func() { b.c.Close() })
	g.push(t, "alice", seqData(pushed, 0))
	pushed++

	// Read to the last push, then leave and come back once more: anything still stored (or
	// stored late) would come now, before the next push.
	var got []int
	for len(got) == 0 || got[len(got)-1] != pushed-1 {
		_, data := b.c.Next(t)
		got = append(got, seqOf(t, data))
	}
	_ = b.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
	msgs, _ := b.c.ReadUntilClose(t)
	for _, m := range msgs {
		got = append(got, seqOf(t, m))
	}
	c := g.dial(t, "alice")
	g.push(t, "alice", seqData(pushed, 0))
	for got[len(got)-1] != pushed {
		_, data := c.Next(t)
		got = append(got, seqOf(t, data))
	}

	// What the old connection could not write continues, without a gap, duplicate or
	// reordering, on the new ones.
	for i, s := range got {
		if s != got[0]+i {
			t.Fatalf("after the reconnect the messages must go on from where the old connection stopped, "+
				"each once and in order; got %v", got)
		}
	}
	if got[0] > verdict-unwritten {
		t.Fatalf("the reconnect began at %d, but at least %d..%d were never written to the old connection: %v",
			got[0], verdict-unwritten, verdict-1, got)
	}
}
