package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
)

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
	srv    *server.Server
	cfg    config.Config
	base   string // http://127.0.0.1:port
	wsBase string // ws://127.0.0.1:port
	apiKey string // sent by api(); empty in --dev
	client *http.Client
	closed bool // Shutdown already called by the test
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
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	srv, err := server.New(cfg, opt)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}
	g := &gw{
		srv: srv, cfg: cfg,
		base:   "http://" + srv.Addr(),
		wsBase: "ws://" + srv.Addr(),
		client: &http.Client{Transport: tr, Timeout: patience},
	}
	if len(cfg.APIKeys) > 0 {
		g.apiKey = cfg.APIKeys[0]
	}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if g.closed {
			return
		}
		g.shutdown(t)
	})
	return g
}

// shutdown drains the server and fails the test if that takes too long or errs.
func (g *gw) shutdown(t *testing.T) {
	t.Helper()
	g.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := g.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// dialer never uses a proxy: the tests talk to loopback only.
var dialer = websocket.Dialer{HandshakeTimeout: patience}

// smallBufferDialer shrinks the client's socket receive buffer, so that a client that stops
// reading fills the kernel buffers after a few hundred KiB instead of tens of MiB.
var smallBufferDialer = websocket.Dialer{
	HandshakeTimeout: patience,
	NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			if err := tc.SetReadBuffer(16 << 10); err != nil {
				c.Close()
				return nil, err
			}
		}
		return c, nil
	},
}

// dialRaw opens path (with its query) on the gateway. A connection that opened is closed by
// the test's clean-up; a refused one returns the HTTP response, whose body gorilla keeps.
func (g *gw) dialRaw(t *testing.T, d *websocket.Dialer, path string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c, resp, err := d.DialContext(ctx, g.wsBase+path, hdr)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

// dial connects user with --dev's ?user_id= and fails the test if that is refused.
func (g *gw) dial(t *testing.T, user string) *websocket.Conn {
	t.Helper()
	return g.dialWith(t, &dialer, user)
}

func (g *gw) dialWith(t *testing.T, d *websocket.Dialer, user string) *websocket.Conn {
	t.Helper()
	c, resp, err := g.dialRaw(t, d, "/ws?user_id="+url.QueryEscape(user), nil)
	if err != nil {
		t.Fatalf("dial %s: %v (%s)", user, err, describe(resp))
	}
	return c
}

// expectRefused dials path and checks the HTTP refusal: its status and a JSON error body.
func (g *gw) expectRefused(t *testing.T, path string, hdr http.Header, status int) {
	t.Helper()
	c, resp, err := g.dialRaw(t, &dialer, path, hdr)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: connected, want HTTP %d", path, status)
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, want HTTP %d", path, err, status)
	}
	if resp.StatusCode != status {
		t.Fatalf("dial %s: HTTP %d, want %d (%s)", path, resp.StatusCode, status, describe(resp))
	}
	body, _ := io.ReadAll(resp.Body)
	errorField(t, body)
}

func describe(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	body, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}

// errorField checks that body is a JSON object with a non-empty "error" string.
func errorField(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %q", err, body)
	}
	if e.Error == nil || *e.Error == "" {
		t.Fatalf(`error body has no "error" field: %s`, body)
	}
	return *e.Error
}

// request sends one HTTP request with hdr and returns the status and body.
func (g *gw) request(t *testing.T, method, path, body string, hdr http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.base+path, strings.NewReader(body))
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

// metric returns the value of the counter or gauge name whose labels include labels (pairs of
// name, value); 0 when no such series exists yet.
func (g *gw) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	fams, err := g.srv.ForTest().Metrics().Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// metricSum returns the sum of every series of the counter or gauge name.
func (g *gw) metricSum(t *testing.T, name string) float64 {
	t.Helper()
	fams, err := g.srv.ForTest().Metrics().Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// read returns the next message of c, failing the test when none arrives in time.
func read(t *testing.T, c *websocket.Conn) (int, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(patience))
	typ, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, data
}

// readText returns the next message, which must be a text frame.
func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	typ, data := read(t, c)
	if typ != websocket.TextMessage {
		t.Fatalf("got frame type %d (%q), want text", typ, data)
	}
	return string(data)
}

// expectNext reads the next message and checks that it is the text want. Pushing a sentinel
// and expecting it next is how the suite proves that nothing else (a duplicate, a message
// meant for someone else) was delivered in between, without sleeping.
func expectNext(t *testing.T, c *websocket.Conn, want string) {
	t.Helper()
	if got := readText(t, c); got != want {
		t.Fatalf("next message %q, want %q", got, want)
	}
}

// readUntilClose reads data messages until the connection ends and returns them with the
// close code (-1 when the end was not a close frame). Then it hangs up, as a client does
// once the closing handshake is over (gorilla has answered the close frame by then).
func readUntilClose(t *testing.T, c *websocket.Conn) ([][]byte, int) {
	t.Helper()
	var msgs [][]byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(patience))
		_, data, err := c.ReadMessage()
		if err != nil {
			c.Close()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return msgs, ce.Code
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection neither closed nor sent anything for %v", patience)
			}
			return msgs, -1
		}
		msgs = append(msgs, data)
	}
}

// expectClose reads until the connection ends and checks that it ended with code and that
// no data message came first.
func expectClose(t *testing.T, c *websocket.Conn, code int) {
	t.Helper()
	msgs, got := readUntilClose(t, c)
	if len(msgs) > 0 {
		t.Fatalf("got %d unexpected messages before the close, first %q", len(msgs), msgs[0])
	}
	if got != code {
		t.Fatalf("closed with %d, want %d", got, code)
	}
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
