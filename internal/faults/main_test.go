package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// binDir holds the gateway binary built for the tests that SIGKILL a node; TestMain creates it
// and removes it after the tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsgateway-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	binDir = dir
	goleak.VerifyTestMain(cleanupAfter{m, func() {
		transport.CloseIdleConnections() // its keep-alive readers are goroutines too
		_ = os.RemoveAll(dir)
	}},
		// After dials to a dead Redis failed, go-redis retries in the background once a
		// second (pool.tryDial); that goroutine ends by itself after its sleep, even after Close.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// cleanupAfter runs done after the tests, before goleak looks for leftover goroutines.
type cleanupAfter struct {
	m    *testing.M
	done func()
}

func (c cleanupAfter) Run() int {
	defer c.done()
	return c.m.Run()
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// gatewayBinary builds cmd/gateway once per package run, only when a test needs it, and
// returns its path.
func gatewayBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			buildErr = err
			return
		}
		gobin, err := exec.LookPath("go") // go test puts GOROOT/bin first on PATH
		if err != nil {
			buildErr = err
			return
		}
		out := filepath.Join(binDir, "gateway")
		cmd := exec.Command(gobin, "build", "-o", out, "./cmd/gateway")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/gateway: %v\n%s", err, b)
			return
		}
		buildPath = out
	})
	if buildErr != nil {
		t.Fatalf("faults: %v", buildErr)
	}
	return buildPath
}

// repoRoot finds the module root from the test's working directory (the package directory).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test's directory")
		}
		dir = parent
	}
}
