package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
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

	"github.com/wsgateway/wsgateway/internal/bus"
	"github.com/wsgateway/wsgateway/internal/testutil/freeport"
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

	nmasters int
	nodes    []*node // same order as Addrs
	byAddr   map[string]*node
	all      []*node // every node of every start-up attempt, for cleanup

	mu      sync.Mutex
	dead    map[string]bool
	clients []*redis.ClusterClient
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
	// The directory's removal is registered before our cleanup, and
	// cleanups run last-in first-out: processes stop before it is removed.
	dir := tb.TempDir()
	c := &Cluster{nmasters: masters, dead: map[string]bool{}}
	tb.Cleanup(func() { c.cleanup(tb) })
	// Runs before the processes are stopped; the logs stay readable anyway.
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("redistest: cluster node logs:\n%s", c.logs())
		}
	})

	var err error
	for attempt := 1; attempt <= setupAttempts; attempt++ {
		err = c.create(bin, cli, filepath.Join(dir, fmt.Sprintf("try%d", attempt)), masters, replicasPerMaster)
		if err == nil {
			return c
		}
		if attempt < setupAttempts {
			tb.Logf("redistest: cluster start-up attempt %d failed, retrying on new ports: %v\n%s", attempt, err, c.logs())
		}
		stopNodes(c.nodes, syscall.SIGKILL, stopGrace)
	}
	tb.Fatalf("redistest: start cluster of %d masters with %d replicas each: %v (node logs follow at cleanup)", masters, replicasPerMaster, err)
	return nil
}

// create starts the nodes, joins them with redis-cli and waits until the
// cluster is healthy. It leaves c.nodes set to this attempt's nodes.
func (c *Cluster) create(bin, cli, dir string, masters, replicas int) error {
	total := masters * (1 + replicas)
	c.nodes, c.Addrs = nil, nil
	c.byAddr = map[string]*node{}
	for i := range total {
		n := &node{
			name:   "cluster node " + strconv.Itoa(i),
			dir:    filepath.Join(dir, "node"+strconv.Itoa(i)),
			bin:    bin,
			nports: 2, // client port and cluster bus port
			conf:   clusterNodeConf,
		}
		c.all = append(c.all, n)
		c.nodes = append(c.nodes, n)
		if err := n.start(); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
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
	c.mu.Lock()
	c.clients = append(c.clients, cl)
	c.mu.Unlock()
	tb.Cleanup(func() { _ = cl.Close() })
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

// MigrateSlot moves slot, with its keys, from its current owner to the master
// at toAddr, with the standard resharding steps: CLUSTER SETSLOT IMPORTING on
// the target, SETSLOT MIGRATING on the source, MIGRATE of the keys in
// batches of 100, then SETSLOT NODE on the target, the source and every
// other live master. It returns once every live node names toAddr as the
// owner. Moving a slot to its owner does nothing.
func (c *Cluster) MigrateSlot(tb testing.TB, slot int, toAddr string) {
	tb.Helper()
	c.MigrateSlotPausing(tb, slot, toAddr, nil)
}

// MigrateSlotPausing is MigrateSlot with a pause: it calls between (when not nil) after
// SETSLOT NODE on the target and before SETSLOT NODE on the source. In between, the target
// owns the slot while the source still sends clients there with ASK and still holds the
// subscribers of the slot's shard channels; a test holds that state while it checks what
// clients see then. between runs on the test's goroutine and may call tb.Fatal.
func (c *Cluster) MigrateSlotPausing(tb testing.TB, slot int, toAddr string, between func()) {
	tb.Helper()
	if err := c.migrateSlot(slot, toAddr, between); err != nil {
		tb.Fatalf("redistest: migrate slot %d to %s: %v (node logs follow at cleanup)", slot, toAddr, err)
	}
}

func (c *Cluster) migrateSlot(slot int, toAddr string, between func()) error {
	if slot < 0 || slot >= NumSlots {
		return fmt.Errorf("slot out of range [0, %d)", NumSlots)
	}
	dst := c.byAddr[toAddr]
	if dst == nil || c.isDead(toAddr) {
		return fmt.Errorf("%s is not a live node of this cluster", toAddr)
	}
	from, err := c.settledOwner(slot)
	if err != nil {
		return err
	}
	if from == toAddr {
		return nil
	}
	src := c.byAddr[from]
	if src == nil {
		return fmt.Errorf("owner %s is not a node of this cluster", from)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*adminCmdTimeout)
	defer cancel()
	if role, _, err := dst.role(ctx); err != nil {
		return err
	} else if role != "master" {
		return fmt.Errorf("%s is a %s, not a master", toAddr, role)
	}
	srcID, err := src.client().ClusterMyID(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER MYID on %s: %w", from, err)
	}
	dstID, err := dst.client().ClusterMyID(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER MYID on %s: %w", toAddr, err)
	}

	setslot := func(n *node, args ...any) error {
		full := append([]any{"CLUSTER", "SETSLOT", slot}, args...)
		if err := n.client().Do(ctx, full...).Err(); err != nil {
			return fmt.Errorf("%v on %s: %w", full, n.addr, err)
		}
		return nil
	}
	// Importing first: once the source is migrating, it sends clients of
	// missing keys to the target with ASK, which must then accept them.
	if err := setslot(dst, "IMPORTING", srcID); err != nil {
		return err
	}
	if err := setslot(src, "MIGRATING", dstID); err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(toAddr)
	for {
		keys, err := src.client().ClusterGetKeysInSlot(ctx, slot, migrateBatch).Result()
		if err != nil {
			return fmt.Errorf("CLUSTER GETKEYSINSLOT %d on %s: %w", slot, from, err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, migrateTimeoutMS, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		// "NOKEY" (every key expired meanwhile) is fine too.
		if err := src.client().Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("MIGRATE %d keys from %s to %s: %w", len(keys), from, toAddr, err)
		}
	}
	// Target first, so that its config epoch is bumped and its claim wins;
	// then the source, which stops redirecting with ASK; then everyone else,
	// rather than waiting for gossip.
	if err := setslot(dst, "NODE", dstID); err != nil {
		return err
	}
	if between != nil {
		between()
	}
	if err := setslot(src, "NODE", dstID); err != nil {
		return err
	}
	for _, n := range c.liveNodes() {
		if n == src || n == dst {
			continue
		}
		role, _, err := n.role(ctx)
		if err != nil {
			return err
		}
		if role == "master" {
			if err := setslot(n, "NODE", dstID); err != nil {
				return err
			}
		}
	}
	return poll(agreeTimeout, func() error {
		owner, err := c.owner(slot)
		if err == nil && owner != toAddr {
			err = fmt.Errorf("slot %d still owned by %s", slot, owner)
		}
		return err
	})
}

// Slot returns the hash slot of key as Redis Cluster computes it (CRC16 of the hash tag, mod
// 16384). It is the gateway's own bus.Slot, so the tests against CLUSTER KEYSLOT check the
// code the Cluster bus routes with.
func Slot(key string) int { return bus.Slot(key) }

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

// owners returns the slot owners that every live node agrees on, or an
// error naming a disagreement or an owner that is not alive.
func (c *Cluster) owners(ctx context.Context) (*[NumSlots]string, error) {
	var ref *[NumSlots]string
	var refAddr string
	for _, n := range c.liveNodes() {
		shards, err := n.client().ClusterShards(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("CLUSTER SHARDS on %s: %w", n.addr, err)
		}
		view := new([NumSlots]string)
		for _, sh := range shards {
			var master string
			for _, sn := range sh.Nodes {
				if sn.Role == "master" {
					master = net.JoinHostPort(sn.IP, strconv.FormatInt(sn.Port, 10))
				}
			}
			for _, r := range sh.Slots {
				if master == "" || r.Start < 0 || r.End >= NumSlots || r.Start > r.End {
					return nil, fmt.Errorf("CLUSTER SHARDS on %s: odd shard %+v", n.addr, sh)
				}
				for s := r.Start; s <= r.End; s++ {
					view[s] = master
				}
			}
		}
		for s, owner := range view {
			switch {
			case owner == "":
				return nil, fmt.Errorf("%s: slot %d has no owner", n.addr, s)
			case c.isDead(owner):
				return nil, fmt.Errorf("%s: slot %d still owned by killed node %s", n.addr, s, owner)
			case ref != nil && ref[s] != owner:
				return nil, fmt.Errorf("nodes disagree on slot %d: %s says %s, %s says %s", s, refAddr, ref[s], n.addr, owner)
			}
		}
		if ref == nil {
			ref, refAddr = view, n.addr
		}
	}
	if ref == nil {
		return nil, errors.New("no live node")
	}
	return ref, nil
}

// owner returns the agreed owner of slot right now.
func (c *Cluster) owner(slot int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), adminCmdTimeout)
	defer cancel()
	owners, err := c.owners(ctx)
	if err != nil {
		return "", err
	}
	return owners[slot], nil
}

// settledOwner waits until the live nodes agree on slot's owner.
func (c *Cluster) settledOwner(slot int) (string, error) {
	var owner string
	err := poll(agreeTimeout, func() error {
		var err error
		owner, err = c.owner(slot)
		return err
	})
	return owner, err
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

// logs returns the tails of the current nodes' logs.
func (c *Cluster) logs() string {
	return nodeLogs(c.nodes)
}

func (c *Cluster) cleanup(tb testing.TB) {
	c.mu.Lock()
	clients := c.clients
	c.clients = nil
	c.mu.Unlock()
	for _, cl := range clients {
		_ = cl.Close()
	}
	reportStop(tb, c.all)
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

// node is one redis-server process started from a redis.conf of its own:
// a cluster node, a server watched by sentinels, or a sentinel. Like
// Server, it is retried on new ports when its port turns out to be taken.
type node struct {
	name   string
	dir    string
	bin    string
	args   []string // after the config file, e.g. "--sentinel"
	nports int      // loopback ports to pick: the first is the client port
	// conf returns the config file for the node's directory and ports. It
	// is written afresh before every launch; a sentinel (or CONFIG
	// REWRITE) may rewrite it while it runs, so it must be writable.
	conf func(dir string, ports []int) string

	addr string // "127.0.0.1:port", set by start

	mu       sync.Mutex
	proc     *proc.Process // nil while not running
	admin    *redis.Client
	sentinel *redis.SentinelClient // for a sentinel's SENTINEL commands
}

func (n *node) confPath() string { return filepath.Join(n.dir, "redis.conf") }
func (n *node) logPath() string  { return filepath.Join(n.dir, "redis.log") }

// start launches the node on fresh free ports, retrying on new ports when a
// port was taken between the probe and the bind.
func (n *node) start() error {
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return err
	}
	var err error
	for range startTries {
		var ports []int
		if ports, err = freeport.Ports(n.nports); err != nil {
			return err
		}
		n.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		if err = os.WriteFile(n.confPath(), []byte(n.conf(n.dir, ports)), 0o644); err != nil {
			return err
		}
		if err = n.launch(); !errors.Is(err, errPortBusy) {
			return err
		}
	}
	return err
}

// launch starts the process and waits until it answers PING.
func (n *node) launch() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil {
		return errors.New("already running")
	}
	cmd := exec.Command(n.bin, append([]string{n.confPath()}, n.args...)...)
	cmd.Dir = n.dir
	p, err := startRedis(cmd, n.logPath(), n.name, n.addr)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// stop signals the process and waits; see proc.Process.Stop. It also closes
// the admin client, whose connections are dead now.
func (n *node) stop(sig syscall.Signal, grace time.Duration) (killed bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.admin != nil {
		_ = n.admin.Close()
		n.admin = nil
	}
	if n.sentinel != nil {
		_ = n.sentinel.Close()
		n.sentinel = nil
	}
	if n.proc == nil {
		return false, nil
	}
	killed, err = n.proc.Stop(sig, grace)
	if n.proc.Exited() {
		n.proc = nil
	}
	return killed, err
}

// client returns the node's admin client: no retries, short dial timeout,
// and a read timeout above MIGRATE's.
func (n *node) client() *redis.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.admin == nil {
		n.admin = redis.NewClient(&redis.Options{
			Addr:         n.addr,
			DialTimeout:  2 * time.Second,
			ReadTimeout:  migrateTimeoutMS*time.Millisecond + 5*time.Second,
			WriteTimeout: 5 * time.Second,
			MaxRetries:   -1,
			PoolSize:     4,
		})
	}
	return n.admin
}

// role returns ROLE's first element ("master", "slave" or "sentinel") and,
// for a replica, its master's address.
func (n *node) role(ctx context.Context) (role, master string, err error) {
	return roleOf(ctx, n.client(), n.addr)
}

func roleOf(ctx context.Context, cl *redis.Client, addr string) (role, master string, err error) {
	v, err := cl.Do(ctx, "ROLE").Slice()
	if err != nil {
		return "", "", fmt.Errorf("ROLE on %s: %w", addr, err)
	}
	if len(v) == 0 {
		return "", "", fmt.Errorf("ROLE on %s: empty reply", addr)
	}
	role, _ = v[0].(string)
	if role == "slave" && len(v) >= 3 {
		host, _ := v[1].(string)
		master = net.JoinHostPort(host, fmt.Sprint(v[2]))
	}
	return role, master, nil
}

// stopNodes stops the nodes in parallel: sig, then SIGKILL after grace.
// It returns the errors and the addresses that needed SIGKILL.
func stopNodes(nodes []*node, sig syscall.Signal, grace time.Duration) (errs []error, killed []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			k, err := n.stop(sig, grace)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", n.addr, err))
			}
			if k {
				killed = append(killed, n.addr)
			}
		})
	}
	wg.Wait()
	slices.Sort(killed)
	return errs, killed
}

// reportStop stops the nodes at cleanup and reports what went wrong.
func reportStop(tb testing.TB, nodes []*node) {
	errs, killed := stopNodes(nodes, syscall.SIGTERM, cleanupGrace)
	for _, err := range errs {
		tb.Errorf("redistest: at cleanup: %v", err)
	}
	if len(killed) > 0 {
		tb.Logf("redistest: %v ignored SIGTERM for %v and were killed", killed, cleanupGrace)
	}
}

// nodeLogs returns the last lines of each node's log.
func nodeLogs(nodes []*node) string {
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "=== %s on %s (%s), last lines:\n", n.name, n.addr, n.logPath())
		data, err := os.ReadFile(n.logPath())
		if err != nil {
			fmt.Fprintf(&b, "(no log: %v)\n", err)
			continue
		}
		lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
		if len(lines) > clusterLogTailLines {
			lines = lines[len(lines)-clusterLogTailLines:]
		}
		b.Write(bytes.Join(lines, []byte("\n")))
		b.WriteByte('\n')
	}
	return b.String()
}

func readFrom(path string, offset int64) []byte {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return nil
	}
	return b[offset:]
}
