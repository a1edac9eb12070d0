package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// extraDirs are searched after PATH: Debian installs nginx in /usr/sbin,
// which is not on a non-root user's PATH.
var extraDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// Find returns the path of the executable name, looked up in PATH and then in
// the sbin and bin directories. When it is not found, the test is skipped,
// unless the CI environment variable is non-empty: then the test fails, so a
// CI image that lost redis-server or nginx cannot pass by skipping.
func Find(tb testing.TB, name string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range extraDirs {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found in PATH or %v; install it (Debian: apt-get install redis-server nginx-light)", name, extraDirs)
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s (CI is set, so this is a failure, not a skip)", msg)
	}
	tb.Skip(msg)
	return ""
}

// Process is a started child process. One goroutine waits for it, so its exit
// can be observed through [Process.Done] by any number of callers.
type Process struct {
	cmd   *exec.Cmd
	group bool
	done  chan struct{}
	err   error // cmd.Wait's result; read only after done is closed
}

// Start starts cmd. With group set, the process leads a process group of its
// own and signals from [Process.Signal] and [Process.Stop] go to the whole
// group: nginx's workers would otherwise survive a SIGKILL of their master and
// keep the test's port open. On Linux the child also gets a parent-death
// signal, so a test binary that dies without running its cleanups does not
// leave servers behind.
func Start(cmd *exec.Cmd, group bool) (*Process, error) {
	cmd.SysProcAttr = sysProcAttr(group)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("proc: start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, group: group, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the process's exit status as returned by exec.Cmd.Wait. It must only
// be called after Done is closed.
func (p *Process) Err() error { return p.err }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process, or to its process group when it was
// started with group set. Signalling an exited process is not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	pid := p.cmd.Process.Pid
	if p.group {
		pid = -pid
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("proc: signal %v to %d: %w", sig, pid, err)
	}
	return nil
}

// Stop sends sig and waits up to grace for the process to exit; if it is
// still running then, it sends SIGKILL and waits for the exit. It reports
// whether SIGKILL was needed. With group set, only the leader's exit is
// awaited, but the SIGKILL goes to the whole group, so no worker survives.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) (killed bool, err error) {
	if err := p.Signal(sig); err != nil {
		return false, err
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		if p.group {
			// The master has exited; make sure no stray worker keeps the
			// port. ESRCH (nobody left) is the normal case.
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
		return false, nil
	case <-timer.C:
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return true, err
	}
	<-p.done
	return true, nil
}
