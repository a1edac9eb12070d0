package redistest_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

func TestStartRestartKill(t *testing.T) {
	ctx := context.Background()
	s := redistest.Start(t)
	c := s.Client(t)
	p := redistest.Prefix(t)

	if err := c.Set(ctx, p+"k", "v1", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}

	// Stop+start on the same address: the client reconnects by itself and
	// the key comes back from the append-only file.
	addr := s.Addr
	s.Restart(t)
	if s.Addr != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr)
	}
	if got, err := c.Get(ctx, p+"k").Result(); err != nil || got != "v1" {
		t.Fatalf("GET after Restart = %q, %v; want \"v1\" (AOF must keep data)", got, err)
	}

	// A crash must not lose an acknowledged write either.
	if err := c.Set(ctx, p+"k2", "v2", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Kill(t)
	if conn, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Kill", s.Addr)
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded after Kill")
	}
	s.Restart(t) // from a killed server: Stop does nothing, start again
	if got, err := c.Get(ctx, p+"k2").Result(); err != nil || got != "v2" {
		t.Fatalf("GET after Kill+Restart = %q, %v; want \"v2\"", got, err)
	}

	// Stop is idempotent and leaves the server down.
	s.Stop(t)
	s.Stop(t)
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
}

func TestURL(t *testing.T) {
	s := redistest.Start(t)
	u := s.URL()
	if want := "redis://" + s.Addr + "/0"; u != want {
		t.Fatalf("URL() = %q, want %q", u, want)
	}
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Fatalf("Addr = %q, want a 127.0.0.1 address", s.Addr)
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", u, err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING via URL: %v", err)
	}
}

func TestPersistenceConfig(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	ctx := context.Background()
	for param, want := range map[string]string{
		"appendonly":  "yes",
		"appendfsync": "always",
		"save":        "",
		"bind":        "127.0.0.1",
		"dir":         s.Dir,
	} {
		got, err := c.ConfigGet(ctx, param).Result()
		if err != nil {
			t.Fatalf("CONFIG GET %s: %v", param, err)
		}
		if got[param] != want {
			t.Errorf("CONFIG GET %s = %q, want %q", param, got[param], want)
		}
	}
}

func TestClientClosedAtCleanup(t *testing.T) {
	s := redistest.Start(t)
	var c *redis.Client
	t.Run("user", func(t *testing.T) {
		c = s.Client(t)
		if err := c.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("PING: %v", err)
		}
	})
	if err := c.Ping(context.Background()).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Fatalf("PING after the subtest's cleanup: %v, want redis.ErrClosed", err)
	}
}

func TestServersStoppedAtCleanup(t *testing.T) {
	var addr string
	t.Run("owner", func(t *testing.T) {
		addr = redistest.Start(t).Addr
	})
	wait.For(t, 5*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}, "redis-server on %s still listening after its test's cleanup", addr)
}

func TestPrefixUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		p := redistest.Prefix(t)
		if seen[p] {
			t.Fatalf("Prefix returned %q twice", p)
		}
		if strings.ContainsAny(p, "{}") || !strings.HasSuffix(p, ":") {
			t.Fatalf("Prefix = %q: want no hash-tag braces and a trailing colon", p)
		}
		seen[p] = true
	}
}

func TestParallelServers(t *testing.T) {
	// Several tests starting servers at once must get distinct ports.
	addrs := make(chan string, 4)
	t.Run("group", func(t *testing.T) {
		for range 4 {
			t.Run("srv", func(t *testing.T) {
				t.Parallel()
				s := redistest.Start(t)
				if err := s.Client(t).Ping(context.Background()).Err(); err != nil {
					t.Fatalf("PING: %v", err)
				}
				addrs <- s.Addr
			})
		}
	})
	close(addrs)
	seen := map[string]bool{}
	for a := range addrs {
		if seen[a] {
			t.Fatalf("two servers on %s", a)
		}
		seen[a] = true
	}
}
