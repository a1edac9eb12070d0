package nginxtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/testutil/freeport"
	"github.com/wsgateway/wsgateway/internal/testutil/proc"
)

// Deadlines are generous for a loaded 2-core CI machine; nginx normally
// listens within milliseconds.
const (
	startTimeout = 10 * time.Second // launch until a TCP connect succeeds
	stopGrace    = 5 * time.Second  // SIGQUIT until SIGKILL to the process group
	startTries   = 5                // launches when the port turns out to be taken
	logTailLines = 30
)

var errPortBusy = errors.New("port already in use")

// Start renders confPath (the repository's deploy/nginx.conf) for upstreams
// (host:port of each gateway node) by the rule in the package documentation,
// runs nginx with it on a free 127.0.0.1 port, waits until that port accepts
// TCP connections and returns it as "127.0.0.1:port". A cleanup on tb stops
// nginx (SIGQUIT, so it finishes requests in flight, then SIGKILL to master
// and workers after 5s). When nginx is not installed, tb is skipped, or
// failed when the CI environment variable is set. Logs are in the test's
// temp dir and their tail is shown if start-up fails.
func Start(tb testing.TB, confPath string, upstreams []string) (addr string) {
	tb.Helper()
	addr, _ = start(tb, confPath, upstreams)
	return addr
}

// start is Start, also returning the directory holding the rendered config
// and the logs, for this package's own tests.
func start(tb testing.TB, confPath string, upstreams []string) (addr, dir string) {
	tb.Helper()
	bin := proc.Find(tb, "nginx")
	conf, err := os.ReadFile(confPath)
	if err != nil {
		tb.Fatalf("nginxtest: %v", err)
	}
	// Render once up front so that a config the rule cannot adapt fails with
	// just that reason, not as a failed start-up.
	if _, err := render(conf, renderOptions{listen: "127.0.0.1:0", upstreams: upstreams, dir: "/"}); err != nil {
		tb.Fatalf("nginxtest: render %s: %v", confPath, err)
	}
	// Created before the stop cleanup is registered, so (cleanups run last
	// first) nginx is gone before its directory is removed.
	dir = tb.TempDir()

	for range startTries {
		var p *proc.Process
		addr, p, err = launch(bin, conf, upstreams, dir)
		if err == nil {
			tb.Cleanup(func() {
				if killed, err := p.Stop(syscall.SIGQUIT, stopGrace); err != nil {
					tb.Errorf("nginxtest: stop nginx on %s: %v", addr, err)
				} else if killed {
					tb.Logf("nginxtest: nginx on %s still had connections %v after SIGQUIT and was killed", addr, stopGrace)
				}
			})
			return addr, dir
		}
		if !errors.Is(err, errPortBusy) {
			break
		}
	}
	tb.Fatalf("nginxtest: start nginx: %v\n%s\n%s", err,
		logTail(filepath.Join(dir, "error.log")), logTail(filepath.Join(dir, "stderr.log")))
	return "", ""
}

// launch renders the config for a fresh port, starts nginx and waits until
// the port accepts connections.
func launch(bin string, conf []byte, upstreams []string, dir string) (string, *proc.Process, error) {
	port, err := freeport.Port()
	if err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	rendered, err := render(conf, renderOptions{listen: addr, upstreams: upstreams, dir: dir})
	if err != nil {
		return "", nil, err
	}
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, rendered, 0o644); err != nil {
		return "", nil, err
	}
	errorLog := filepath.Join(dir, "error.log")
	// Truncated per attempt, so "Address already in use" means this attempt.
	if err := os.WriteFile(errorLog, nil, 0o644); err != nil {
		return "", nil, err
	}
	stderr, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		return "", nil, err
	}
	defer stderr.Close() // nginx has its own copy

	globals := "daemon off; pid " + filepath.Join(dir, "nginx.pid") + ";"
	if os.Geteuid() == 0 {
		// A root master starts workers as the compiled-in user (nobody),
		// which cannot enter the 0700 temp dir holding the temp paths.
		globals += " user root;"
	}
	cmd := exec.Command(bin, "-p", dir+"/", "-e", errorLog, "-c", confFile, "-g", globals)
	cmd.Dir = dir
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	// Its own process group: SIGKILL must reach the workers too, or they keep
	// the port after their master is gone.
	p, err := proc.Start(cmd, true)
	if err != nil {
		return "", nil, err
	}

	deadline := time.Now().Add(startTimeout)
	interval := 5 * time.Millisecond
	for {
		if p.Exited() {
			if log, _ := os.ReadFile(errorLog); bytes.Contains(log, []byte("Address already in use")) {
				return "", nil, fmt.Errorf("%s: %w", addr, errPortBusy)
			}
			return "", nil, fmt.Errorf("nginx exited during start-up: %v", p.Err())
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return addr, p, nil
		}
		if time.Now().After(deadline) {
			_, _ = p.Stop(syscall.SIGKILL, 0)
			return "", nil, fmt.Errorf("nginx did not accept connections on %s within %v", addr, startTimeout)
		}
		time.Sleep(interval)
		interval = min(interval*2, 100*time.Millisecond)
	}
}

// logTail returns the last lines of a log file for a failure message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return path + " (last lines):\n" + string(bytes.Join(lines, []byte("\n")))
}
