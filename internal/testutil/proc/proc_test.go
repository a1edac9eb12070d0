package proc

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeTB records how Find ends a test. Like testing.T, Skip and Fatalf end the
// calling goroutine, so calls run on a goroutine of their own.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func findIn(t *testing.T, name string) (path string, f *fakeTB) {
	f = &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		path = Find(f, name)
	}()
	<-done
	return path, f
}

func TestFind(t *testing.T) {
	t.Run("present", func(t *testing.T) {
		path, f := findIn(t, "sh")
		if path == "" || f.skipped != "" || f.fatal != "" {
			t.Fatalf("Find(sh) = %q, skipped %q, fatal %q; want a path", path, f.skipped, f.fatal)
		}
	})
	t.Run("missing locally skips", func(t *testing.T) {
		t.Setenv("CI", "")
		_, f := findIn(t, "no-such-binary-wsgateway")
		if f.skipped == "" || f.fatal != "" {
			t.Fatalf("skipped %q, fatal %q; want a skip", f.skipped, f.fatal)
		}
	})
	t.Run("missing in CI fails", func(t *testing.T) {
		t.Setenv("CI", "true")
		_, f := findIn(t, "no-such-binary-wsgateway")
		if f.fatal == "" || f.skipped != "" {
			t.Fatalf("skipped %q, fatal %q; want a failure", f.skipped, f.fatal)
		}
	})
	t.Run("sbin outside PATH", func(t *testing.T) {
		if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
			t.Skip("no /usr/sbin/nginx on this machine")
		}
		t.Setenv("PATH", "/nonexistent")
		if path, f := findIn(t, "nginx"); path != "/usr/sbin/nginx" {
			t.Fatalf("Find(nginx) with an empty PATH = %q (skipped %q, fatal %q), want /usr/sbin/nginx", path, f.skipped, f.fatal)
		}
	})
}

func start(t *testing.T, group bool, script string) *Process {
	t.Helper()
	p, err := Start(exec.Command("sh", "-c", script), group)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = p.Stop(syscall.SIGKILL, time.Second) })
	return p
}

func TestStopGraceful(t *testing.T) {
	p := start(t, false, "exec sleep 60")
	killed, err := p.Stop(syscall.SIGTERM, 10*time.Second)
	if err != nil || killed {
		t.Fatalf("Stop(SIGTERM) = killed %v, %v; want a plain exit", killed, err)
	}
	if !p.Exited() {
		t.Fatal("Stop returned before the process exited")
	}
	// Stopping again is harmless.
	if killed, err := p.Stop(syscall.SIGTERM, time.Second); err != nil || killed {
		t.Fatalf("second Stop = killed %v, %v", killed, err)
	}
}

func TestStopEscalatesAndKillsGroup(t *testing.T) {
	// The leader ignores SIGTERM; its child writes its pid so the test can
	// check that the group SIGKILL took it too.
	pidFile := t.TempDir() + "/child.pid"
	p := start(t, true, `trap "" TERM; sleep 60 & echo $! > `+pidFile+`; wait; wait`)
	var child int
	deadline := time.Now().Add(10 * time.Second)
	for child == 0 && time.Now().Before(deadline) {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("child pid never written")
	}

	killed, err := p.Stop(syscall.SIGTERM, 200*time.Millisecond)
	if err != nil || !killed {
		t.Fatalf("Stop(SIGTERM) of a process ignoring it = killed %v, %v; want killed", killed, err)
	}
	// The orphaned child is reaped by init (or this machine's pid 1) at
	// its leisure, so a zombie counts as gone.
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if !alive(child) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("child %d of the group survived SIGKILL of the group", child)
}

// alive reports whether pid runs, counting a zombie as dead.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return runtime.GOOS != "linux" // without /proc, trust kill(0)
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
