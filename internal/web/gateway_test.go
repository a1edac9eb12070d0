package web_test

// The gateway of the browser and client tests: booted in-process, driven through its HTTP API.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// patience bounds every wait. It is far above what any step takes on an idle machine: the
// suite runs with -race next to other packages on 2-core CI boxes, where chromium starts slowly.
const patience = 20 * time.Second

// lazy formats as the result of calling it, so a wait.For message can show the last value seen
// (its args are taken when For is called, the message built only when it fails).
type lazy func() string

func (l lazy) String() string { return l() }

// --- the gateway -------------------------------------------------------------------------

// gateway is one real gateway serving one test.
type gateway struct{ *gwtest.Node }

// devConfig is a --dev gateway on a random loopback port, with a fast heartbeat so that the
// server pings the browser often (Chrome answers pings itself; JavaScript never sees them).
func devConfig() config.Config {
	c := config.Default()
	c.Dev = true
	c.Addr = "127.0.0.1:0"
	c.NodeID = "browser-test"
	c.PingInterval = 250 * time.Millisecond
	c.PongTimeout = time.Second
	c.ShutdownGrace = patience
	return c
}

// startGateway boots a gateway on cfg.Addr. A fixed address (a restart in place) may still be
// held for a moment by an ephemeral port of some outgoing connection, so it waits until the
// address is free first. The test's clean-up shuts it down unless the test did.
func startGateway(t *testing.T, cfg config.Config) *gateway {
	t.Helper()
	if _, port, _ := net.SplitHostPort(cfg.Addr); port != "0" {
		var lastErr error
		wait.For(t, patience, func() bool {
			ln, err := net.Listen("tcp", cfg.Addr)
			if lastErr = err; err == nil {
				ln.Close()
			}
			return err == nil
		}, "%s free: %s", cfg.Addr, lazy(func() string { return fmt.Sprint(lastErr) }))
	}
	t.Cleanup(httpClient.CloseIdleConnections) // after the shutdown: no keep-alive goroutines left for goleak
	return &gateway{gwtest.Start(t, cfg.NodeID, gwtest.Options{
		Config:       func(c *config.Config) { *c = cfg },
		ShutdownWait: patience,
		LogTail:      100,
	})}
}

var httpClient = &http.Client{Timeout: patience, Transport: &http.Transport{Proxy: nil}}

// call does one API request and returns the status and body.
func (g *gateway) call(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, g.URL(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, string(b)
}

type pushResult struct {
	UserID string `json:"user_id"`
	Online bool   `json:"online"`
	Queued bool   `json:"queued"`
}

// push sends data (JSON text) to user through POST /api/v1/push.
func (g *gateway) push(t *testing.T, user, data string) pushResult {
	t.Helper()
	status, body := g.call(t, http.MethodPost, "/api/v1/push", fmt.Sprintf(`{"user_id":%q,"data":%s}`, user, data))
	if status != http.StatusOK {
		t.Fatalf("push to %s: %d %s", user, status, body)
	}
	var r struct{ Results []pushResult }
	if err := json.Unmarshal([]byte(body), &r); err != nil || len(r.Results) != 1 {
		t.Fatalf("push to %s: answer %s (%v)", user, body, err)
	}
	return r.Results[0]
}

// online asks the presence API whether any node holds a connection of user.
func (g *gateway) online(t *testing.T, user string) bool {
	t.Helper()
	status, body := g.call(t, http.MethodGet, "/api/v1/users/"+url.PathEscape(user)+"/presence", "")
	if status != http.StatusOK {
		t.Fatalf("presence of %s: %d %s", user, status, body)
	}
	var r struct{ Online bool }
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("presence of %s: %s (%v)", user, body, err)
	}
	return r.Online
}
