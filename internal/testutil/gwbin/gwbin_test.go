package gwbin

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
