package faults

import (
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/faultproxy"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// fleet is the v1 users of a Redis failure test: one per node connected straight to it, whose
// connection lives through the failure, and one per node through a proxy whose connections the
// test resets during the failure, so that it must resume (refused with 503 while the node has
// no Redis, then since=).
type fleet struct {
	users   []string
	readers map[string]*reader
	proxies []*faultproxy.Proxy
	bases   []string
}

func newFleet(t *testing.T, nodes ...*node) *fleet {
	t.Helper()
	f := &fleet{readers: map[string]*reader{}}
	for _, n := range nodes {
		stay, resume := "stay-"+n.ID, "resume-"+n.ID
		p := faultproxy.Start(t, n.Addr)
		f.proxies = append(f.proxies, p)
		f.readers[stay] = newReader(t, client.Options{URL: userURL(n.Addr, stay)}, true)
		f.readers[resume] = newReader(t, client.Options{URL: userURL(p.Addr(), resume)}, true)
		f.users = append(f.users, stay, resume)
		f.bases = append(f.bases, n.URL(""))
	}
	return f
}

// cut resets the proxied clients' connections.
func (f *fleet) cut() {
	for _, p := range f.proxies {
		p.CloseAll()
	}
}

// check waits until every user has every push answered 200, once and in order, and that the
// proxied users did reconnect and the others did not need to.
func (f *fleet) check(t *testing.T, p *pusher) {
	t.Helper()
	for _, u := range f.users {
		r := f.readers[u]
		r.waitAll(t, u, p.ledgers[u], 2*timeout)
		n := len(r.eventsOf(client.EventConnected))
		if strings.HasPrefix(u, "resume-") && n < 2 {
			t.Fatalf("%s connected %d times: its connection was cut, it should have resumed", u, n)
		}
		accepted, unsure := p.ledgers[u].snapshot()
		t.Logf("%s: %d pushes answered 200, %d not (of which %d arrived anyway, once), %d connection(s)",
			u, len(accepted), len(unsure), len(r.received())-len(accepted), n)
	}
}

// Redis is SIGKILLed under load and restarted from its append-only file (appendonly yes,
// appendfsync always, as redistest runs it): while it is away pushes are answered 503, and the
// proxied clients, cut meanwhile, are refused; once it is back from its file, the nodes
// resubscribe and catch their connections up, the cut clients resume with since, and every push
// answered 200 — before, around and after the crash — arrives once, in order, on every client.
func TestRedisKilledAndRestartedFromAOF(t *testing.T) {
	rs := redistest.Start(t)
	prefix := redistest.Prefix(t)
	a := startNode(t, "a", onRedis(rs, prefix), server.Options{})
	b := startNode(t, "b", onRedis(rs, prefix), server.Options{})
	f := newFleet(t, a, b)

	p := startPusher(t, &pusher{bases: f.bases, users: f.users, tag: "r", every: 10 * time.Millisecond})
	p.waitSent(t, 80, "before the crash")
	rs.Kill(t)
	f.cut()
	tried := p.tried.Load()
	wait.For(t, timeout, func() bool { return p.tried.Load()-p.sent.Load() >= 20 && p.tried.Load() > tried+20 },
		"pushes were not refused while Redis was down")
	rs.Restart(t)
	a.WaitReady(t, timeout)
	b.WaitReady(t, timeout)
	p.waitSent(t, 80, "after the restart")
	p.stop()
	f.check(t, p)
}

// A Sentinel failover under load: the master is SIGKILLed, the sentinels promote the replica,
// the old master comes back and rejoins as a replica. The nodes run with redis-wait-replicas 1:
// replication is asynchronous, so without WAIT a push the master answered but had not passed on
// when it died is gone (README, known limits) and no test could promise otherwise. Pushes are
// answered 503 while there is no master, and while there is no replica to confirm them; every
// push answered 200 — before the kill and after the rejoin — reaches the clients once, in
// order, the cut ones (cut at the kill and again under load after the rejoin) through a resume.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	rs := redistest.StartSentinel(t)
	prefix := redistest.Prefix(t)
	sentinel := func(c *config.Config) {
		c.RedisSentinel = strings.Split(rs.Seeds(), ",")
		c.RedisSentinelMaster = rs.MasterName
		c.RedisWaitReplicas, c.RedisWaitTimeout = 1, 2*time.Second
		c.KeyPrefix = prefix
	}
	a := startNode(t, "a", sentinel, server.Options{})
	b := startNode(t, "b", sentinel, server.Options{})
	f := newFleet(t, a, b)

	p := startPusher(t, &pusher{bases: f.bases, users: f.users, tag: "s", every: 10 * time.Millisecond})
	p.waitSent(t, 80, "before the failover")
	old := rs.KillMaster(t)
	f.cut()
	promoted := rs.WaitFailover(t, old)
	rs.Rejoin(t, old)
	t.Logf("failover %s → %s, %s back as a replica", old, promoted, old)
	p.waitSent(t, 40, "after the failover")
	// With WAIT, nothing is answered 200 while there is no replica, so the cut above found
	// nothing new to resume: cut again while pushes are answered 200.
	f.cut()
	p.waitSent(t, 40, "after the second cut")
	p.stop()
	f.check(t, p)
}
