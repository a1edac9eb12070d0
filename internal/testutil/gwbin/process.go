package gwbin

import (
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/testutil/freeport"
	"github.com/wsgateway/wsgateway/internal/testutil/logbuf"
	"github.com/wsgateway/wsgateway/internal/testutil/proc"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// Process is a gateway running as a child process (see [Start]).
type Process struct {
	*proc.Process
	ID   string         // its --node-id
	Addr string         // its --addr, 127.0.0.1:port
	Logs *logbuf.Buffer // its stdout and stderr
}

// Options says how [Start] runs and stops a gateway process.
type Options struct {
	// Args follow the flags Start sets (--dev, --addr, --node-id, --log-format text): the
	// Redis URL, the key prefix, limits.
	Args []string
	// Ready is how long the process has to answer 200 on /readyz.
	Ready time.Duration
	// StopSignal and StopGrace are how the clean-up stops the process: StopSignal, then
	// SIGKILL after StopGrace. The zero StopSignal is SIGKILL at once.
	StopSignal syscall.Signal
	StopGrace  time.Duration
}

// readyClient asks /readyz without keep-alive, so no idle connection outlives a test.
var readyClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// Start runs the binary of [Path] as a --dev node named id on a free loopback port and waits
// until its /readyz answers 200; it fails tb when the process exits first or is not ready
// within o.Ready. The clean-up stops the process and, when tb failed, logs the tail of its
// output.
func Start(tb testing.TB, id string, o Options) *Process {
	tb.Helper()
	bin := Path(tb)
	addr := freeport.Addr(tb)
	logs := &logbuf.Buffer{}
	args := append([]string{"--dev", "--addr", addr, "--node-id", id, "--log-format", "text"}, o.Args...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logs, logs
	p, err := proc.Start(cmd, false)
	if err != nil {
		tb.Fatal(err)
	}
	sig := o.StopSignal
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	tb.Cleanup(func() {
		_, _ = p.Stop(sig, o.StopGrace)
		if tb.Failed() {
			tb.Logf("node %s log (tail):\n%s", id, logs.Tail(60))
		}
	})
	wait.For(tb, o.Ready, func() bool { return p.Exited() || Ready(addr) },
		"node %s (process) never became ready", id)
	if p.Exited() {
		tb.Fatalf("node %s exited at start-up: %v\n%s", id, p.Err(), logs.Tail(30))
	}
	return &Process{Process: p, ID: id, Addr: addr, Logs: logs}
}

// Ready reports whether the gateway at addr (host:port) answers 200 on /readyz.
func Ready(addr string) bool {
	resp, err := readyClient.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
