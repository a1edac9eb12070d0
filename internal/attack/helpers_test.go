package attack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/logbuf"
	"github.com/wsgateway/wsgateway/internal/testutil/metricstest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// goleak runs after every test and every gateway's Shutdown: an attack that leaves a
// connection goroutine, a writer or a timer behind fails the package.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// patience bounds every wait. A healthy gateway answers each attack within milliseconds; the
// bound only matters when something is wrong, on a loaded 2-core CI box under -race.
const patience = 15 * time.Second

// Credentials of the gateways under attack (no --dev).
const (
	testSecret = "attack-secret-0123456789abcdef-0123456789"
	apiKey     = "attack-key-0123456789"
)

// Loopback source addresses: attackers dial from attackerIP, the canary from canaryIP and
// fresh well-behaved clients from freshIP, so the per-IP cap of one never touches another.
// Linux routes all of 127.0.0.0/8 to lo.
const (
	attackerIP = "127.0.0.1"
	canaryIP   = "127.0.0.2"
	freshIP    = "127.0.0.3"
)

// gateway is one real server under attack, booted in-process on 127.0.0.1:0.
type gateway struct {
	srv  *server.Server
	addr string
	cfg  config.Config
	logs *logbuf.Buffer
	// sign mints a valid client token for sub with the gateway's configured key.
	sign func(sub string) string
	http *http.Client
}

// start boots a gateway without --dev: HS256 tokens with testSecret, apiKey for the API,
// in-memory bus and store. mutate changes the config before validation. Its clean-up shuts
// the gateway down and fails the test when a connection is left or a panic was logged.
func start(t *testing.T, mutate func(*config.Config), opt server.Options) *gateway {
	t.Helper()
	if opt.CloseGrace == 0 {
		opt.CloseGrace = 200 * time.Millisecond
	}
	n := gwtest.Start(t, "attack", gwtest.Options{
		Config: func(cfg *config.Config) {
			cfg.Dev = false
			cfg.JWTSecret = testSecret
			cfg.APIKeys = []string{apiKey}
			if mutate != nil {
				mutate(cfg)
			}
		},
		Server:       opt,
		ShutdownWait: patience,
	})
	// No keep-alive: every helper request gets its own connection, so a short API body
	// timeout (which is also the idle timeout) never races a pooled connection, and no
	// idle-connection goroutine outlives the test.
	g := &gateway{
		srv: n.Srv, addr: n.Addr, cfg: n.Cfg, logs: n.Logs,
		http: &http.Client{Timeout: patience, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	g.sign = func(sub string) string { return jwttest.HS256(t, testSecret, sub) }
	// Registered after gwtest's, so this runs first: it shuts the gateway down itself (gwtest's
	// clean-up then finds it done) to look at what is left.
	t.Cleanup(func() {
		if err := n.Shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if c := n.Srv.ForTest().Hub().Conns(); c != 0 {
			t.Errorf("%d connections left in the hub after shutdown", c)
		}
		if strings.Contains(n.Logs.String(), "panic") {
			t.Errorf("the gateway logged a panic:\n%s", n.Logs.String())
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", n.Logs.TailBytes(20000))
		}
	})
	return g
}

// --- WebSocket clients ---

// dial opens /ws?query from the loopback address local. It returns the handshake response
// too, whose status tells a refusal.
func (g *gateway) dial(local, query string, hdr http.Header) (*wsclient.Conn, *http.Response, error) {
	return wsclient.Dial(g.addr, g.options(local, query, hdr))
}

func (g *gateway) options(local, query string, hdr http.Header) wsclient.Options {
	return wsclient.Options{Local: net.ParseIP(local), Query: query, Header: hdr, Timeout: patience}
}

// connect opens /ws?query from local, or fails the test; the clean-up closes it.
func (g *gateway) connect(t *testing.T, local, query string, hdr http.Header) *wsclient.Conn {
	t.Helper()
	return wsclient.MustDial(t, g.addr, g.options(local, query, hdr))
}

// mustDial connects user with a valid token from local, or fails the test.
func (g *gateway) mustDial(t *testing.T, local, user string) *wsclient.Conn {
	t.Helper()
	return g.connect(t, local, "token="+g.sign(user), nil)
}

// expectRefused dials and asserts an HTTP refusal with want before the upgrade; it returns
// the JSON error text.
func (g *gateway) expectRefused(t *testing.T, want int, local, query string, hdr http.Header) string {
	t.Helper()
	return wsclient.ExpectRefused(t, g.addr, g.options(local, query, hdr), want)
}

// --- HTTP API ---

// api calls the API with the gateway's key and returns the status and body.
func (g *gateway) api(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+g.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (g *gateway) push(t *testing.T, user, data string) (int, string) {
	t.Helper()
	return g.api(t, http.MethodPost, "/api/v1/push", `{"user_id":`+jsonString(user)+`,"data":`+data+`}`)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// --- metrics ---

// metric sums the samples of name whose labels include every pair of labels (k1, v1, …).
func (g *gateway) metric(name string, labels ...string) float64 {
	return metricstest.Sum(g.srv.ForTest().Metrics().Registry(), name, labels...)
}

// waitMetric waits until metric(name, labels…) reaches at least want.
func (g *gateway) waitMetric(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	wait.For(t, patience, func() bool { return g.metric(name, labels...) >= want },
		"%s%v reached %v (now %v)", name, labels, want, g.metric(name, labels...))
}

// --- the canary: a well-behaved client that receives pushes throughout an attack ---

// canary is a client connected from canaryIP before the attack starts, with a pusher that
// pushes it a sequence number every 10ms through the API. Every push must be accepted with
// online=true and arrive, once, in order, on the same connection.
type canary struct {
	g    *gateway
	user string
	conn *wsclient.Conn

	pushed atomic.Int64 // highest sequence number the API accepted
	mu     sync.Mutex
	got    int64 // highest sequence number received
	err    error // the first thing that went wrong
	stop   chan struct{}
	wg     sync.WaitGroup
}

func (g *gateway) startCanary(t *testing.T) *canary {
	t.Helper()
	c := &canary{g: g, user: "canary", stop: make(chan struct{})}
	c.conn = g.mustDial(t, canaryIP, c.user)
	c.wg.Add(2)
	go c.read()
	go c.pushLoop()
	t.Cleanup(func() {
		close(c.stop)
		c.conn.Close()
		c.wg.Wait()
	})
	// The first push arriving proves the canary is wired before the attack begins.
	wait.For(t, patience, func() bool { return c.received() >= 1 || c.failure() != nil }, "canary's first push")
	if err := c.failure(); err != nil {
		t.Fatalf("canary: %v", err)
	}
	return c
}

func (c *canary) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *canary) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *canary) received() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got
}

func (c *canary) read() {
	defer c.wg.Done()
	for {
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			select {
			case <-c.stop:
			default:
				c.fail(fmt.Errorf("canary connection ended: %v", err))
			}
			return
		}
		n, err := strconv.ParseInt(string(b), 10, 64)
		c.mu.Lock()
		switch {
		case err != nil:
			c.setErrLocked(fmt.Errorf("canary received %q, which nobody pushed to it", b))
		case n != c.got+1:
			c.setErrLocked(fmt.Errorf("canary received %d after %d: lost or reordered", n, c.got))
		default:
			c.got = n
		}
		c.mu.Unlock()
	}
}

func (c *canary) setErrLocked(err error) {
	if c.err == nil {
		c.err = err
	}
}

func (c *canary) pushLoop() {
	defer c.wg.Done()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: patience, Transport: &http.Transport{DisableKeepAlives: true}}
	for seq := int64(1); ; seq++ {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+c.g.addr+"/api/v1/push",
			strings.NewReader(fmt.Sprintf(`{"user_id":%q,"data":%d}`, c.user, seq)))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := client.Do(req)
		if err != nil {
			c.fail(fmt.Errorf("push %d: %v", seq, err))
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"online":true`)) {
			c.fail(fmt.Errorf("push %d: HTTP %d %s", seq, resp.StatusCode, body))
			return
		}
		c.pushed.Store(seq)
	}
}

// alive asserts that the canary is still connected and receives pushes accepted after this
// call, with nothing lost or reordered since it connected.
func (c *canary) alive(t *testing.T) {
	t.Helper()
	target := c.pushed.Load() + 3
	wait.For(t, patience, func() bool { return c.received() >= target || c.failure() != nil },
		"the canary to receive push %d (it has %d)", target, c.received())
	if err := c.failure(); err != nil {
		t.Fatalf("the well-behaved client suffered from the attack: %v", err)
	}
}

// stillServes asserts that the attack hurt nobody: the canary, connected throughout, still
// receives every push, and a fresh client can connect and receive.
func (g *gateway) stillServes(t *testing.T, c *canary) {
	t.Helper()
	c.alive(t)
	user := fmt.Sprintf("fresh-%d", time.Now().UnixNano())
	conn := g.mustDial(t, freshIP, user)
	defer conn.Close()
	if code, body := g.push(t, user, `"hello"`); code != http.StatusOK || !strings.Contains(body, `"online":true`) {
		t.Fatalf("push to a fresh client: HTTP %d %s", code, body)
	}
	if got := conn.NextText(t); got != `"hello"` {
		t.Fatalf("fresh client received %q; want %q", got, `"hello"`)
	}
}
