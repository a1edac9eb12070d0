package nginxtest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// shippedConf is the production config, relative to this package.
const shippedConf = "../../../deploy/nginx.conf"

// upstream is a stand-in gateway node that answers with its name and the
// proxy headers it received.
type upstream struct {
	name     string
	srv      *httptest.Server
	newConns atomic.Int32
	inFlight atomic.Int32
}

func startUpstream(t *testing.T, name string, hold func()) *upstream {
	t.Helper()
	u := &upstream{name: name}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.inFlight.Add(1)
		defer u.inFlight.Add(-1)
		if hold != nil {
			hold()
		}
		fmt.Fprintf(w, "%s host=%s xff=%s xri=%s proto=%s", u.name, r.Host,
			r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Real-IP"), r.Header.Get("X-Forwarded-Proto"))
	}))
	u.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.newConns.Add(1)
		}
	}
	u.srv.Start()
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) addr() string { return u.srv.Listener.Addr().String() }

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// With requests held open, least_conn must send concurrent requests to both
// nodes; each must see the client's Host with its port ($http_host) and the
// forwarding headers.
func TestStartBalancesAndForwardsHeaders(t *testing.T) {
	var a, b *upstream
	release := make(chan struct{})
	var releaseOnce sync.Once
	// Each request waits until both nodes hold one, so the test only passes
	// if nginx spread the load; the timeout keeps a failure from hanging.
	hold := func() {
		timer := time.NewTimer(10 * time.Second)
		defer timer.Stop()
		for {
			if a.inFlight.Load() > 0 && b.inFlight.Load() > 0 {
				releaseOnce.Do(func() { close(release) })
			}
			select {
			case <-release:
				return
			case <-timer.C:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	a = startUpstream(t, "node-a", hold)
	b = startUpstream(t, "node-b", hold)
	addr := Start(t, shippedConf, []string{a.addr(), b.addr()})

	const n = 6
	bodies := make(chan string, n)
	errs := make(chan error, n)
	client := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			code, body, err := get(client, "http://"+addr+"/api/v1/users/alice/presence")
			if err != nil || code != http.StatusOK {
				errs <- fmt.Errorf("GET through nginx: %d %q %v", code, body, err)
				return
			}
			bodies <- body
		})
	}
	wg.Wait()
	close(bodies)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]int{}
	for body := range bodies {
		name, _, _ := strings.Cut(body, " ")
		seen[name]++
		for _, want := range []string{"host=" + addr + " ", "xff=127.0.0.1 ", "xri=127.0.0.1 ", "proto=http"} {
			if !strings.Contains(body, want) {
				t.Errorf("upstream saw %q, want it to contain %q", body, want)
			}
		}
	}
	if seen["node-a"] == 0 || seen["node-b"] == 0 {
		t.Errorf("requests per node = %v; least_conn should have used both", seen)
	}
}

// A node that is down is skipped (proxy_next_upstream error): no client
// request fails.
func TestStartSkipsDeadUpstream(t *testing.T) {
	a := startUpstream(t, "node-a", nil)
	b := startUpstream(t, "node-b", nil)
	addr := Start(t, shippedConf, []string{a.addr(), b.addr()})
	b.srv.Close()

	client := &http.Client{Timeout: 30 * time.Second}
	for i := range 10 {
		code, body, err := get(client, "http://"+addr+"/healthz")
		if err != nil || code != http.StatusOK || !strings.HasPrefix(body, "node-a ") {
			t.Fatalf("request %d with node-b down: %d %q %v; want 200 from node-a", i, code, body, err)
		}
	}
}

// Plain HTTP calls reuse upstream connections (keepalive with an empty
// Connection header); a config that closes them would open one per call.
func TestStartKeepsUpstreamConnectionsAlive(t *testing.T) {
	a := startUpstream(t, "node-a", nil)
	addr := Start(t, shippedConf, []string{a.addr()})
	client := &http.Client{Timeout: 30 * time.Second}
	const n = 20
	for i := range n {
		if code, body, err := get(client, "http://"+addr+"/healthz"); err != nil || code != http.StatusOK {
			t.Fatalf("request %d: %d %q %v", i, code, body, err)
		}
	}
	if got := a.newConns.Load(); got > n/4 {
		t.Errorf("%d requests opened %d upstream connections; keepalive should reuse them", n, got)
	}
}

// The access log must not contain query strings: clients send their JWT as
// ?token=.
func TestAccessLogOmitsQuery(t *testing.T) {
	a := startUpstream(t, "node-a", nil)
	addr, dir := start(t, shippedConf, []string{a.addr()})
	client := &http.Client{Timeout: 30 * time.Second}
	if code, body, err := get(client, "http://"+addr+"/ws?token=SECRET-TOKEN"); err != nil || code != http.StatusOK {
		t.Fatalf("GET: %d %q %v", code, body, err)
	}
	logPath := filepath.Join(dir, "access.log")
	var log []byte
	wait.For(t, 10*time.Second, func() bool {
		log, _ = os.ReadFile(logPath)
		return strings.Contains(string(log), "/ws")
	}, "access log %s never showed the request", logPath)
	if strings.Contains(string(log), "SECRET-TOKEN") {
		t.Fatalf("access log contains the token:\n%s", log)
	}
}

// After the test's cleanup nginx, workers included, must be gone.
func TestStartStoppedAtCleanup(t *testing.T) {
	a := startUpstream(t, "node-a", nil)
	var addr, dir string
	t.Run("owner", func(t *testing.T) {
		addr, dir = start(t, shippedConf, []string{a.addr()})
	})
	wait.For(t, 10*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}, "nginx on %s (dir %s) still accepts connections after cleanup", addr, dir)
}
