package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// TestMain fails the package when any goroutine outlives the tests: every server is shut down
// by its test, and Shutdown must leave nothing of it running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// patience bounds every wait of the suite. It is far above what any step takes on an idle
// machine: the suite runs with -race on loaded 2-core CI boxes, where a wait that is merely
// "long enough" today is a flake tomorrow. A correct gateway never makes a test wait this long.
const patience = 20 * time.Second

// Credentials of the non-dev servers. Two API keys, as during a rotation.
const (
	testSecret = "e2e-secret-0123456789abcdef-0123456789"
	testKey1   = "key-one-0123456789"
	testKey2   = "key-two-0123456789"
)

// gw is one gateway booted on 127.0.0.1:0 for one test, shut down by the test's clean-up.
type gw struct {
	*gwtest.Node
	apiKey string // sent by api(); empty in --dev
	client *http.Client
}

// devConfig is config.Default() for a --dev gateway on a random loopback port.
func devConfig() config.Config {
	c := config.Default()
	c.Dev = true
	c.Addr = "127.0.0.1:0"
	c.NodeID = "e2e"
	c.ShutdownGrace = patience
	return c
}

// prodConfig is a gateway without --dev: HS256 tokens and two API keys.
func prodConfig() config.Config {
	c := devConfig()
	c.Dev = false
	c.JWTSecret = testSecret
	c.APIKeys = []string{testKey1, testKey2}
	return c
}

// start boots the real server with cfg. Its clean-up shuts it down and fails the test when
// the drain does not finish in time.
func start(t *testing.T, cfg config.Config) *gw {
	t.Helper()
	return startWith(t, cfg, server.Options{})
}

func startWith(t *testing.T, cfg config.Config, opt server.Options) *gw {
	t.Helper()
	if opt.CloseGrace == 0 {
		opt.CloseGrace = time.Second // the server's own default, not gwtest's shorter one
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}
	// Registered before the node's, so it runs after its shutdown (clean-ups are LIFO).
	t.Cleanup(tr.CloseIdleConnections)
	g := &gw{
		Node: gwtest.Start(t, cfg.NodeID, gwtest.Options{
			Config:       func(c *config.Config) { *c = cfg },
			Server:       opt,
			ShutdownWait: patience,
			LogTail:      100,
		}),
		client: &http.Client{Transport: tr, Timeout: patience},
	}
	if len(cfg.APIKeys) > 0 {
		g.apiKey = cfg.APIKeys[0]
	}
	return g
}

// smallBuffer is a client socket receive buffer small enough that a client that stops reading
// fills the kernel buffers after a few hundred KiB instead of tens of MiB.
const smallBuffer = 16 << 10

// open dials o on the gateway. A connection that opened is closed by the test's clean-up; a
// refused one returns the HTTP response, whose body is still readable.
func (g *gw) open(t *testing.T, o wsclient.Options) (*wsclient.Conn, *http.Response, error) {
	t.Helper()
	o.Timeout = patience
	c, resp, err := wsclient.Dial(g.Addr, o)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

// connect dials o and fails the test if that is refused.
func (g *gw) connect(t *testing.T, o wsclient.Options) *wsclient.Conn {
	t.Helper()
	o.Timeout = patience
	return wsclient.MustDial(t, g.Addr, o)
}

// dial connects user with --dev's ?user_id=.
func (g *gw) dial(t *testing.T, user string) *wsclient.Conn {
	t.Helper()
	return g.connect(t, wsclient.Options{User: user})
}

// expectRefused dials path and checks the HTTP refusal: its status and a JSON error body.
func (g *gw) expectRefused(t *testing.T, path string, hdr http.Header, status int) {
	t.Helper()
	wsclient.ExpectRefused(t, g.Addr, wsclient.Options{Path: path, Header: hdr, Timeout: patience}, status)
}

// request sends one HTTP request with hdr and returns the status and body.
func (g *gw) request(t *testing.T, method, path, body string, hdr http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.URL(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// api is request with the server's first API key.
func (g *gw) api(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	hdr := http.Header{}
	if g.apiKey != "" {
		hdr.Set("Authorization", "Bearer "+g.apiKey)
	}
	return g.request(t, method, path, body, hdr)
}

type pushResult struct {
	UserID string `json:"user_id"`
	Online bool   `json:"online"`
	Queued bool   `json:"queued"`
}

// pushBody pushes a raw request body and expects 200; it returns the results.
func (g *gw) pushBody(t *testing.T, body string) []pushResult {
	t.Helper()
	status, b := g.api(t, http.MethodPost, "/api/v1/push", body)
	if status != http.StatusOK {
		t.Fatalf("push: HTTP %d %s", status, b)
	}
	var r struct {
		Results []pushResult `json:"results"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("push: answer %q: %v", b, err)
	}
	return r.Results
}

// push sends data (raw JSON text) to user and returns the one result.
func (g *gw) push(t *testing.T, user, data string) pushResult {
	t.Helper()
	res := g.pushBody(t, fmt.Sprintf(`{"user_id":%q,"data":%s}`, user, data))
	if len(res) != 1 || res[0].UserID != user {
		t.Fatalf("push to %s: results %+v", user, res)
	}
	if res[0].Online == res[0].Queued {
		t.Fatalf("push to %s: online and queued must differ: %+v", user, res[0])
	}
	return res[0]
}

// presence asks the API whether user is online.
func (g *gw) presence(t *testing.T, user string) bool {
	t.Helper()
	status, b := g.api(t, http.MethodGet, "/api/v1/users/"+user+"/presence", "")
	if status != http.StatusOK {
		t.Fatalf("presence %s: HTTP %d %s", user, status, b)
	}
	var r struct {
		Online *bool `json:"online"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Online == nil {
		t.Fatalf("presence %s: answer %q (%v)", user, b, err)
	}
	return *r.Online
}

// seqData is a sequence-numbered push payload, padded with pad bytes.
func seqData(i, pad int) string {
	return fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, i, strings.Repeat("x", pad))
}

// seqOf returns the sequence number of a seqData payload. It reads only the head of the
// message: the suite moves megabytes of padding, and decoding all of it under -race on a
// busy machine costs more than the rest of the test (exact bytes are TestPushArrivesByteForByte's job).
func seqOf(t *testing.T, data []byte) int {
	t.Helper()
	rest, ok := bytes.CutPrefix(data, []byte(`{"seq":`))
	end := bytes.IndexAny(rest, ",}")
	if !ok || end <= 0 || !bytes.HasSuffix(data, []byte("}")) {
		t.Fatalf("not a sequence message: %.80q", data)
	}
	n, err := strconv.Atoi(string(rest[:end]))
	if err != nil {
		t.Fatalf("not a sequence message: %.80q (%v)", data, err)
	}
	return n
}

// checkSequence fails unless got is exactly 0, 1, …, n-1: every number once, in order. On
// failure it says what went wrong: missing, duplicated or late numbers and where.
func checkSequence(t *testing.T, got []int, n int) {
	t.Helper()
	ok := len(got) == n
	for i := 0; ok && i < n; i++ {
		ok = got[i] == i
	}
	if ok {
		return
	}
	where := make(map[int][]int) // seq → positions
	for i, s := range got {
		where[s] = append(where[s], i)
	}
	var problems []string
	for s := range n {
		switch p := where[s]; {
		case len(p) == 0:
			problems = append(problems, fmt.Sprintf("%d missing", s))
		case len(p) > 1:
			problems = append(problems, fmt.Sprintf("%d %d times (at %v)", s, len(p), p))
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			lo := max(0, i-3)
			problems = append(problems, fmt.Sprintf("%d after %d at position %d: %v",
				got[i], got[i-1], i, got[lo:min(len(got), i+3)]))
		}
	}
	if len(problems) > 10 {
		problems = append(problems[:10], "…")
	}
	t.Fatalf("got %d messages, want 0…%d each exactly once and in order: %s", len(got), n-1, strings.Join(problems, "; "))
}

// hsToken is a client token signed with the server's HS256 secret.
func hsToken(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	return jwttest.Sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims)
}

// itoa keeps table literals short.
func itoa(i int) string { return strconv.Itoa(i) }
