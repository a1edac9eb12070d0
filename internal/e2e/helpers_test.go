package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

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

// idle reports whether every connection the node accepted has been cleaned up completely:
// unsubscribed and its unsent messages stored (the gauge drops after that clean-up).
func (n *node) idle() bool {
	return n.Metric("wsgateway_connections") == 0 && n.Srv.ForTest().Hub().Conns() == 0
}

// --- HTTP API ---

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

// tryPush pushes raw JSON data to user through the API at base ("http://host:port"); see
// gwtest.Push.
func (c *cluster) tryPush(base, user, data string) (int, gwtest.PushResult, error) {
	return gwtest.Push(c.http, base, user, "", data)
}

// push pushes and fails the test unless the API answered 200.
func (c *cluster) push(base, user, data string) gwtest.PushResult {
	c.t.Helper()
	status, res, err := c.tryPush(base, user, data)
	if err != nil || status != http.StatusOK {
		c.t.Fatalf("push %s to %s via %s: status %d, err %v", data, user, base, status, err)
	}
	return res
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
		"%s still has %s unacknowledged messages", user, wait.Lazy(func() string { return strconv.FormatInt(c.offlineLen(user), 10) }))
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
		wait.Lazy(func() string { return strconv.FormatInt(p.pushed.Load(), 10) }))
	if p.err != nil {
		t.Fatalf("pusher: %v", p.err)
	}
}
