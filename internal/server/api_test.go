package server_test

// End-to-end tests of the HTTP side: API request errors and keys, kick, presence, probes and
// metrics, shutdown.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// Every malformed or oversized API request is refused with its status and a JSON error body,
// and nothing of it is delivered.
func TestAPIRequestErrors(t *testing.T) {
	g := start(t, devConfig())
	c := g.dial(t, "alice")
	ids := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf(`"u%d"`, i)
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	big := `{"user_id":"alice","data":"` + strings.Repeat("a", 1<<20) + `"}`
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		status int
	}{
		{"push body over 1 MiB", "POST", "/api/v1/push", big, 413},
		{"broadcast body over 1 MiB", "POST", "/api/v1/broadcast", `{"data":"` + strings.Repeat("a", 1<<20) + `"}`, 413},
		{"malformed JSON", "POST", "/api/v1/push", `{"user_id":"alice","data":`, 400},
		{"not JSON", "POST", "/api/v1/push", `hello`, 400},
		{"empty body", "POST", "/api/v1/push", ``, 400},
		{"JSON array", "POST", "/api/v1/push", `[1,2]`, 400},
		{"trailing garbage", "POST", "/api/v1/push", `{"user_id":"alice","data":1} x`, 400},
		{"two values", "POST", "/api/v1/push", `{"user_id":"alice","data":1}{"user_id":"alice","data":2}`, 400},
		{"missing data", "POST", "/api/v1/push", `{"user_id":"alice"}`, 400},
		{"null data", "POST", "/api/v1/push", `{"user_id":"alice","data":null}`, 400},
		{"missing user", "POST", "/api/v1/push", `{"data":1}`, 400},
		{"empty user_ids", "POST", "/api/v1/push", `{"user_ids":[],"data":1}`, 400},
		{"user_id not a string", "POST", "/api/v1/push", `{"user_id":7,"data":1}`, 400},
		{"user id with a space", "POST", "/api/v1/push", `{"user_id":"al ice","data":1}`, 400},
		{"user id with a brace", "POST", "/api/v1/push", `{"user_id":"a}b","data":1}`, 400},
		{"user id non-ASCII", "POST", "/api/v1/push", `{"user_id":"zoë","data":1}`, 400},
		{"user id of 129 bytes", "POST", "/api/v1/push", `{"user_id":"` + strings.Repeat("a", 129) + `","data":1}`, 400},
		{"both user_id and user_ids", "POST", "/api/v1/push", `{"user_id":"alice","user_ids":["bob"],"data":1}`, 400},
		{"one bad id in user_ids", "POST", "/api/v1/push", `{"user_ids":["bob","b b"],"data":1}`, 400},
		{"1001 user_ids", "POST", "/api/v1/push", `{"user_ids":` + ids(1001) + `,"data":1}`, 400},
		{"broadcast without data", "POST", "/api/v1/broadcast", `{}`, 400},
		{"broadcast malformed", "POST", "/api/v1/broadcast", `{"data":`, 400},
		{"presence of a bad id", "GET", "/api/v1/users/a%20b/presence", ``, 400},
		{"kick of a bad id", "DELETE", "/api/v1/users/" + strings.Repeat("a", 129) + "/connections", ``, 400},
		{"unknown route", "GET", "/api/v1/nothing", ``, 404},
		{"wrong method", "GET", "/api/v1/push", ``, 405},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := g.api(t, tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("HTTP %d %.200s, want %d", status, body, tc.status)
			}
			wsclient.ErrorField(t, body)
		})
	}
	// The boundaries that are allowed: 1000 user ids, a 128-byte id, every allowed byte.
	if res := g.pushBody(t, `{"user_ids":`+ids(1000)+`,"data":1}`); len(res) != 1000 {
		t.Fatalf("1000 user_ids: %d results, want 1000", len(res))
	}
	g.push(t, strings.Repeat("a", 128), `1`)
	g.push(t, "Az09_.:@-", `1`)
	// Space after the one value is no "trailing garbage".
	if res := g.pushBody(t, "{\"user_id\":\"alice\",\"data\":\"ws\"} \r\n\t"); len(res) != 1 || !res[0].Online {
		t.Fatalf("push with trailing whitespace: %+v", res)
	}
	c.Expect(t, `"ws"`)
	g.push(t, "alice", `"end"`)
	c.Expect(t, `"end"`) // none of the refused pushes reached alice
}

// Outside --dev every /api call needs one of the API keys; both keys of a rotation work.
func TestAPIKeys(t *testing.T) {
	g := start(t, prodConfig())
	c := g.connect(t, wsclient.Options{Token: hsToken(t, jwttest.Claims("alice"))})
	cases := []struct {
		name   string
		auth   string
		status int
	}{
		{"no header", "", 401},
		{"wrong key", "Bearer nope", 401},
		{"key prefix only", "Bearer " + testKey1[:5], 401},
		{"key with extra", "Bearer " + testKey1 + "x", 401},
		{"not bearer", "Basic " + testKey1, 401},
		{"bearer without space", "Bearer" + testKey1, 401},
		{"client JWT is no API key", "Bearer " + hsToken(t, jwttest.Claims("alice")), 401},
		{"first key", "Bearer " + testKey1, 200},
		{"second key", "Bearer " + testKey2, 200},
		{"scheme case-insensitive", "bearer " + testKey2, 200},
	}
	n := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.auth != "" {
				hdr.Set("Authorization", tc.auth)
			}
			for _, r := range []struct{ method, path, body string }{
				{"POST", "/api/v1/push", fmt.Sprintf(`{"user_id":"alice","data":%d}`, n)},
				{"POST", "/api/v1/broadcast", `{"data":"b"}`},
				{"GET", "/api/v1/users/alice/presence", ""},
			} {
				status, body := g.request(t, r.method, r.path, r.body, hdr)
				if status != tc.status {
					t.Fatalf("%s %s: HTTP %d %s, want %d", r.method, r.path, status, body, tc.status)
				}
				if status != 200 {
					wsclient.ErrorField(t, body)
				}
			}
			if tc.status == 200 {
				c.Expect(t, itoa(n)) // the push went through
				c.Expect(t, `"b"`)   // and the broadcast
				n++
			}
		})
	}
	// The refused calls delivered nothing: the next message is the next accepted one.
	g.push(t, "alice", `"end"`)
	c.Expect(t, `"end"`)
}

// DELETE /api/v1/users/{id}/connections closes every connection of that user with 4001, and
// no one else's.
func TestKick(t *testing.T) {
	g := start(t, devConfig())
	alice := []*wsclient.Conn{g.dial(t, "alice"), g.dial(t, "alice")}
	bob := g.dial(t, "bob")
	status, body := g.api(t, http.MethodDelete, "/api/v1/users/alice/connections", "")
	if status != http.StatusOK || strings.TrimSpace(string(body)) != "{}" {
		t.Fatalf("kick: HTTP %d %s, want 200 {}", status, body)
	}
	for _, c := range alice {
		c.ExpectClose(t, 4001)
	}
	wait.For(t, patience, func() bool { return !g.presence(t, "alice") }, "alice online after the kick")
	wait.For(t, patience, func() bool { return g.Metric("wsgateway_disconnects_total", "reason", "kicked") == 2 },
		"kicks not counted")
	g.push(t, "bob", `"still here"`)
	bob.Expect(t, `"still here"`)
	// Kicking someone who is not connected is fine, and a kicked user may come back.
	if status, body := g.api(t, http.MethodDelete, "/api/v1/users/nobody/connections", ""); status != http.StatusOK {
		t.Fatalf("kick of an offline user: HTTP %d %s", status, body)
	}
	c := g.dial(t, "alice")
	g.push(t, "alice", `"welcome back"`)
	c.Expect(t, `"welcome back"`)
}

func TestPresence(t *testing.T) {
	g := start(t, devConfig())
	if g.presence(t, "alice") {
		t.Fatal("alice online before connecting")
	}
	c1 := g.dial(t, "alice")
	if !g.presence(t, "alice") {
		t.Fatal("alice offline after connecting")
	}
	c2 := g.dial(t, "alice")
	if g.presence(t, "bob") {
		t.Fatal("bob online, he never connected")
	}
	c1.Close()
	wait.For(t, patience, func() bool { return g.Srv.ForTest().Hub().Conns() == 1 }, "first connection not released")
	if !g.presence(t, "alice") {
		t.Fatal("alice offline while her second connection is open")
	}
	c2.Close()
	wait.For(t, patience, func() bool { return !g.presence(t, "alice") }, "alice online after closing everything")
}

func TestProbesAndMetrics(t *testing.T) {
	g := start(t, devConfig())
	for _, path := range []string{"/healthz", "/readyz"} {
		status, body := g.request(t, http.MethodGet, path, "", nil)
		if status != http.StatusOK || !json.Valid(body) {
			t.Fatalf("%s: HTTP %d %s, want 200 and JSON", path, status, body)
		}
	}
	status, body := g.request(t, http.MethodGet, "/readyz", "", nil)
	if status != 200 || !strings.Contains(string(body), `"e2e"`) {
		t.Fatalf("/readyz does not name the node: %s", body)
	}

	c := g.dial(t, "alice")
	g.push(t, "alice", `1`)
	c.Expect(t, `1`)
	g.push(t, "bob", `2`) // stored offline
	metrics := func() string {
		status, body := g.request(t, http.MethodGet, "/metrics", "", nil)
		if status != http.StatusOK {
			t.Fatalf("/metrics: HTTP %d", status)
		}
		return string(body)
	}
	text := metrics()
	for _, want := range []string{
		`wsgateway_connections 1`,
		`wsgateway_messages_delivered_total 1`,
		`wsgateway_offline_stored_total{source="push"} 1`,
		`wsgateway_slow_consumers_total 0`,
		`wsgateway_connects_total 1`,
		`wsgateway_build_info{node_id="e2e",version="`,
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want)).MatchString(text) {
			t.Errorf("/metrics has no line starting %q", want)
		}
	}
	if !strings.Contains(text, "# TYPE wsgateway_delivery_latency_seconds histogram") {
		t.Error("/metrics lacks the delivery latency histogram")
	}
	c.Close()
	wait.For(t, patience, func() bool { return strings.Contains(metrics(), "\nwsgateway_connections 0\n") },
		"wsgateway_connections does not go back to 0")
}

// Shutdown: /readyz and /ws answer 503 while draining, every client gets 1001, Shutdown
// returns in time, and nothing of the server keeps running afterwards.
func TestShutdown(t *testing.T) {
	g := startWith(t, devConfig(), server.Options{CloseGrace: patience})
	// These clients read nothing until the test says so: the drain waits for their answer
	// to the close frame, which keeps the server draining while the test looks at it.
	clients := []*wsclient.Conn{g.dial(t, "alice"), g.dial(t, "alice"), g.dial(t, "bob")}
	echo := g.connect(t, wsclient.Options{Path: "/ws/echo"})

	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- g.Shutdown() }()
	wait.For(t, patience, func() bool {
		status, _ := g.request(t, http.MethodGet, "/readyz", "", nil)
		return status == http.StatusServiceUnavailable
	}, "/readyz never said 503 while draining")
	status, body := g.request(t, http.MethodGet, "/readyz", "", nil)
	if wsclient.ErrorField(t, body) != "draining" {
		t.Fatalf("/readyz while draining: HTTP %d %s", status, body)
	}
	g.expectRefused(t, "/ws?user_id=carol", nil, http.StatusServiceUnavailable)

	for _, c := range clients {
		c.ExpectClose(t, websocket.CloseGoingAway)
	}
	if _, code := echo.ReadUntilClose(t); code != websocket.CloseGoingAway {
		t.Errorf("/ws/echo connection ended with %d at shutdown, want 1001", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("Shutdown did not return")
	}
	t.Logf("drained in %v", time.Since(began))
	if n := g.Metric("wsgateway_disconnects_total", "reason", "shutdown"); n != 3 {
		t.Errorf("disconnects_total{reason=shutdown} = %v, want 3", n)
	}
	if _, err := http.Get(g.URL("") + "/healthz"); err == nil {
		t.Error("/healthz still answers after Shutdown")
	}
	for _, c := range append(clients, echo) {
		c.Close()
	}
	goleak.VerifyNone(t)
}
