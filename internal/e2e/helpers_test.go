package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// Deadlines are generous: CI runs this package with -race on a loaded 2-core machine. A
// healthy run meets every condition within milliseconds; the deadline only bounds a failure.
const (
	timeout      = 20 * time.Second // any condition that should hold soon
	httpTimeout  = 10 * time.Second // one API call
	dialTimeout  = 10 * time.Second // one WebSocket handshake
	shutdownWait = 15 * time.Second // one node's Shutdown
)

// cluster is one redis-server and the gateway nodes a test starts on it. Every test gets its
// own key prefix, so nothing it stores or publishes reaches another test.
type cluster struct {
	t      *testing.T
	redis  *redistest.Server
	rdb    *redis.Client
	prefix string
	http   *http.Client
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	rs := redistest.Start(t)
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	// Registered before any node, so it runs after their shutdown (cleanups are LIFO): no
	// keep-alive goroutine of the client survives the test (goleak).
	t.Cleanup(tr.CloseIdleConnections)
	return &cluster{
		t:      t,
		redis:  rs,
		rdb:    rs.Client(t),
		prefix: redistest.Prefix(t),
		http:   &http.Client{Transport: tr, Timeout: httpTimeout},
	}
}

// node is one in-process gateway.
type node struct{ *gwtest.Node }

// startNode boots a gateway node on 127.0.0.1:0 with --dev semantics (?user_id= accepted, API
// open) and waits until its /readyz says it is subscribed. Its logs are shown if the test
// fails. The node is shut down in the test's cleanup unless the test did it already.
func (c *cluster) startNode(id string) *node {
	c.t.Helper()
	return c.startNodeWith(id, func(*config.Config) {})
}

// startNodeWith is startNode with the settings changed by edit.
func (c *cluster) startNodeWith(id string, edit func(*config.Config)) *node {
	c.t.Helper()
	return &node{gwtest.Start(c.t, id, gwtest.Options{
		Config: func(cfg *config.Config) {
			cfg.RedisURL = c.redis.URL()
			cfg.KeyPrefix = c.prefix
			edit(cfg)
		},
		Server: server.Options{
			// A dead node's connections stop counting within about 2.5 s.
			PresenceHeartbeat: 200 * time.Millisecond,
			PresenceDeadAfter: 2 * time.Second,
		},
		Ready:        timeout,
		ShutdownWait: shutdownWait,
		LogTail:      200,
	})}
}

func wsURL(addr, user string) string { return "ws://" + addr + "/ws?user_id=" + user }

// idle reports whether every connection the node accepted has been cleaned up completely:
// unsubscribed and its unsent messages stored (the gauge drops after that clean-up).
func (n *node) idle() bool {
	return n.Metric("wsgateway_connections") == 0 && n.Srv.ForTest().Hub().Conns() == 0
}

// --- HTTP API ---

type pushResult struct {
	UserID string `json:"user_id"`
	Online bool   `json:"online"`
	Queued bool   `json:"queued"`
}

func (c *cluster) do(method, url string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (c *cluster) get(url string) (int, []byte, error) { return c.do(http.MethodGet, url, nil) }

// tryPush pushes raw JSON data to user through the API at base ("http://host:port"). It is
// safe to call from any goroutine; the caller decides what a failure means.
func (c *cluster) tryPush(base, user, data string) (int, pushResult, error) {
	body := []byte(`{"user_id":` + jsonString(user) + `,"data":` + data + `}`)
	status, b, err := c.do(http.MethodPost, base+"/api/v1/push", body)
	if err != nil || status != http.StatusOK {
		return status, pushResult{}, err
	}
	var out struct {
		Results []pushResult `json:"results"`
	}
	if err := json.Unmarshal(b, &out); err != nil || len(out.Results) != 1 {
		return status, pushResult{}, fmt.Errorf("push answer %s: %v", b, err)
	}
	return status, out.Results[0], nil
}

// push pushes and fails the test unless the API answered 200.
func (c *cluster) push(base, user, data string) pushResult {
	c.t.Helper()
	status, res, err := c.tryPush(base, user, data)
	if err != nil || status != http.StatusOK {
		c.t.Fatalf("push %s to %s via %s: status %d, err %v", data, user, base, status, err)
	}
	return res
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// presence asks base whether user is online anywhere.
func (c *cluster) presence(base, user string) (bool, error) {
	status, b, err := c.get(base + "/api/v1/users/" + user + "/presence")
	if err != nil {
		return false, err
	}
	if status != http.StatusOK {
		return false, fmt.Errorf("presence: status %d: %s", status, b)
	}
	var out struct {
		Online bool `json:"online"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return false, err
	}
	return out.Online, nil
}

// offlineLen is how many of user's messages are not acknowledged (latest number minus the
// acknowledged position), straight from Redis: what a connect without since would get.
func (c *cluster) offlineLen(user string) int64 {
	c.t.Helper()
	v, err := c.rdb.HMGet(context.Background(), c.prefix+"inbox:{"+user+"}:state", "seq", "ack").Result()
	if err != nil {
		c.t.Fatalf("HMGET inbox:{%s}:state: %v", user, err)
	}
	var n [2]int64
	for i, x := range v {
		if s, ok := x.(string); ok {
			n[i], _ = strconv.ParseInt(s, 10, 64)
		}
	}
	return n[0] - n[1]
}

// waitAcked waits until everything pushed to user is acknowledged: raw deliveries count as
// acknowledged once written, and nodes record positions in batches (within a second).
func (c *cluster) waitAcked(user string) {
	c.t.Helper()
	wait.For(c.t, timeout, func() bool { return c.offlineLen(user) == 0 },
		"%s still has %s unacknowledged messages", user, lazy(func() string { return strconv.FormatInt(c.offlineLen(user), 10) }))
}

// --- WebSocket clients ---

// frame is one message a client received.
type frame struct {
	typ  int // websocket.TextMessage or websocket.BinaryMessage
	data []byte
}

func (f frame) String() string {
	if f.typ == websocket.BinaryMessage {
		return fmt.Sprintf("binary %x", f.data)
	}
	return fmt.Sprintf("text %q", f.data)
}

// client is a real WebSocket client. One goroutine reads everything into frames (so the
// server never sees a slow consumer), answers pings and close frames (gorilla's defaults).
type client struct {
	conn *websocket.Conn

	wmu sync.Mutex // one writer at a time (gorilla's rule); the reader only uses WriteControl

	mu      sync.Mutex
	frames  []frame
	readErr error
	done    chan struct{} // closed when the reader ended; readErr is set then
}

// tryDial connects without failing the test: for goroutines and for expected refusals.
func tryDial(url string, header http.Header) (*client, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: dialTimeout}
	conn, resp, err := d.Dial(url, header)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, resp, err
	}
	c := &client{conn: conn, done: make(chan struct{})}
	go c.read()
	return c, resp, nil
}

// dial connects or fails the test. When it returns, the node has confirmed the user's
// subscription (the gateway upgrades only after that) and flushes the offline backlog first.
func dial(t *testing.T, url string, header http.Header) *client {
	t.Helper()
	c, resp, err := tryDial(url, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(c.abort)
	return c
}

func (c *client) read() {
	defer close(c.done)
	for {
		typ, data, err := c.conn.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.readErr = err
			c.mu.Unlock()
			return
		}
		c.frames = append(c.frames, frame{typ, data})
		c.mu.Unlock()
	}
}

// received returns a copy of every frame so far.
func (c *client) received() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.frames...)
}

func (c *client) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

func (c *client) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitFrames waits until at least n frames arrived and returns them all.
func (c *client) waitFrames(t *testing.T, n int, what string) []frame {
	t.Helper()
	wait.For(t, timeout, func() bool { return c.count() >= n || c.closed() },
		"%s: waiting for %d frames, got %s", what, n, lazy(func() string { return fmt.Sprint(c.received()) }))
	got := c.received()
	if len(got) < n {
		t.Fatalf("%s: connection ended (%v) after %d frames, want %d: %v", what, c.err(), len(got), n, got)
	}
	return got
}

// expectTexts waits for exactly the text frames want (in order, and nothing else) after the
// first skip frames.
func (c *client) expectTexts(t *testing.T, skip int, what string, want ...string) {
	t.Helper()
	got := c.waitFrames(t, skip+len(want), what)[skip:]
	if len(got) != len(want) {
		t.Fatalf("%s: got %d frames %v, want %q", what, len(got), got, want)
	}
	for i, f := range got {
		if f.typ != websocket.TextMessage || string(f.data) != want[i] {
			t.Fatalf("%s: frame %d is %v, want text %q (all: %v)", what, i, f, want[i], got)
		}
	}
}

func (c *client) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// send writes one data frame.
func (c *client) send(t *testing.T, typ int, data []byte) {
	t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(httpTimeout))
	if err := c.conn.WriteMessage(typ, data); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

// closeCode waits until the server ended the connection and returns the close code it sent
// (-1 if it ended without a close frame).
func (c *client) closeCode(t *testing.T, what string) int {
	t.Helper()
	wait.For(t, timeout, c.closed, "%s: the server did not close the connection", what)
	var ce *websocket.CloseError
	if errors.As(c.err(), &ce) {
		return ce.Code
	}
	return -1
}

// closeClean runs the client side of the closing handshake as a well-behaved client does:
// send a 1000 close frame, keep reading until the server's close frame arrives, then close the
// socket. Every frame the server wrote before its close frame is in frames when it returns.
// It is safe to call from any goroutine.
func (c *client) closeClean() ([]frame, error) {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	werr := c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(httpTimeout))
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.conn.Close()
		<-c.done
		return c.received(), fmt.Errorf("no close frame from the server within %v", timeout)
	}
	c.conn.Close()
	if werr != nil && !errors.Is(werr, websocket.ErrCloseSent) {
		return c.received(), fmt.Errorf("sending close: %w", werr)
	}
	var ce *websocket.CloseError
	if !errors.As(c.err(), &ce) {
		return c.received(), fmt.Errorf("connection ended without a close frame: %v", c.err())
	}
	return c.received(), nil
}

// abort closes the socket (idempotent) and waits for the reader: the cleanup of every client.
func (c *client) abort() {
	c.conn.Close()
	<-c.done
}

// --- misc ---

// pusher pushes the numbers 1..total to one user from its own goroutine, through the given
// nodes in turn, each push after the previous one was answered: one publisher, so the order
// guarantee applies to what the user receives.
type pusher struct {
	pushed atomic.Int64 // the last number answered 200
	done   chan struct{}
	queued int   // pushes stored offline by the push itself; read after done
	err    error // why it stopped early; read after done
}

func startPusher(t *testing.T, c *cluster, user string, total int, via ...*node) *pusher {
	t.Helper()
	p := &pusher{done: make(chan struct{})}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); <-p.done })
	go func() {
		defer close(p.done)
		for i := 1; i <= total; i++ {
			select {
			case <-stop:
				p.err = fmt.Errorf("test ended before push %d", i)
				return
			default:
			}
			n := via[i%len(via)]
			status, res, err := c.tryPush(n.URL(""), user, strconv.Itoa(i))
			if err != nil || status != http.StatusOK {
				p.err = fmt.Errorf("push %d via %s: status %d, %v", i, n.ID, status, err)
				return
			}
			if res.Queued {
				p.queued++
			}
			p.pushed.Store(int64(i))
		}
	}()
	return p
}

func (p *pusher) finished() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// check waits until every push was answered and fails the test if one was not 200.
func (p *pusher) check(t *testing.T) {
	t.Helper()
	wait.For(t, 2*timeout, p.finished, "pusher still running at %s",
		lazy(func() string { return strconv.FormatInt(p.pushed.Load(), 10) }))
	if p.err != nil {
		t.Fatalf("pusher: %v", p.err)
	}
}

// lazy formats as the result of calling it: wait.For formats its message only when it gives
// up, so a lazy argument shows the state at the deadline rather than at the start.
type lazy func() string

func (l lazy) String() string { return l() }
