package e2ecluster

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/proc"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// A gateway process holding users on every shard is SIGKILLed: within 30 s the survivor stops
// counting its connections and reports each of those users offline, once.
func TestClusterNodeKilledLeavesNoGhost(t *testing.T) {
	rc := redistest.StartCluster(t, 3, 0)
	seeds := rc.Seeds()
	a := gateway(t, "a", func(c *config.Config) { c.RedisCluster = strings.Split(seeds, ",") })
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(seeds, ",")})
	t.Cleanup(func() { _ = cc.Close() })

	bin := filepath.Join(t.TempDir(), "gateway")
	_, file, _, _ := runtime.Caller(0)
	build := exec.Command("go", "build", "-o", bin, "./cmd/gateway")
	build.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--dev", "--addr", addr, "--redis-cluster", seeds, "--node-id", "doomed", "--log-format", "text")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	p, err := proc.Start(cmd, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = p.Stop(syscall.SIGKILL, 0) })
	wait.For(t, deadline, func() bool { return get(addr, "/readyz") == 200 }, "the doomed node never became ready")

	var users []string
	for _, us := range usersPerShard(t, rc, 1) {
		users = append(users, us...)
	}
	for _, u := range users {
		connect(t, addr, u)
	}
	for _, u := range users {
		var pr struct{ Connections int }
		getJSON(t, a.Addr(), "/api/v1/users/"+u+"/presence", &pr)
		if pr.Connections != 1 {
			t.Fatalf("%s: %d connections counted, want 1", u, pr.Connections)
		}
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	wait.For(t, 30*time.Second, func() bool {
		for _, u := range users {
			var pr struct{ Connections int }
			getJSON(t, a.Addr(), "/api/v1/users/"+u+"/presence", &pr)
			if pr.Connections != 0 {
				return false
			}
		}
		return true
	}, "the killed node's connections still count after 30 s")
	t.Logf("the killed node's connections stopped counting after %v", time.Since(killed).Round(100*time.Millisecond))
	wait.For(t, deadline, func() bool {
		evs := clusterEvents(t, cc)
		for _, u := range users {
			if count(evs, "offline:"+u+":<nil>") != 1 {
				return false
			}
		}
		return true
	}, "offline events: %v", lazyEvents(t, cc))
	for _, u := range users {
		if n := count(clusterEvents(t, cc), "online:"+u+":<nil>"); n != 1 {
			t.Fatalf("%s: %d online events, want 1", u, n)
		}
	}
}
