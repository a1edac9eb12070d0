// Package gwbin builds the gateway binary (cmd/gateway) once per test binary, for the
// tests that run a node as a separate process so they can signal or SIGKILL it.
//
// The build happens on the first [Path] call, so a package whose selected tests need no
// process pays nothing. The binary lives in a temporary directory that the TestMain wrapper
// [After] removes:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(gwbin.After(m)) }
package gwbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	once     sync.Once
	dir      string // the temporary directory, once made
	path     string // the binary, once built
	buildErr error
)

// Path returns the path of a gateway binary built from this module's cmd/gateway, building
// it on the first call; it fails tb when the build fails.
func Path(tb testing.TB) string {
	tb.Helper()
	once.Do(build)
	if buildErr != nil {
		tb.Fatalf("gwbin: %v", buildErr)
	}
	return path
}

func build() {
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
	if dir, err = os.MkdirTemp("", "wsgateway-bin-"); err != nil {
		buildErr = err
		return
	}
	out := filepath.Join(dir, "gateway")
	cmd := exec.Command(gobin, "build", "-o", out, "./cmd/gateway")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("go build ./cmd/gateway: %v\n%s", err, b)
		return
	}
	path = out
}

// repoRoot finds the module root from the test's working directory (the package directory).
func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("no go.mod above the test's directory")
		}
		d = parent
	}
}

// Main is what [After] returns: a testing.M whose Run also cleans up.
type Main struct {
	m    *testing.M
	also []func()
}

// After wraps m for TestMain: Run runs the tests, then removes the built binary and calls
// each of also, all before the caller (goleak.VerifyTestMain, or os.Exit) goes on.
func After(m *testing.M, also ...func()) Main { return Main{m: m, also: also} }

// Run runs the tests and then the clean-ups, and returns the tests' exit code.
func (x Main) Run() int {
	defer func() {
		for _, f := range x.also {
			f()
		}
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}()
	return x.m.Run()
}
