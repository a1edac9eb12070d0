package attack

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
)

// TestEndlessBody: an API call with a valid key whose body never ends (announced and never
// sent, dribbled forever, or chunked without the last chunk) gets 408 once the body read
// timeout passes (1s here, 30s in production), and nothing is pushed. Without a valid key the
// same request gets 401 without the body being read; net/http sends it once it gave up
// discarding the unread body (at most 256 KiB), so within the same timeout.
func TestEndlessBody(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	g := start(t, nil, server.Options{APIBodyTimeout: timeout})
	c := g.startCanary(t)

	// The body pushes to the canary, whose reader fails on anything but its sequence numbers:
	// had the gateway accepted a part of it, the canary would notice.
	head := "POST /api/v1/push HTTP/1.1\r\nHost: " + g.addr + "\r\nContent-Type: application/json\r\n"
	body := `{"user_id":"canary","data":"`
	for _, tc := range []struct {
		name    string
		request string
		dribble bool
		key     bool
		want    int
	}{
		{"announced, never sent", head + "Content-Length: 100000\r\n", false, true, http.StatusRequestTimeout},
		{"dribbled forever", head + "Content-Length: 100000\r\n", true, true, http.StatusRequestTimeout},
		{"chunked, no last chunk", head + "Transfer-Encoding: chunked\r\n", true, true, http.StatusRequestTimeout},
		{"no key", head + "Content-Length: 100000\r\n", true, false, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The server's read timeout runs from the accept, so the clock starts before the dial:
			// on a loaded machine the request may be written well after the accept.
			begin := time.Now()
			conn := g.tcp(t, attackerIP)
			req := tc.request
			if tc.key {
				req += "Authorization: Bearer " + apiKey + "\r\n"
			}
			req += "\r\n"
			chunked := strings.Contains(req, "chunked")
			if chunked {
				req += fmt.Sprintf("%x\r\n%s\r\n", len(body), body)
			} else {
				req += body
			}
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for tc.dribble {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					b := "a"
					if chunked {
						b = "1\r\na\r\n"
					}
					if _, err := io.WriteString(conn, b); err != nil {
						return
					}
				}
			}()
			defer func() { close(stop); <-done }()
			_ = conn.SetReadDeadline(time.Now().Add(patience))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			took := time.Since(begin)
			if err != nil {
				t.Fatalf("after %v: %v", took, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("HTTP %d after %v: %s", resp.StatusCode, took.Round(time.Millisecond), strings.TrimSpace(string(b)))
			if resp.StatusCode != tc.want {
				t.Fatalf("HTTP %d %s; want %d", resp.StatusCode, b, tc.want)
			}
			if !json.Valid(b) || !strings.Contains(string(b), `"error"`) {
				t.Errorf("body %q is not {\"error\": …}", b)
			}
			if tc.want == http.StatusRequestTimeout && took < timeout-100*time.Millisecond {
				t.Fatalf("408 after %v, before the %v timeout", took, timeout)
			}
			if within := timeout + 3*time.Second; took > within {
				t.Fatalf("answered after %v; want within %v", took, within)
			}
		})
	}
	g.waitMetric(t, 3, "wsgateway_api_requests_total", "status", "408")
	g.stillServes(t, c)
}

// TestPushUserIDsLimit: one push names at most 1000 users; 1001 get 400 and nobody, not even
// the valid users among them, receives anything.
func TestPushUserIDsLimit(t *testing.T) {
	t.Parallel()
	g := start(t, nil, server.Options{})
	c := g.startCanary(t)
	ids := func(n int) []string {
		out := []string{"canary"} // would break the canary's sequence if delivered
		for i := 1; i < n; i++ {
			out = append(out, fmt.Sprintf("user-%d", i))
		}
		return out
	}
	body := func(users []string) string {
		b, _ := json.Marshal(map[string]any{"user_ids": users, "data": "must not arrive"})
		return string(b)
	}
	code, resp := g.api(t, http.MethodPost, "/api/v1/push", body(ids(1001)))
	if code != http.StatusBadRequest || !strings.Contains(resp, "1000") {
		t.Fatalf("1001 user_ids: HTTP %d %s; want 400 naming the limit", code, resp)
	}
	// 1001 entries that are 1000 distinct users are over the limit too: it counts the request.
	dup := append(ids(1000)[1:], "user-1", "user-2")
	if code, resp := g.api(t, http.MethodPost, "/api/v1/push", body(dup)); code != http.StatusBadRequest {
		t.Fatalf("1001 user_ids with duplicates: HTTP %d %s; want 400", code, resp)
	}
	// The boundary: 1000 is accepted (without the canary, whose reader only takes numbers).
	ok := append(ids(1000)[1:], "user-1000")
	code, resp = g.api(t, http.MethodPost, "/api/v1/push", body(ok))
	if code != http.StatusOK {
		t.Fatalf("1000 user_ids: HTTP %d %s", code, resp)
	}
	var res struct {
		Results []struct{ UserID string } `json:"results"`
	}
	if err := json.Unmarshal([]byte(resp), &res); err != nil || len(res.Results) != 1000 {
		t.Fatalf("1000 user_ids: %d results (%v)", len(res.Results), err)
	}
	g.stillServes(t, c)
}

// badIDs are user ids that must be refused wherever an id enters the gateway.
var badIDs = []string{
	"", strings.Repeat("a", 129), "a b", "a\tb", "a\nb", "a\x00b", "ä", "\xff", "a/b", "../x", "a{b", "x}y",
	"{canary}", "a*", "a?b", "a#b", "a%2Fb", "a,b", `a"b`, "a'b", "a\\b", "canary\r\nX: y", " canary", "canary ",
}

// TestInvalidUserIDsEverywhere sends each malformed id in every position one can take:
// user_id, each place in user_ids (first, middle, last of 1000), the API's path, a token's
// sub, and ?user_id= in --dev. Each is refused (400 on the API, 401 on /ws) and none of the
// valid users next to it receives anything.
func TestInvalidUserIDsEverywhere(t *testing.T) {
	t.Parallel()
	g := start(t, nil, server.Options{})
	c := g.startCanary(t)
	push := func(v any) (int, string) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return g.api(t, http.MethodPost, "/api/v1/push", string(b))
	}
	many := make([]string, 1000)
	for i := range many {
		many[i] = fmt.Sprintf("user-%d", i)
	}
	many[0] = "canary"
	positions := map[string]func(bad string) []string{
		"alone":  func(bad string) []string { return []string{bad} },
		"first":  func(bad string) []string { return []string{bad, "canary", "other"} },
		"middle": func(bad string) []string { return []string{"canary", bad, "other"} },
		"last":   func(bad string) []string { return []string{"canary", "other", bad} },
		"999th of 1000": func(bad string) []string {
			ids := append([]string(nil), many...)
			ids[998] = bad
			return ids
		},
		"1000th of 1000": func(bad string) []string {
			ids := append([]string(nil), many...)
			ids[999] = bad
			return ids
		},
	}
	for _, bad := range badIDs {
		if code, resp := push(map[string]any{"user_id": bad, "data": "x"}); code != http.StatusBadRequest {
			t.Errorf("user_id %q: HTTP %d %s; want 400", bad, code, resp)
		}
		for pos, ids := range positions {
			if code, resp := push(map[string]any{"user_ids": ids(bad), "data": "x"}); code != http.StatusBadRequest {
				t.Errorf("user_ids with %q %s: HTTP %d %.200s; want 400", bad, pos, code, resp)
			}
		}
		for _, call := range []struct{ method, path string }{
			{http.MethodGet, "/api/v1/users/%s/presence"},
			{http.MethodDelete, "/api/v1/users/%s/connections"},
		} {
			path := fmt.Sprintf(call.path, url.PathEscape(bad))
			code, resp := g.api(t, call.method, path, "")
			// An id with a slash in it, or an empty one, does not even match the route.
			if code != http.StatusBadRequest && !(code == http.StatusNotFound && (bad == "" || strings.Contains(bad, "/"))) {
				t.Errorf("%s %s: HTTP %d %s; want 400", call.method, path, code, resp)
			}
		}
		if bad != "" { // an empty sub is "sub missing", refused all the same below
			g.expectRefused(t, http.StatusUnauthorized, attackerIP, "token="+jwttest.HS256(t, testSecret, bad), nil)
		}
	}
	g.expectRefused(t, http.StatusUnauthorized, attackerIP, "token="+jwttest.HS256(t, testSecret, ""), nil)
	// Both forms at once is ambiguous: refused.
	if code, _ := push(map[string]any{"user_id": "canary", "user_ids": []string{"other"}, "data": "x"}); code != http.StatusBadRequest {
		t.Errorf("user_id and user_ids: HTTP %d; want 400", code)
	}
	// The boundary that must pass: 128 bytes of every allowed character class.
	longest := strings.Repeat("aZ9_.:@-", 16)
	if code, resp := push(map[string]any{"user_id": longest, "data": "x"}); code != http.StatusOK {
		t.Errorf("a valid 128-byte id: HTTP %d %s", code, resp)
	}
	g.stillServes(t, c)

	// ?user_id= is a credential only with --dev, and checked there the same way.
	dev := start(t, func(c *config.Config) { c.Dev = true }, server.Options{})
	for _, bad := range badIDs {
		if bad == "" {
			continue // no user_id at all: "token required", 401 too, covered elsewhere
		}
		dev.expectRefused(t, http.StatusUnauthorized, attackerIP, "user_id="+url.QueryEscape(bad), nil)
	}
	conn := dev.connect(t, attackerIP, "user_id="+url.QueryEscape(longest), nil)
	conn.Close()
	dc := dev.startCanary(t)
	dev.stillServes(t, dc)
}
