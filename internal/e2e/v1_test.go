package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

func dialV1(t *testing.T, n *node, user, query string) *client {
	t.Helper()
	return dial(t, n.Addr, wsclient.Options{User: user, Query: query, V1: true})
}

// A v1 client gets numbered frames, acknowledges some, and resumes on another node: with since
// exactly what came after it, without since what it did not acknowledge. Positions are per
// user and shared by every node through the inbox.
func TestV1ResumeAcrossNodes(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")

	onA := dialV1(t, a, "vera", "")
	for i := 1; i <= 5; i++ {
		if res := c.push(b.URL(""), "vera", fmt.Sprint(i)); !res.Online {
			t.Fatalf("push %d: %+v, want online", i, res)
		}
	}
	onA.expectTexts(t, 0, "vera on A", "1 1", "2 2", "3 3", "4 4", "5 5")
	onA.send(t, websocket.TextMessage, []byte("ack 3"))
	unacked := func(want int64) {
		t.Helper()
		wait.For(t, timeout, func() bool { return c.offlineLen("vera") == want },
			"vera's unacknowledged count never became %d", want)
	}
	unacked(2)
	if _, err := onA.closeClean(); err != nil {
		t.Fatal(err)
	}
	for i := 6; i <= 8; i++ {
		if res := c.push(a.URL(""), "vera", fmt.Sprint(i)); res.Online {
			t.Fatalf("push %d with vera away: %+v, want queued", i, res)
		}
	}
	// Resume on B from 5: exactly 6..8, then live.
	onB := dialV1(t, b, "vera", "since=5")
	c.push(a.URL(""), "vera", "9")
	onB.expectTexts(t, 0, "vera on B since=5", "6 6", "7 7", "8 8", "9 9")
	// A second device without since gets everything not acknowledged (4..9), then live,
	// which both devices get once.
	second := dialV1(t, a, "vera", "")
	c.push(b.URL(""), "vera", `"both"`)
	second.expectTexts(t, 0, "vera's second device", "4 4", "5 5", "6 6", "7 7", "8 8", "9 9", `10 "both"`)
	onB.expectTexts(t, 4, "vera on B", `10 "both"`)
	// An ack above what the connection was sent is ignored; a cumulative ack of 10 is kept.
	onB.send(t, websocket.TextMessage, []byte("ack 99"))
	onB.send(t, websocket.TextMessage, []byte("ack 10"))
	unacked(0)
	// Broadcasts and raw PUBLISHes are unnumbered: "- <payload>".
	c.do(http.MethodPost, a.URL("/api/v1/broadcast"), []byte(`{"data":"all"}`))
	if err := c.rdb.Publish(t.Context(), c.prefix+"user:{vera}", "raw").Err(); err != nil {
		t.Fatal(err)
	}
	onB.expectTexts(t, 5, "vera on B", `- "all"`, "- raw")
	if got := c.offlineLen("vera"); got != 0 {
		t.Fatalf("unnumbered messages changed the position: %d unacknowledged", got)
	}
}

// A raw client and a v1 client of one user on different nodes: the raw one gets the payload
// as it was pushed, the v1 one the numbered frame; the raw write counts as acknowledged.
func TestV1AndRawSideBySide(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	raw := dial(t, a.Addr, as("wes"))
	v1 := dialV1(t, b, "wes", "")
	c.push(a.URL(""), "wes", `{"x":1}`)
	raw.expectTexts(t, 0, "wes raw", `{"x":1}`)
	v1.expectTexts(t, 0, "wes v1", `1 {"x":1}`)
	c.waitAcked("wes")
}

// A multi-user push answers each user: a user whose push failed gets an error and no seq, the
// others are accepted and delivered, and the answer is 200 (not 503: something was accepted,
// and a retrying backend would duplicate it).
func TestPushManyPartialFailure(t *testing.T) {
	c := newCluster(t)
	a := c.startNode("a")
	ok := dialV1(t, a, "okay", "")
	// bad's state key has the wrong type: Redis refuses its push, and only its push.
	if err := c.rdb.Set(t.Context(), c.prefix+"inbox:{bad}:state", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	status, body, err := c.do(http.MethodPost, a.URL("/api/v1/push"), []byte(`{"user_ids":["okay","bad","other"],"data":"m"}`))
	if err != nil || status != http.StatusOK {
		t.Fatalf("push: %d %s %v; want 200", status, body, err)
	}
	want := `{"results":[{"user_id":"okay","seq":1,"online":true,"queued":false},` +
		`{"user_id":"bad","error":"redis unavailable, not accepted"},` +
		`{"user_id":"other","seq":1,"online":false,"queued":true}]}`
	if string(body) != want {
		t.Fatalf("answer\n%s\nwant\n%s", body, want)
	}
	ok.expectTexts(t, 0, "okay", `1 "m"`)
	// Nothing at all accepted: 503.
	status, body, _ = c.do(http.MethodPost, a.URL("/api/v1/push"), []byte(`{"user_ids":["bad"],"data":"m"}`))
	if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "error") {
		t.Fatalf("push to only a failing user: %d %s; want 503", status, body)
	}
}
