package gwbin

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(After(m).Run()) }

// The binary is built once and runs: --help lists the flags.
func TestPath(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/gateway")
	}
	bin := Path(t)
	if again := Path(t); again != bin {
		t.Fatalf("second Path = %q; want the same binary %q", again, bin)
	}
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	if !strings.Contains(string(out), "-addr") {
		t.Fatalf("%s --help does not list -addr:\n%s", bin, out)
	}
}

// Start runs a node that answers /readyz, and its clean-up stops it.
func TestStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/gateway")
	}
	var p *Process
	t.Run("run", func(t *testing.T) {
		p = Start(t, "gwbin-test", Options{Ready: 20 * time.Second, StopSignal: syscall.SIGTERM, StopGrace: 10 * time.Second})
		if !Ready(p.Addr) {
			t.Fatal("not ready after Start")
		}
	})
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the process outlived its test's clean-up")
	}
	if !strings.Contains(p.Logs.String(), "gwbin-test") {
		t.Errorf("its log does not name the node:\n%s", p.Logs.Tail(20))
	}
}
