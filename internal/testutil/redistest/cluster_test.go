package redistest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// Known CRC16/XMODEM values: "123456789" is the standard check string
// (0x31C3), and Redis's cluster tutorial shows foo → 12182.
func TestSlotKnownValues(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":          0x31C3 % redistest.NumSlots,
		"foo":                12182,
		"{foo}bar":           12182,
		"ws:user:{alice}":    redistest.Slot("alice"),
		"ws:offline:{alice}": redistest.Slot("alice"),
	} {
		if got := redistest.Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	if redistest.Slot("{}foo") == redistest.Slot("foo") {
		t.Errorf("Slot(\"{}foo\") = Slot(\"foo\"): an empty hash tag must hash the whole key")
	}
}

func TestCluster(t *testing.T) {
	ctx := context.Background()
	var addrs []string
	t.Run("owner", func(t *testing.T) {
		c := redistest.StartCluster(t, 3, 0)
		addrs = c.Addrs
		if len(c.Addrs) != 3 {
			t.Fatalf("Addrs = %v, want 3 nodes", c.Addrs)
		}
		if got, want := c.Seeds(), strings.Join(c.Addrs, ","); got != want {
			t.Errorf("Seeds() = %q, want %q", got, want)
		}
		for _, a := range c.Addrs {
			if !strings.HasPrefix(a, "127.0.0.1:") {
				t.Errorf("node address %q is not on 127.0.0.1", a)
			}
			nc := nodeClient(t, a)
			info, err := nc.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				t.Fatalf("CLUSTER INFO on %s = %q, %v; want cluster_state:ok", a, info, err)
			}
			cfg, err := nc.ConfigGet(ctx, "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			for param, want := range map[string]string{
				"appendonly": "yes", "appendfsync": "always", "cluster-enabled": "yes",
				"cluster-node-timeout": "1000", "bind": "127.0.0.1",
			} {
				if cfg[param] != want {
					t.Errorf("%s: CONFIG GET %s = %q, want %q", a, param, cfg[param], want)
				}
			}
		}

		t.Run("Slot agrees with CLUSTER KEYSLOT", func(t *testing.T) {
			keys := []string{
				"", "a", "foo", "ws:user:{alice}", "ws:offline:{alice}", "ws:user:{42}", "ws:offline:{42}",
				"{}", "{}foo", "foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "{user1000}.following",
				"}{", "{", "}", "a{b", "a}b{c}", "ünïcödé:{ü}", "\x00\xff{\x01}", strings.Repeat("x", 1000),
			}
			r := rand.New(rand.NewPCG(1, 2))
			for len(keys) < 2000 {
				b := make([]byte, r.IntN(24))
				for i := range b {
					b[i] = "ab{}:z\x00\xff"[r.IntN(8)]
				}
				keys = append(keys, string(b), "ws:user:{u"+strconv.Itoa(r.IntN(1e6))+"}")
			}
			nc := nodeClient(t, c.Addrs[0])
			cmds, err := nc.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.ClusterKeySlot(ctx, k)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("CLUSTER KEYSLOT pipeline: %v", err)
			}
			for i, cmd := range cmds {
				want := int(cmd.(*redis.IntCmd).Val())
				if got := redistest.Slot(keys[i]); got != want {
					t.Errorf("Slot(%q) = %d, CLUSTER KEYSLOT says %d", keys[i], got, want)
				}
			}
			if a, b := redistest.Slot("ws:user:{alice}"), redistest.Slot("ws:offline:{alice}"); a != b {
				t.Errorf("ws:user:{alice} in slot %d but ws:offline:{alice} in %d", a, b)
			}
		})

		// Keys spread over every master, found by Slot and the slot ranges.
		keys := spreadKeys(t, c)
		cl := c.Client(t)

		t.Run("ClusterClient across slots", func(t *testing.T) {
			for _, k := range keys {
				if err := cl.Set(ctx, k, "v:"+k, 0).Err(); err != nil {
					t.Fatalf("SET %s: %v", k, err)
				}
			}
			for _, k := range keys {
				if got, err := cl.Get(ctx, k).Result(); err != nil || got != "v:"+k {
					t.Fatalf("GET %s = %q, %v", k, got, err)
				}
			}
		})

		t.Run("MasterFor", func(t *testing.T) {
			owners := map[string]bool{}
			for _, k := range keys {
				owner := c.MasterFor(t, k)
				owners[owner] = true
				// The owner serves the key to a plain client; every other
				// master redirects with MOVED to the owner.
				for _, a := range c.Addrs {
					got, err := nodeClient(t, a).Get(ctx, k).Result()
					if a == owner {
						if err != nil || got != "v:"+k {
							t.Errorf("GET %s on its owner %s = %q, %v", k, a, got, err)
						}
					} else if err == nil || !strings.HasPrefix(err.Error(), "MOVED "+strconv.Itoa(redistest.Slot(k))+" "+owner) {
						t.Errorf("GET %s on %s (not owner %s): %v, want MOVED to the owner", k, a, owner, err)
					}
				}
			}
			if len(owners) != 3 {
				t.Errorf("keys landed on %d masters, want 3", len(owners))
			}
		})

		t.Run("MigrateSlot", func(t *testing.T) {
			slot := redistest.Slot("ws:user:{alice}")
			from := c.MasterFor(t, "ws:user:{alice}")
			to := c.Addrs[0]
			if to == from {
				to = c.Addrs[1]
			}
			// More keys than one MIGRATE batch, of several types.
			var tagged []string
			for i := range 250 {
				k := fmt.Sprintf("ws:x%d:{alice}", i)
				tagged = append(tagged, k)
				if err := cl.Set(ctx, k, k, 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := cl.Set(ctx, "ws:user:{alice}", "u", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if err := cl.RPush(ctx, "ws:offline:{alice}", "m1", "m2").Err(); err != nil {
				t.Fatal(err)
			}

			c.MigrateSlot(t, slot, to)

			if got := c.MasterFor(t, "ws:offline:{alice}"); got != to {
				t.Fatalf("after MigrateSlot(%d, %s) the owner is %s (was %s)", slot, to, got, from)
			}
			if n, err := nodeClient(t, to).ClusterCountKeysInSlot(ctx, slot).Result(); err != nil || n != 252 {
				t.Errorf("CLUSTER COUNTKEYSINSLOT %d on the new owner = %d, %v; want 252", slot, n, err)
			}
			if n, err := nodeClient(t, from).ClusterCountKeysInSlot(ctx, slot).Result(); err != nil || n != 0 {
				t.Errorf("CLUSTER COUNTKEYSINSLOT %d on the old owner = %d, %v; want 0", slot, n, err)
			}
			// The cluster client follows the MOVED and reads every key.
			for _, k := range tagged {
				if got, err := cl.Get(ctx, k).Result(); err != nil || got != k {
					t.Fatalf("GET %s after the migration = %q, %v", k, got, err)
				}
			}
			if got, err := cl.LRange(ctx, "ws:offline:{alice}", 0, -1).Result(); err != nil || !slices.Equal(got, []string{"m1", "m2"}) {
				t.Fatalf("LRANGE ws:offline:{alice} after the migration = %q, %v", got, err)
			}
			// A fresh client learns the new slot map at once.
			if got, err := c.Client(t).Get(ctx, "ws:user:{alice}").Result(); err != nil || got != "u" {
				t.Fatalf("GET ws:user:{alice} via a new cluster client = %q, %v", got, err)
			}
			c.WaitHealthy(t)
			// Moving it to where it is does nothing.
			c.MigrateSlot(t, slot, to)
		})
	})
	if t.Failed() {
		return
	}
	// The owner subtest's cleanup stopped every node.
	for _, a := range addrs {
		wait.For(t, 10*time.Second, func() bool { return !listening(a) },
			"cluster node %s still listening after its test's cleanup", a)
	}
}

func TestClusterFailover(t *testing.T) {
	ctx := context.Background()
	c := redistest.StartCluster(t, 3, 1)
	if len(c.Addrs) != 6 {
		t.Fatalf("Addrs = %v, want 6 nodes", c.Addrs)
	}
	if got, want := c.Seeds(), strings.Join(c.Addrs[:3], ","); got != want {
		t.Errorf("Seeds() = %q, want the masters %q", got, want)
	}
	// Masters first, then one replica of each master.
	replicaOf := map[string]string{} // master → its replica
	for i, a := range c.Addrs {
		role, master := role(t, a)
		switch {
		case i < 3 && role != "master":
			t.Fatalf("Addrs[%d] = %s is a %s, want a master", i, a, role)
		case i >= 3 && role != "slave":
			t.Fatalf("Addrs[%d] = %s is a %s, want a replica", i, a, role)
		case i >= 3:
			replicaOf[master] = a
		}
	}
	if len(replicaOf) != 3 {
		t.Fatalf("replicas per master: %v, want one for each of %v", replicaOf, c.Addrs[:3])
	}

	keys := spreadKeys(t, c)
	cl := c.Client(t)
	for _, k := range keys {
		// SET and WAIT on one connection to the owner: WAIT counts the
		// replicas that have this connection's writes.
		conn := nodeClient(t, c.MasterFor(t, k)).Conn()
		if err := conn.Set(ctx, k, "v:"+k, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := conn.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n < 1 {
			t.Fatalf("WAIT 1 after SET %s = %d, %v; want the replica to have it", k, n, err)
		}
		conn.Close()
	}

	victim := c.MasterFor(t, keys[0])
	start := time.Now()
	c.KillNode(t, victim)
	if listening(victim) {
		t.Fatalf("%s still accepts connections after KillNode", victim)
	}
	c.WaitHealthy(t)
	t.Logf("cluster healthy %v after SIGKILL of master %s", time.Since(start).Round(time.Millisecond), victim)

	if got, want := c.MasterFor(t, keys[0]), replicaOf[victim]; got != want {
		t.Fatalf("after killing %s its slots are on %s, want its replica %s", victim, got, want)
	}
	if r, _ := role(t, replicaOf[victim]); r != "master" {
		t.Fatalf("promoted replica %s answers ROLE %s", replicaOf[victim], r)
	}
	if strings.Contains(c.Seeds(), victim) {
		t.Errorf("Seeds() = %q still lists the killed master %s", c.Seeds(), victim)
	}
	// Every acknowledged write survives; the client finds the new owner
	// once it reloads the slot map, which it does after errors.
	for _, k := range keys {
		var got string
		var err error
		wait.For(t, 20*time.Second, func() bool {
			got, err = cl.Get(ctx, k).Result()
			return err == nil
		}, "GET %s through the cluster client after the failover: %v", k, lastErr{&err})
		if got != "v:"+k {
			t.Fatalf("GET %s after the failover = %q, want %q", k, got, "v:"+k)
		}
	}
	wait.For(t, 20*time.Second, func() bool { return cl.Set(ctx, keys[0], "new", 0).Err() == nil },
		"SET %s on the promoted replica", keys[0])
}

// spreadKeys returns one key per master of c, chosen with Slot and
// checked with MasterFor.
func spreadKeys(t *testing.T, c *redistest.Cluster) []string {
	t.Helper()
	var keys []string
	seen := map[string]bool{}
	for i := 0; len(seen) < 3 && i < 1000; i++ {
		k := fmt.Sprintf("ws:user:{u%d}", i)
		if m := c.MasterFor(t, k); !seen[m] {
			seen[m] = true
			keys = append(keys, k)
		}
	}
	if len(keys) != 3 {
		t.Fatalf("keys of 1000 users all on %v", seen)
	}
	return keys
}

// nodeClient is a plain client of one node: it sees MOVED instead of
// following it.
func nodeClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// role returns ROLE's first element and, for a replica, its master.
func role(t *testing.T, addr string) (string, string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	v, err := c.Do(context.Background(), "ROLE").Slice()
	if err != nil || len(v) == 0 {
		t.Fatalf("ROLE on %s: %v %v", addr, v, err)
	}
	r, _ := v[0].(string)
	if r == "slave" && len(v) >= 3 {
		return r, net.JoinHostPort(fmt.Sprint(v[1]), fmt.Sprint(v[2]))
	}
	return r, ""
}

func listening(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// lastErr formats the error it points to when printed, so a wait.For
// message shows the last error of the polls rather than the one at the call.
type lastErr struct{ err *error }

func (l lastErr) String() string { return fmt.Sprint(*l.err) }
