package redistest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

func TestSentinelFailover(t *testing.T) {
	ctx := context.Background()
	var all []string
	t.Run("owner", func(t *testing.T) {
		s := redistest.StartSentinel(t)
		all = append(append([]string(nil), s.Addrs...), s.SentinelAddrs...)
		if s.MasterName != "mymaster" || len(s.SentinelAddrs) != 3 || len(s.Addrs) != 2 {
			t.Fatalf("MasterName %q, SentinelAddrs %v, Addrs %v; want mymaster, 3 sentinels, 2 data nodes",
				s.MasterName, s.SentinelAddrs, s.Addrs)
		}
		if got, want := s.Seeds(), strings.Join(s.SentinelAddrs, ","); got != want {
			t.Errorf("Seeds() = %q, want %q", got, want)
		}
		master, replica := s.Addrs[0], s.Addrs[1]
		if got := s.MasterAddr(t); got != master {
			t.Fatalf("MasterAddr() = %s, want the initial master %s", got, master)
		}
		if r, m := role(t, replica); r != "slave" || m != master {
			t.Fatalf("replica %s: ROLE %s of %q, want slave of %s", replica, r, m, master)
		}
		for _, a := range s.SentinelAddrs {
			if r, _ := role(t, a); r != "sentinel" {
				t.Errorf("%s answers ROLE %q, want sentinel", a, r)
			}
		}
		for param, want := range map[string]string{"appendonly": "yes", "appendfsync": "always"} {
			if got := nodeClient(t, master).ConfigGet(ctx, param).Val()[param]; got != want {
				t.Errorf("master: CONFIG GET %s = %q, want %q", param, got, want)
			}
		}

		c := s.Client(t)
		// SET and WAIT on one connection: WAIT counts the replicas that
		// have this connection's writes, so the replica has "k" for sure.
		conn := c.Conn()
		if err := conn.Set(ctx, "k", "before", 0).Err(); err != nil {
			t.Fatalf("SET through the failover client: %v", err)
		}
		if n, err := conn.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
			t.Fatalf("WAIT 1 = %d, %v; want the replica to acknowledge", n, err)
		}
		conn.Close()

		start := time.Now()
		old := s.KillMaster(t)
		if old != master {
			t.Fatalf("KillMaster() = %s, want %s", old, master)
		}
		if listening(old) {
			t.Fatalf("%s still accepts connections after KillMaster", old)
		}
		newMaster := s.WaitFailover(t, old)
		t.Logf("failover to %s %v after SIGKILL of %s", newMaster, time.Since(start).Round(time.Millisecond), old)
		if newMaster != replica {
			t.Fatalf("WaitFailover() = %s, want the old replica %s", newMaster, replica)
		}
		if got := s.MasterAddr(t); got != replica {
			t.Fatalf("MasterAddr() after the failover = %s, want %s", got, replica)
		}
		if r, _ := role(t, replica); r != "master" {
			t.Fatalf("promoted replica answers ROLE %q", r)
		}

		// The client finds the new master through the sentinels.
		var err error
		wait.For(t, 20*time.Second, func() bool {
			err = c.Set(ctx, "k2", "after", 0).Err()
			return err == nil
		}, "SET through the failover client after the failover: %v", lastErr{&err})
		if got, err := c.Get(ctx, "k").Result(); err != nil || got != "before" {
			t.Fatalf("GET k after the failover = %q, %v; want the write acknowledged by WAIT", got, err)
		}
		if got, err := nodeClient(t, replica).Get(ctx, "k2").Result(); err != nil || got != "after" {
			t.Fatalf("GET k2 on %s = %q, %v; the failover client wrote elsewhere", replica, got, err)
		}
	})
	if t.Failed() {
		return
	}
	for _, a := range all {
		wait.For(t, 10*time.Second, func() bool { return !listening(a) },
			"%s still listening after its test's cleanup", a)
	}
}
