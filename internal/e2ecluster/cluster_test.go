package e2ecluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// After dials to a killed node failed, go-redis retries in the background once a
		// second (pool.tryDial); that goroutine ends by itself after its sleep, even after Close.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

const deadline = 30 * time.Second

// gateway boots one in-process node with --dev semantics on the given Redis mode, with
// gwtest's pub/sub probe: every 200ms, and a link whose probe stays away 3s is rebuilt. The
// server's 3 × interval (600ms) rebuilt healthy links under -race on a loaded machine, and a
// connect during the rebuild was refused with 503 (TestClusterV1PresenceEvents, 1 run in 4).
func gateway(t *testing.T, id string, set func(*config.Config)) *server.Server {
	t.Helper()
	return gatewayWith(t, id, set, server.Options{})
}

// gatewayWith is gateway with the given server options. Its log is shown if the test fails.
func gatewayWith(tb testing.TB, id string, set func(*config.Config), opts server.Options) *server.Server {
	tb.Helper()
	return gwtest.Start(tb, id, gwtest.Options{
		Config:       set,
		Server:       opts,
		Ready:        deadline,
		ShutdownWait: 20 * time.Second,
		LogTail:      80,
	}).Srv
}

var httpc = &http.Client{Timeout: 10 * time.Second}

func readyz(addr string) string {
	resp, err := httpc.Get("http://" + addr + "/readyz")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func get(addr, path string) int {
	resp, err := httpc.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// push sends one push; it returns the status and whether the user was online.
func push(addr, user, data string) (int, bool) {
	status, r, _ := gwtest.Push(httpc, "http://"+addr, user, "", data)
	return status, r.Online
}

func mustPush(t *testing.T, addr, user, data string) bool {
	t.Helper()
	status, online := push(addr, user, data)
	if status != 200 {
		t.Fatalf("push to %s via %s: status %d", user, addr, status)
	}
	return online
}

// client is a WebSocket client whose goroutine records every data frame it gets, and the close
// code the server ended the connection with.
type client struct {
	conn *wsclient.Conn
	mu   sync.Mutex
	got  []string
	code int
	done chan struct{}
}

// connect dials /ws as user; the test's clean-up closes the connection.
func connect(t *testing.T, addr, user string) *client {
	t.Helper()
	return record(t, addr, wsclient.Options{User: user})
}

// record dials and starts the recording goroutine; the clean-up closes the connection and
// waits for that goroutine.
func record(tb testing.TB, addr string, o wsclient.Options) *client {
	tb.Helper()
	conn, resp, err := wsclient.Dial(addr, o)
	if err != nil {
		tb.Fatalf("dial %s: %v (%s)", wsclient.URL(addr, o), err, wsclient.Describe(resp))
	}
	c := &client{conn: conn, done: make(chan struct{})}
	go c.read()
	tb.Cleanup(func() { conn.Close(); <-c.done })
	return c
}

func (c *client) read() {
	defer close(c.done)
	for {
		_, data, err := c.conn.ReadMessage()
		c.mu.Lock()
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				c.code = ce.Code
			}
			c.mu.Unlock()
			return
		}
		c.got = append(c.got, string(data))
		c.mu.Unlock()
	}
}

func (c *client) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

func (c *client) closeCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

func (c *client) has(m string) bool {
	for _, x := range c.messages() {
		if x == m {
			return true
		}
	}
	return false
}

// usersPerShard returns n user ids for each master of the cluster.
func usersPerShard(t *testing.T, rc *redistest.Cluster, n int) map[string][]string {
	out := map[string][]string{}
	for i := 0; len(out) < 3 || !allAtLeast(out, n); i++ {
		u := fmt.Sprintf("u%d", i)
		m := rc.MasterFor(t, "ws:user:{"+u+"}")
		if len(out[m]) < n {
			out[m] = append(out[m], u)
		}
		if i > 10000 {
			t.Fatal("could not spread users over the shards")
		}
	}
	return out
}

func allAtLeast(m map[string][]string, n int) bool {
	for _, v := range m {
		if len(v) < n {
			return false
		}
	}
	return true
}

// TestCluster runs two nodes on a 3-master cluster with a replica each: users on every shard
// get cross-node pushes, offline storage and flush work per shard, kick, presence and
// broadcast work, and a master failover in the middle loses nothing that was answered 200.
func TestCluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3, 1)
	seeds := strings.Split(rc.Seeds(), ",")
	set := func(c *config.Config) { c.RedisCluster = seeds }
	a := gateway(t, "a", set)
	b := gateway(t, "b", set)

	shards := usersPerShard(t, rc, 2)
	var masters []string
	for m := range shards {
		masters = append(masters, m)
	}
	sort.Strings(masters)

	// Cross-node push on every shard: connect on a, push via b and the other way round.
	clients := map[string]*client{}
	for _, m := range masters {
		online, other := shards[m][0], shards[m][1]
		clients[online] = connect(t, a.Addr(), online)
		clients[other] = connect(t, b.Addr(), other)
	}
	for user, c := range clients {
		via := a.Addr() // push through the node the user is not on
		if a.ForTest().Hub().Online(user) {
			via = b.Addr()
		}
		msg := fmt.Sprintf(`"hello %s"`, user)
		if !mustPush(t, via, user, msg) {
			t.Fatalf("push to connected %s answered online:false", user)
		}
		wait.For(t, deadline, func() bool { return c.has(msg) }, "%s did not get %s", user, msg)
	}

	// Presence through either node, for users on every shard.
	for user := range clients {
		for _, n := range []*server.Server{a, b} {
			if !presence(t, n.Addr(), user) {
				t.Fatalf("presence of %s via %s is false", user, n.Addr())
			}
		}
	}
	if presence(t, a.Addr(), "nobody-here") {
		t.Fatal("presence of an unknown user is true")
	}

	// Offline per shard: stored via a, flushed on b, in order.
	for i, m := range masters {
		user := fmt.Sprintf("off%d", i)
		for rc.MasterFor(t, "ws:user:{"+user+"}") != m {
			user += "x"
		}
		for j := range 3 {
			if mustPush(t, a.Addr(), user, fmt.Sprintf(`"%s-%d"`, user, j)) {
				t.Fatalf("push to offline %s answered online:true", user)
			}
		}
		c := connect(t, b.Addr(), user)
		want := []string{`"` + user + `-0"`, `"` + user + `-1"`, `"` + user + `-2"`}
		wait.For(t, deadline, func() bool { return len(c.messages()) >= 3 }, "%s got no backlog", user)
		if got := c.messages(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s backlog %v, want %v", user, got, want)
		}
	}

	// Broadcast via a reaches clients on both nodes.
	resp, err := httpc.Post("http://"+a.Addr()+"/api/v1/broadcast", "application/json", strings.NewReader(`{"data":"all"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("broadcast: %v %v", err, resp)
	}
	resp.Body.Close()
	for user, c := range clients {
		wait.For(t, deadline, func() bool { return c.has(`"all"`) }, "%s missed the broadcast", user)
	}

	// Failover: kill the master of one shard; pushes to its users keep being answered 200 once
	// the replica took over, and every push answered 200 arrives.
	victim := masters[0]
	user := shards[victim][0]
	c := clients[user]
	// The master dies once its replica has everything it was sent: replication is
	// asynchronous, and a promoted replica that lacks the old master's last writes numbers new
	// pushes again from an older point (README, known limits; --redis-wait-replicas).
	vc := redis.NewClient(&redis.Options{Addr: victim})
	if n, err := vc.Do(context.Background(), "WAIT", 1, 5000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT on %s: %d replicas, %v", victim, n, err)
	}
	_ = vc.Close()
	rc.KillNode(t, victim)
	var accepted []string
	start := time.Now()
	for i := 0; time.Since(start) < 40*time.Second && len(accepted) < 20; i++ {
		msg := fmt.Sprintf(`"failover-%d"`, i)
		t0 := time.Now()
		if status, _ := push(b.Addr(), user, msg); status == 200 {
			accepted = append(accepted, msg)
		} else {
			t.Logf("push during failover: %d after %s", status, time.Since(t0).Round(time.Millisecond))
			time.Sleep(50 * time.Millisecond) // pacing between retries, not a wait for a condition
		}
	}
	if len(accepted) < 20 {
		t.Fatalf("only %d pushes accepted within 40s of the failover", len(accepted))
	}
	t.Logf("failover: 20 pushes accepted %s after the master was killed", time.Since(start).Round(time.Millisecond))
	rc.WaitHealthy(t)
	wait.For(t, deadline, func() bool {
		for _, m := range accepted {
			if !c.has(m) {
				return false
			}
		}
		return true
	}, "not every accepted push reached %s after the failover", user)
	wait.For(t, deadline, func() bool { return get(a.Addr(), "/readyz") == 200 && get(b.Addr(), "/readyz") == 200 },
		"nodes not ready after the failover: a %s, b %s", readyz(a.Addr()), readyz(b.Addr()))
	if c.closeCode() != 0 {
		t.Fatalf("client was closed (%d) by the failover", c.closeCode())
	}

	// Kick via b closes the user's connection on a with 4001.
	other := shards[masters[1]][0]
	req, _ := http.NewRequest(http.MethodDelete, "http://"+b.Addr()+"/api/v1/users/"+other+"/connections", nil)
	if resp, err := httpc.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("kick: %v", err)
	} else {
		resp.Body.Close()
	}
	wait.For(t, deadline, func() bool { return clients[other].closeCode() == 4001 }, "kick did not close %s with 4001", other)
}

func presence(t *testing.T, addr, user string) bool {
	t.Helper()
	resp, err := httpc.Get("http://" + addr + "/api/v1/users/" + user + "/presence")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Online bool }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("presence %s: %d %v", user, resp.StatusCode, err)
	}
	return v.Online
}

// TestSentinelFailover: one master, one replica, three sentinels. The master is killed; the
// sentinels promote the replica; connections stay and pushes resume. Node a runs with
// redis-wait-replicas 1: what it answered 200 for — offline messages included — was on the
// replica before the answer, so it survives the failover. Afterwards no replica is left, so a
// answers 503 (it cannot confirm), while b (no WAIT) carries on.
func TestSentinelFailover(t *testing.T) {
	rs := redistest.StartSentinel(t)
	sentinel := func(c *config.Config) {
		c.RedisSentinel = strings.Split(rs.Seeds(), ",")
		c.RedisSentinelMaster = rs.MasterName
	}
	a := gateway(t, "a", func(c *config.Config) {
		sentinel(c)
		c.RedisWaitReplicas = 1
		c.RedisWaitTimeout = 2 * time.Second
	})
	b := gateway(t, "b", sentinel)
	alice := connect(t, b.Addr(), "alice")

	var live, stored []string
	for i := range 10 {
		m := fmt.Sprintf(`"live-%d"`, i)
		mustPush(t, a.Addr(), "alice", m)
		live = append(live, m)
		s := fmt.Sprintf(`"stored-%d"`, i)
		if mustPush(t, a.Addr(), "bob", s) {
			t.Fatal("bob is offline, push answered online:true")
		}
		stored = append(stored, s)
	}
	// What WAIT costs on this machine (README): the same pushes with and without it.
	for _, n := range []*server.Server{a, b} {
		t0 := time.Now()
		for i := range 50 {
			mustPush(t, n.Addr(), "carol", fmt.Sprintf(`"w%d"`, i))
		}
		t.Logf("node %s: %s per push (50 pushes to an offline user)", n.Addr(), (time.Since(t0) / 50).Round(time.Microsecond))
	}

	old := rs.KillMaster(t)
	start := time.Now()
	for i := 0; time.Since(start) < 60*time.Second && len(live) < 20; i++ {
		m := fmt.Sprintf(`"after-%d"`, i)
		if status, _ := push(b.Addr(), "alice", m); status == 200 {
			live = append(live, m)
		} else {
			time.Sleep(50 * time.Millisecond) // pacing between retries
		}
	}
	if len(live) < 20 {
		t.Fatalf("pushes did not resume within 60s of the failover")
	}
	newMaster := rs.WaitFailover(t, old)
	t.Logf("failover %s → %s: pushes resumed %s after the kill", old, newMaster, time.Since(start).Round(time.Millisecond))
	wait.For(t, deadline, func() bool {
		for _, m := range live {
			if !alice.has(m) {
				return false
			}
		}
		return true
	}, "alice missed accepted pushes across the failover")
	if alice.closeCode() != 0 {
		t.Fatalf("alice's connection was closed (%d)", alice.closeCode())
	}
	// New connections get 503 until the node's pub/sub is back on the new master (clients
	// retry on 503); wait for that, as a client would.
	wait.For(t, deadline, func() bool { return get(b.Addr(), "/readyz") == 200 }, "b not ready after the failover: %s", readyz(b.Addr()))
	bob := connect(t, b.Addr(), "bob")
	wait.For(t, deadline, func() bool { return len(bob.messages()) >= len(stored) }, "bob's stored messages did not survive the failover")
	if got := bob.messages(); fmt.Sprint(got) != fmt.Sprint(stored) {
		t.Fatalf("bob got %v, want %v", got, stored)
	}
	if status, _ := push(a.Addr(), "dave", `"x"`); status != http.StatusServiceUnavailable {
		t.Fatalf("with no replica left, a WAIT push answered %d, want 503", status)
	}
}
