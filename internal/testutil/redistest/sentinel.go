package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/proc"
)

// Sentinel timings. down-after-milliseconds 1000 makes a killed master
// subjectively down after a second; failover-timeout bounds one failover
// attempt and, doubled, the pause before the next one if an election fails.
const (
	sentinelDownAfterMS       = 1000
	sentinelFailoverTimeoutMS = 4000
	sentinelQuorum            = 2
	sentinelCount             = 3
	sentinelReadyTimeout      = 30 * time.Second // replica in sync, sentinels know each other
	failoverWait              = 30 * time.Second // WaitFailover's bound
)

// Sentinel is a Redis master with one replica, watched by three sentinels
// (quorum 2, down-after-milliseconds 1000, a short failover-timeout,
// parallel-syncs 1), all on loopback ports and owned by a test. The data
// nodes persist like Server (append-only file, appendfsync always). Cleanup
// stops every process.
type Sentinel struct {
	// MasterName is the name the sentinels monitor the master under,
	// "mymaster".
	MasterName string
	// SentinelAddrs holds the three sentinels' "127.0.0.1:port" addresses.
	SentinelAddrs []string
	// Addrs holds the data nodes' addresses: the initial master, then the
	// initial replica. Failovers do not reorder it.
	Addrs []string

	topology
	data      []*node // as Addrs
	sentinels []*node // as SentinelAddrs
}

// StartSentinel starts the master, its replica and the three sentinels, and
// returns once the replica is in sync and every sentinel sees the master as
// up, knows the replica and the two other sentinels, and agrees that a
// failover can be authorized (SENTINEL CKQUORUM). Ports taken by someone
// else are retried, and a set-up that does not come together is started
// again on new ports, up to 3 times.
//
// The sentinels run as "redis-server sentinel.conf --sentinel", which is all
// the redis-sentinel command is, so only redis-server must be installed;
// when it is not, tb is skipped, or failed when CI is set.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	bin := proc.Find(tb, "redis-server")
	s := &Sentinel{MasterName: "mymaster"}
	s.setUp(tb, "sentinel set-up", func(dir string) error { return s.create(bin, dir) })
	return s
}

func (s *Sentinel) create(bin, dir string) error {
	s.data, s.sentinels, s.Addrs, s.SentinelAddrs = nil, nil, nil, nil

	master := &node{
		name: "master", dir: filepath.Join(dir, "master"), bin: bin, nports: 1,
		conf: func(dir string, ports []int) string { return dataNodeConf(dir, ports[0]) },
	}
	s.data = append(s.data, master)
	if err := s.start(master); err != nil {
		return err
	}
	mhost, mport, _ := net.SplitHostPort(master.addr)
	replica := &node{
		name: "replica", dir: filepath.Join(dir, "replica"), bin: bin, nports: 1,
		conf: func(dir string, ports []int) string {
			return dataNodeConf(dir, ports[0]) + fmt.Sprintf("replicaof %s %s\n", mhost, mport)
		},
	}
	s.data = append(s.data, replica)
	if err := s.start(replica); err != nil {
		return err
	}
	s.Addrs = []string{master.addr, replica.addr}

	for i := range sentinelCount {
		sn := &node{
			name: "sentinel " + strconv.Itoa(i), dir: filepath.Join(dir, "sentinel"+strconv.Itoa(i)), bin: bin, nports: 1,
			args: []string{"--sentinel"},
			conf: func(dir string, ports []int) string {
				name := s.MasterName
				return fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %q\ndaemonize no\nlogfile \"\"\n", ports[0], dir) +
					fmt.Sprintf("sentinel monitor %s %s %s %d\n", name, mhost, mport, sentinelQuorum) +
					fmt.Sprintf("sentinel down-after-milliseconds %s %d\n", name, sentinelDownAfterMS) +
					fmt.Sprintf("sentinel failover-timeout %s %d\n", name, sentinelFailoverTimeoutMS) +
					fmt.Sprintf("sentinel parallel-syncs %s 1\n", name)
			},
		}
		s.sentinels = append(s.sentinels, sn)
		if err := s.start(sn); err != nil {
			return err
		}
		s.SentinelAddrs = append(s.SentinelAddrs, sn.addr)
	}

	if err := poll(sentinelReadyTimeout, s.ready); err != nil {
		return fmt.Errorf("not ready within %v: %w", sentinelReadyTimeout, err)
	}
	return nil
}

// ready returns nil once the replica is in sync and every sentinel is ready
// to fail the master over.
func (s *Sentinel) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), adminCmdTimeout)
	defer cancel()
	repl, err := s.data[1].client().Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("INFO replication on the replica: %w", err)
	}
	if got := infoField(repl, "master_link_status"); got != "up" {
		return fmt.Errorf("replica %s: master_link_status is %q", s.data[1].addr, got)
	}
	for _, sn := range s.sentinels {
		sc := sn.sentinelClient()
		m, err := sc.Master(ctx, s.MasterName).Result()
		if err != nil {
			return fmt.Errorf("SENTINEL MASTER on %s: %w", sn.addr, err)
		}
		for field, want := range map[string]string{
			"flags":               "master",
			"num-slaves":          "1",
			"num-other-sentinels": strconv.Itoa(sentinelCount - 1),
		} {
			if m[field] != want {
				return fmt.Errorf("sentinel %s: master's %s is %q, want %q", sn.addr, field, m[field], want)
			}
		}
		replicas, err := sc.Replicas(ctx, s.MasterName).Result()
		if err != nil {
			return fmt.Errorf("SENTINEL REPLICAS on %s: %w", sn.addr, err)
		}
		if len(replicas) != 1 || replicas[0]["flags"] != "slave" || replicas[0]["master-link-status"] != "ok" {
			return fmt.Errorf("sentinel %s: replicas %v, want one with flags slave and master-link-status ok", sn.addr, replicas)
		}
		if err := sc.CkQuorum(ctx, s.MasterName).Err(); err != nil {
			return fmt.Errorf("SENTINEL CKQUORUM on %s: %w", sn.addr, err)
		}
	}
	return nil
}

// Seeds returns the sentinels' addresses, comma-separated, as the gateway's
// sentinel option takes them.
func (s *Sentinel) Seeds() string {
	return strings.Join(s.SentinelAddrs, ",")
}

// MasterAddr returns the master's address per SENTINEL
// GET-MASTER-ADDR-BY-NAME, asking the sentinels in turn until one answers.
func (s *Sentinel) MasterAddr(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminCmdTimeout)
	defer cancel()
	err := errors.New("no sentinel")
	for _, sn := range s.sentinels {
		var addr string
		if addr, err = sn.masterAddr(ctx, s.MasterName); err == nil {
			return addr
		}
	}
	tb.Fatalf("redistest: no sentinel names the master: %v (node logs follow at cleanup)", err)
	return ""
}

// Client returns a go-redis failover client (redis.NewFailoverClient) for
// the master. It is closed when tb's cleanups run, and at the latest when
// the set-up's own cleanup runs. After KillMaster, its commands fail until
// the failover is done and it has dialled the new master: poll.
func (s *Sentinel) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    s.MasterName,
		SentinelAddrs: s.SentinelAddrs,
	})
	s.clients.add(tb, c)
	return c
}

// KillMaster kills the current master (per MasterAddr) with SIGKILL, as a
// crash would, waits for it to exit and returns its address. It is not
// restarted.
func (s *Sentinel) KillMaster(tb testing.TB) (old string) {
	tb.Helper()
	old = s.MasterAddr(tb)
	for _, n := range s.data {
		if n.addr == old {
			if _, err := n.stop(syscall.SIGKILL, stopGrace); err != nil {
				tb.Fatalf("redistest: kill master %s: %v", old, err)
			}
			return old
		}
	}
	tb.Fatalf("redistest: the sentinels' master %s is none of the data nodes %v", old, s.Addrs)
	return ""
}

// WaitFailover waits up to 30s until every sentinel names the same master,
// other than old, and that server answers ROLE with "master"; it returns
// that master's address.
func (s *Sentinel) WaitFailover(tb testing.TB, old string) (newMaster string) {
	tb.Helper()
	err := poll(failoverWait, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), adminCmdTimeout)
		defer cancel()
		newMaster = ""
		for _, sn := range s.sentinels {
			addr, err := sn.masterAddr(ctx, s.MasterName)
			if err != nil {
				return err
			}
			switch {
			case addr == old:
				return fmt.Errorf("sentinel %s still names %s", sn.addr, old)
			case newMaster != "" && addr != newMaster:
				return fmt.Errorf("sentinels disagree: %s and %s", newMaster, addr)
			}
			newMaster = addr
		}
		cl := redis.NewClient(&redis.Options{Addr: newMaster, DialTimeout: 2 * time.Second, MaxRetries: -1})
		defer cl.Close()
		role, _, err := roleOf(ctx, cl, newMaster)
		if err == nil && role != "master" {
			err = fmt.Errorf("new master %s answers ROLE %q", newMaster, role)
		}
		return err
	})
	if err != nil {
		tb.Fatalf("redistest: no failover from %s: %v (node logs follow at cleanup)", old, err)
	}
	return newMaster
}

func (n *node) masterAddr(ctx context.Context, name string) (string, error) {
	v, err := n.sentinelClient().GetMasterAddrByName(ctx, name).Result()
	if err != nil {
		return "", fmt.Errorf("SENTINEL GET-MASTER-ADDR-BY-NAME on %s: %w", n.addr, err)
	}
	if len(v) != 2 {
		return "", fmt.Errorf("SENTINEL GET-MASTER-ADDR-BY-NAME on %s: %q", n.addr, v)
	}
	return net.JoinHostPort(v[0], v[1]), nil
}

// sentinelClient returns the node's client for SENTINEL commands, made on
// first use and closed by stop.
func (n *node) sentinelClient() *redis.SentinelClient {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sentinel == nil {
		n.sentinel = redis.NewSentinelClient(&redis.Options{
			Addr:        n.addr,
			DialTimeout: 2 * time.Second,
			MaxRetries:  -1,
			PoolSize:    2,
		})
	}
	return n.sentinel
}
