package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

	"github.com/wsgateway/wsgateway/internal/testutil/freeport"
	"github.com/wsgateway/wsgateway/internal/testutil/proc"
)

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

func (n *node) logPath() string { return filepath.Join(n.dir, "redis.log") }

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

// topology is what Cluster and Sentinel share: the nodes they start, over several attempts
// when start-up fails, and the clients they hand out.
type topology struct {
	nodes   []*node // the current attempt's, in start order until the owner reorders them
	all     []*node // every node of every attempt, for cleanup
	clients closers
}

// setUp calls create with a fresh directory until it returns nil, at most setupAttempts
// times: a failed attempt's nodes are killed and the next starts on new ports. It fails tb
// when no attempt succeeded. Its cleanups close the clients handed out, stop every node of
// every attempt and, when the test failed, log the tails of the nodes' logs.
func (t *topology) setUp(tb testing.TB, what string, create func(dir string) error) {
	tb.Helper()
	// The directory's removal is registered before our cleanup, and cleanups run last-in
	// first-out: processes stop before it is removed.
	dir := tb.TempDir()
	tb.Cleanup(func() {
		t.clients.closeAll()
		errs, killed := stopNodes(t.all, syscall.SIGTERM, cleanupGrace)
		for _, err := range errs {
			tb.Errorf("redistest: at cleanup: %v", err)
		}
		if len(killed) > 0 {
			tb.Logf("redistest: %v ignored SIGTERM for %v and were killed", killed, cleanupGrace)
		}
	})
	// Runs before the processes are stopped; the logs stay readable anyway.
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("redistest: %s node logs:\n%s", what, nodeLogs(t.nodes))
		}
	})
	var err error
	for attempt := 1; attempt <= setupAttempts; attempt++ {
		t.nodes = nil
		if err = create(filepath.Join(dir, fmt.Sprintf("try%d", attempt))); err == nil {
			return
		}
		if attempt < setupAttempts {
			tb.Logf("redistest: %s start-up attempt %d failed, retrying on new ports: %v\n%s", what, attempt, err, nodeLogs(t.nodes))
		}
		stopNodes(t.nodes, syscall.SIGKILL, stopGrace)
	}
	tb.Fatalf("redistest: start %s: %v (node logs follow at cleanup)", what, err)
}

// start starts n as a node of the current attempt.
func (t *topology) start(n *node) error {
	t.nodes = append(t.nodes, n)
	t.all = append(t.all, n)
	if err := n.start(); err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	return nil
}

// closers are the clients a set-up handed out. Each is closed when its test's cleanups run,
// and at the latest by closeAll, at the set-up's own cleanup; closing twice only returns
// redis.ErrClosed.
type closers struct {
	mu   sync.Mutex
	list []io.Closer
}

func (c *closers) add(tb testing.TB, cl io.Closer) {
	c.mu.Lock()
	c.list = append(c.list, cl)
	c.mu.Unlock()
	tb.Cleanup(func() { _ = cl.Close() })
}

func (c *closers) closeAll() {
	c.mu.Lock()
	list := c.list
	c.list = nil
	c.mu.Unlock()
	for _, cl := range list {
		_ = cl.Close()
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
