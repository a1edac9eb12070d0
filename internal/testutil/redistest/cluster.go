package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/proc"
)

// Cluster and Sentinel deadlines. A 3-master cluster is ready in about a
// second and a failover takes a few seconds on an idle machine; the margins
// are for a loaded 2-core CI machine.
const (
	// NumSlots is the number of hash slots of a Redis Cluster.
	NumSlots = 16384

	clusterNodeTimeoutMS = 1000 // cluster-node-timeout once formed: a master is FAIL about a second after it dies
	// cluster-node-timeout while the cluster forms. It also bounds each
	// CLUSTER MEET handshake, which redis-cli sends only once: with 1000ms a
	// loaded machine lost handshakes and redis-cli waited for ever.
	clusterJoinNodeTimeoutMS = 15000
	clusterCreateTimeout     = 30 * time.Second // redis-cli --cluster create, which polls forever by itself
	healthyTimeout           = 30 * time.Second // cluster_state:ok everywhere, agreement, replicas in sync
	agreeTimeout             = 30 * time.Second // every node names the same owner of a slot
	setupAttempts            = 3                // whole-topology attempts when start-up fails (port races)
	adminCmdTimeout          = 5 * time.Second  // one admin command, MIGRATE excepted
	migrateTimeoutMS         = 10000            // MIGRATE's own timeout, per batch
	migrateBatch             = 100              // keys per MIGRATE
	clusterLogTailLines      = 15               // per node, in failure messages
)

// Cluster is a Redis Cluster on loopback ports owned by a test: masters
// masters, each with replicasPerMaster replicas, created the way an operator
// does it (redis-server --cluster-enabled yes, then redis-cli --cluster
// create). Every node persists with an append-only file and appendfsync
// always, and uses cluster-node-timeout 1000ms, so a killed master is failed
// over within a few seconds. Cleanup stops every process.
type Cluster struct {
	// Addrs holds every node's "127.0.0.1:port": the masters first (in the
	// order of their slot ranges), then the replicas. Roles are those at
	// creation; KillNode and failovers do not reorder Addrs.
	Addrs []string

	topology // nodes in the same order as Addrs
	nmasters int
	byAddr   map[string]*node

	mu   sync.Mutex
	dead map[string]bool
}

// StartCluster starts a cluster of masters masters (at least 3, as redis-cli
// requires) with replicasPerMaster replicas each and returns once every node
// reports cluster_state:ok, all 16384 slots are covered, every node agrees
// on the slot owners and every replica's link to its master is up. When a
// node cannot bind its port (another process took it), it is retried on new
// ports; when the cluster does not form, the whole cluster is started again
// on new ports, up to 3 times. When redis-server or redis-cli is missing, tb
// is skipped, or failed when the CI environment variable is set.
func StartCluster(tb testing.TB, masters, replicasPerMaster int) *Cluster {
	tb.Helper()
	if masters < 3 || replicasPerMaster < 0 {
		tb.Fatalf("redistest: StartCluster(%d, %d): need at least 3 masters and no negative replica count", masters, replicasPerMaster)
	}
	bin := proc.Find(tb, "redis-server")
	cli := proc.Find(tb, "redis-cli")
	c := &Cluster{nmasters: masters, dead: map[string]bool{}}
	c.setUp(tb, fmt.Sprintf("cluster of %d masters with %d replicas each", masters, replicasPerMaster), func(dir string) error {
		return c.create(bin, cli, dir, masters, replicasPerMaster)
	})
	return c
}

// create starts the nodes, joins them with redis-cli and waits until the
// cluster is healthy. It leaves c.nodes set to this attempt's nodes.
func (c *Cluster) create(bin, cli, dir string, masters, replicas int) error {
	total := masters * (1 + replicas)
	c.Addrs = nil
	c.byAddr = map[string]*node{}
	for i := range total {
		n := &node{
			name:   "cluster node " + strconv.Itoa(i),
			dir:    filepath.Join(dir, "node"+strconv.Itoa(i)),
			bin:    bin,
			nports: 2, // client port and cluster bus port
			conf:   clusterNodeConf,
		}
		if err := c.start(n); err != nil {
			return err
		}
		c.Addrs = append(c.Addrs, n.addr)
		c.byAddr[n.addr] = n
	}

	ctx, cancel := context.WithTimeout(context.Background(), clusterCreateTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	cmd := exec.CommandContext(ctx, cli, args...)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("All 16384 slots covered")) {
		if ctx.Err() != nil {
			err = fmt.Errorf("gave up after %v: %w", clusterCreateTimeout, ctx.Err())
		}
		return fmt.Errorf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := poll(healthyTimeout, c.health); err != nil {
		return fmt.Errorf("cluster not healthy within %v after redis-cli --cluster create: %w", healthyTimeout, err)
	}
	// Now that every node knows every other, fail fast: a dead master is
	// flagged FAIL, and its replica promoted, within a few seconds. CONFIG
	// REWRITE keeps redis.conf in line with what runs.
	ctxT, cancelT := context.WithTimeout(context.Background(), adminCmdTimeout)
	defer cancelT()
	for _, n := range c.nodes {
		if err := n.client().ConfigSet(ctxT, "cluster-node-timeout", strconv.Itoa(clusterNodeTimeoutMS)).Err(); err != nil {
			return fmt.Errorf("CONFIG SET cluster-node-timeout on %s: %w", n.addr, err)
		}
		if err := n.client().ConfigRewrite(ctxT).Err(); err != nil {
			return fmt.Errorf("CONFIG REWRITE on %s: %w", n.addr, err)
		}
	}

	// redis-cli chooses which nodes become masters. Order Addrs masters
	// first, by their lowest slot, then the replicas in start order.
	ctx2, cancel2 := context.WithTimeout(context.Background(), adminCmdTimeout)
	defer cancel2()
	owners, err := c.owners(ctx2)
	if err != nil {
		return err
	}
	firstSlot := map[string]int{}
	for s := NumSlots - 1; s >= 0; s-- {
		firstSlot[owners[s]] = s
	}
	var ms, rs []*node
	for _, n := range c.nodes {
		if _, ok := firstSlot[n.addr]; ok {
			ms = append(ms, n)
		} else {
			rs = append(rs, n)
		}
	}
	if len(ms) != masters {
		return fmt.Errorf("redis-cli made %d masters, want %d", len(ms), masters)
	}
	slices.SortFunc(ms, func(a, b *node) int { return firstSlot[a.addr] - firstSlot[b.addr] })
	c.nodes = append(ms, rs...)
	c.Addrs = c.Addrs[:0]
	for _, n := range c.nodes {
		c.Addrs = append(c.Addrs, n.addr)
	}
	return nil
}

// clusterNodeConf is a cluster node's redis.conf for its client and bus
// ports. The bus port is chosen freely (cluster-port) instead of Redis's
// default port+10000, which for an ephemeral port could be above 65535.
func clusterNodeConf(dir string, ports []int) string {
	return dataNodeConf(dir, ports[0]) + fmt.Sprintf(`cluster-enabled yes
cluster-port %d
cluster-config-file nodes.conf
cluster-node-timeout %d
cluster-announce-ip 127.0.0.1
# Fail a master over even if its replica lost the link a while ago: on a
# loaded machine the replica's data-age check would otherwise veto it.
cluster-replica-validity-factor 0
cluster-require-full-coverage yes
`, ports[1], clusterJoinNodeTimeoutMS)
}

// dataNodeConf is the part of redis.conf shared by every data-bearing node:
// loopback only, production persistence (AOF, fsync on every write, no RDB
// snapshots), and no 5-second wait before a replica's first full sync.
func dataNodeConf(dir string, port int) string {
	return fmt.Sprintf(`port %d
bind 127.0.0.1
dir %q
daemonize no
logfile ""
appendonly yes
appendfsync always
save ""
repl-diskless-sync-delay 0
`, port, dir)
}

// Seeds returns the masters' addresses, comma-separated, as the gateway's
// --redis-cluster takes them. Masters killed with KillNode are left out
// (unless every one was).
func (c *Cluster) Seeds() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var seeds []string
	for _, a := range c.Addrs[:c.nmasters] {
		if !c.dead[a] {
			seeds = append(seeds, a)
		}
	}
	if len(seeds) == 0 {
		seeds = c.Addrs[:c.nmasters]
	}
	return strings.Join(seeds, ",")
}

// Client returns a new go-redis cluster client seeded with every live node.
// It is closed when tb's cleanups run, and at the latest when the cluster's
// own cleanup runs. After KillNode, commands for the killed master's slots
// fail until the failover and the client's next slot-map reload: poll.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.liveAddrs()})
	c.clients.add(tb, cl)
	return cl
}

// MasterFor returns the address of the master that owns key's slot (CLUSTER
// KEYSLOT, then CLUSTER SHARDS on every live node). It waits up to 30s until
// every live node names the same owner and that owner is alive, so right
// after a failover or MigrateSlot it returns the settled owner.
func (c *Cluster) MasterFor(tb testing.TB, key string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminCmdTimeout)
	slot, err := c.anyLive(ctx, func(n *node) (int64, error) {
		return n.client().ClusterKeySlot(ctx, key).Result()
	})
	cancel()
	if err != nil {
		tb.Fatalf("redistest: CLUSTER KEYSLOT %q: %v (node logs follow at cleanup)", key, err)
	}
	owner, err := c.settledOwner(int(slot))
	if err != nil {
		tb.Fatalf("redistest: owner of slot %d (key %q): %v (node logs follow at cleanup)", slot, key, err)
	}
	return owner
}

// KillNode kills the node at addr with SIGKILL, as a crash would, and waits
// for it to exit. With replicas, the cluster then fails its slots over to
// one of them (see WaitHealthy); without, they stay uncovered. The node is
// not restarted; later checks ignore it.
func (c *Cluster) KillNode(tb testing.TB, addr string) {
	tb.Helper()
	n := c.byAddr[addr]
	if n == nil {
		tb.Fatalf("redistest: KillNode(%q): not a node of this cluster (%v)", addr, c.Addrs)
	}
	if _, err := n.stop(syscall.SIGKILL, stopGrace); err != nil {
		tb.Fatalf("redistest: kill %s: %v", addr, err)
	}
	c.mu.Lock()
	c.dead[addr] = true
	c.mu.Unlock()
}

// WaitHealthy waits up to 30s until every live node reports
// cluster_state:ok with all 16384 slots assigned and ok, every live node
// names the same owner for every slot and that owner is a live node, and
// every live replica's link to its master is up. Right after KillNode of a
// master the survivors may still say ok; the live-owner check waits for the
// failover itself.
func (c *Cluster) WaitHealthy(tb testing.TB) {
	tb.Helper()
	if err := poll(healthyTimeout, c.health); err != nil {
		tb.Fatalf("redistest: cluster not healthy within %v: %v (node logs follow at cleanup)", healthyTimeout, err)
	}
}

// health returns nil when the cluster is healthy as WaitHealthy defines it,
// else what is not yet so.
func (c *Cluster) health() error {
	ctx, cancel := context.WithTimeout(context.Background(), adminCmdTimeout)
	defer cancel()
	live := c.liveNodes()
	if len(live) == 0 {
		return errors.New("no live node")
	}
	for _, n := range live {
		info, err := n.client().ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("CLUSTER INFO on %s: %w", n.addr, err)
		}
		for field, want := range map[string]string{
			"cluster_state":          "ok",
			"cluster_slots_assigned": strconv.Itoa(NumSlots),
			"cluster_slots_ok":       strconv.Itoa(NumSlots),
			"cluster_known_nodes":    strconv.Itoa(len(c.nodes)),
		} {
			if got := infoField(info, field); got != want {
				return fmt.Errorf("%s: %s is %q, want %q", n.addr, field, got, want)
			}
		}
		role, _, err := n.role(ctx)
		if err != nil {
			return err
		}
		if role != "master" {
			repl, err := n.client().Info(ctx, "replication").Result()
			if err != nil {
				return fmt.Errorf("INFO replication on %s: %w", n.addr, err)
			}
			if got := infoField(repl, "master_link_status"); got != "up" {
				return fmt.Errorf("replica %s: master_link_status is %q", n.addr, got)
			}
		}
	}
	_, err := c.owners(ctx)
	return err
}

// anyLive runs f on the live nodes in turn until it succeeds.
func (c *Cluster) anyLive(ctx context.Context, f func(*node) (int64, error)) (int64, error) {
	err := errors.New("no live node")
	for _, n := range c.liveNodes() {
		var v int64
		if v, err = f(n); err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return 0, err
}

// poll calls check until it returns nil or timeout passes, backing off from
// 10ms to 200ms, and returns check's last error.
func poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	interval := 10 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %v: %w", timeout, err)
		}
		time.Sleep(interval)
		interval = min(interval*2, 200*time.Millisecond)
	}
}

func (c *Cluster) isDead(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead[addr]
}

func (c *Cluster) liveNodes() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []*node
	for _, n := range c.nodes {
		if !c.dead[n.addr] {
			live = append(live, n)
		}
	}
	return live
}

func (c *Cluster) liveAddrs() []string {
	var addrs []string
	for _, n := range c.liveNodes() {
		addrs = append(addrs, n.addr)
	}
	return addrs
}

// infoField returns the value of "field:value" in INFO-style text.
func infoField(info, field string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), field+":"); ok {
			return v
		}
	}
	return ""
}
