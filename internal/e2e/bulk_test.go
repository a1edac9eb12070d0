package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// A bulk push — many messages, each to its own user, in one request — answers every message
// in order, and each user gets its messages numbered in their order: live on whichever node it
// is connected to, from its inbox when it connects later. More messages than one script run
// takes, so the batch spans several.
func TestBulkPush(t *testing.T) {
	c := newCluster(t)
	a, b := c.startNode("a"), c.startNode("b")
	onA, onB := dialV1(t, a, "ann", ""), dialV1(t, b, "bob", "")
	users := []string{"ann", "bob", "cat"} // cat is offline
	var body strings.Builder
	body.WriteString(`{"messages":[`)
	want := map[string][]string{}
	const n = 301
	for i := range n {
		u := users[i%3]
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"user_id":%q,"data":{"i":%d}}`, u, i)
		want[u] = append(want[u], strconv.Itoa(len(want[u])+1)+` {"i":`+strconv.Itoa(i)+`}`)
	}
	body.WriteString(`]}`)
	status, answer, err := c.do(http.MethodPost, a.URL("/api/v1/push"), []byte(body.String()))
	if err != nil || status != http.StatusOK {
		t.Fatalf("bulk push: %d %s %v", status, answer, err)
	}
	var res struct {
		Results []struct {
			UserID string `json:"user_id"`
			Seq    int64  `json:"seq"`
			Online bool   `json:"online"`
		} `json:"results"`
	}
	if err := json.Unmarshal(answer, &res); err != nil || len(res.Results) != n {
		t.Fatalf("answer %.200s: %v", answer, err)
	}
	for i, r := range res.Results {
		u := users[i%3]
		if r.UserID != u || r.Seq != int64(i/3+1) || r.Online != (u != "cat") {
			t.Fatalf("result %d = %+v", i, r)
		}
	}
	onA.expectTexts(t, 0, "ann", want["ann"]...)
	onB.expectTexts(t, 0, "bob", want["bob"]...)
	dialV1(t, b, "cat", "").expectTexts(t, 0, "cat from its inbox", want["cat"]...)
}

// A bulk push names its users in each message only: anything beside "messages" is refused,
// and nothing is pushed.
func TestBulkPushRefused(t *testing.T) {
	c := newCluster(t)
	a := c.startNode("a")
	for body, want := range map[string]string{
		`{"messages":[{"user_id":"ann","data":1}],"user_id":"ann"}`: "give messages alone",
		`{"messages":[]}`: "messages is empty",
		`{"messages":[{"user_id":"ann","data":1},{"user_id":"a b","data":1}]}`: "messages[1]: user_id",
		`{"messages":[{"user_id":"ann"}]}`:                                     "messages[0]: data is required",
	} {
		status, answer, err := c.do(http.MethodPost, a.URL("/api/v1/push"), []byte(body))
		if err != nil || status != http.StatusBadRequest || !strings.Contains(string(answer), want) {
			t.Errorf("%s: %d %s %v; want 400 %q", body, status, answer, err, want)
		}
	}
	if n := c.rdb.Exists(t.Context(), c.prefix+"inbox:{ann}").Val(); n != 0 {
		t.Fatal("a refused bulk push stored something")
	}
}
