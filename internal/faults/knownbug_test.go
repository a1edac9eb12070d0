package faults

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// envKnownBugs, set to 1, runs the tests of defects that are reproduced but not fixed: their fix
// changes the protocol, which is not this package's call.
const envKnownBugs = "WSGATEWAY_KNOWN_BUGS"

// A Sentinel failover that loses a write the old master had already published. The nodes run
// with redis-wait-replicas 1. The replica is paused (SIGSTOP) and the master's link to it cut
// (CLIENT KILL TYPE replica), as a partition would; a push made then is stored and published —
// the v1 client gets it as seq 6 — but WAIT finds no replica and it is answered 503; the master
// is SIGKILLed, the replica continued, and, promoted, it holds 1..5 only.
//
// The node's catch-up after the failover reads a latest number (5) below the connection's
// position (6), takes it for a user whose state expired, and sends "reset 5" followed by every
// kept message from 1: the client, as the protocol tells it to, treats 1..5 as new messages, so
// the application gets five pushes that were answered 200 (and confirmed by WAIT) a second time.
// A client that resumes after the failover with since=6 gets the same reset. Telling the two
// apart needs something the numbers alone do not carry (an epoch of the user's numbering), hence
// a protocol decision; until then this test is skipped unless WSGATEWAY_KNOWN_BUGS=1.
func TestFailoverLosingAPublishedWrite(t *testing.T) {
	if os.Getenv(envKnownBugs) != "1" {
		t.Skip("known defect, reproduced: a failover that loses a published write replays the history as a reset; set " + envKnownBugs + "=1 to run")
	}
	rs := redistest.StartSentinel(t)
	prefix := redistest.Prefix(t)
	a := startNode(t, "a", func(c *config.Config) {
		c.RedisSentinel = strings.Split(rs.Seeds(), ",")
		c.RedisSentinelMaster = rs.MasterName
		c.RedisWaitReplicas, c.RedisWaitTimeout = 1, 100*time.Millisecond
		c.KeyPrefix = prefix
	}, server.Options{})
	r := newReader(t, client.Options{URL: userURL(a.Addr, "u")}, true)
	l := newLedger()
	for i := 1; i <= 5; i++ {
		d := strconv.Quote("m-" + strconv.Itoa(i))
		l.accept(d, mustPush(t, a.URL(""), "u", "", d).Seq) // confirmed by the replica
	}
	r.waitAll(t, "u", l, timeout)

	ctx := context.Background()
	masterAddr := rs.MasterAddr(t)
	master := redis.NewClient(&redis.Options{Addr: masterAddr})
	defer master.Close()
	replicaAddr := rs.Addrs[0]
	if replicaAddr == masterAddr {
		replicaAddr = rs.Addrs[1]
	}
	replica := redis.NewClient(&redis.Options{Addr: replicaAddr})
	defer replica.Close()
	info, err := replica.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	pid := 0
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	// The replica is stopped so that it cannot redial before the master dies; it is
	// continued right after, in time for the sentinels to promote it.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP replica %d: %v", pid, err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	if err := master.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	code, _, _ := push(a.URL(""), "u", "", `"x"`)
	l.fail(`"x"`)
	wait.For(t, timeout, func() bool { return r.count() >= 6 }, "x did not arrive live: %s", wait.Lazy(func() string { return r.tail(5) }))
	old := rs.KillMaster(t)
	_ = syscall.Kill(pid, syscall.SIGCONT)
	stopped = false
	promoted := rs.WaitFailover(t, old)
	pc := redis.NewClient(&redis.Options{Addr: promoted})
	defer pc.Close()
	latest, _ := pc.HGet(ctx, prefix+"inbox:{u}:state", "seq").Int64()
	if latest != 5 {
		t.Skipf("the replica got x before the kill (latest %d): the race this test needs did not happen", latest)
	}
	t.Logf("x answered %d, delivered as seq 6, lost with the old master; the promoted replica's latest is 5", code)

	a.WaitReady(t, timeout)
	wait.For(t, timeout, func() bool { return len(r.eventsOf(client.EventReset)) > 0 || r.count() > 6 },
		"no catch-up after the failover: %s", wait.Lazy(func() string { return r.tail(10) }))
	// What the guarantee asks: the pushes answered 200 arrived once; x, answered 503, at most once.
	checkOnce(t, "u", r.received(), l, 1)
}
