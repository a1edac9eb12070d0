package wait

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestForReturnsOnceTrue(t *testing.T) {
	var calls atomic.Int32
	start := time.Now()
	For(t, 5*time.Second, func() bool { return calls.Add(1) >= 3 }, "three calls")
	if got := calls.Load(); got != 3 {
		t.Fatalf("cond called %d times, want 3 (For must stop polling once true)", got)
	}
	// Two sleeps of 10ms and 20ms; anything near the timeout means For
	// ignored the true result.
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("For took %v for a condition true on the third poll", d)
	}
}

// fakeTB records Fatalf instead of failing the real test. Like testing.T it
// ends the calling goroutine, so For must be run on a goroutine of its own.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestForFailsAtTimeout(t *testing.T) {
	fake := &fakeTB{TB: t}
	var calls atomic.Int32
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		For(fake, 150*time.Millisecond, func() bool { calls.Add(1); return false }, "user %s connected", "alice")
	}()
	<-done
	elapsed := time.Since(start)

	if fake.msg == "" {
		t.Fatal("For returned without calling Fatalf although cond never became true")
	}
	if want := "user alice connected"; !strings.Contains(fake.msg, want) {
		t.Errorf("Fatalf message %q does not contain %q", fake.msg, want)
	}
	if elapsed < 150*time.Millisecond {
		t.Errorf("For gave up after %v, before its 150ms timeout", elapsed)
	}
	// 150ms at 10, 20, 40, 80ms intervals is about 5 polls; far more means
	// the interval does not grow, fewer than 2 means it never polled again.
	if n := calls.Load(); n < 2 || n > 20 {
		t.Errorf("cond called %d times in 150ms, want between 2 and 20", n)
	}
}

func TestLazyFormatsAtTheDeadline(t *testing.T) {
	state := "start"
	ftb := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		For(ftb, 30*time.Millisecond, func() bool { state = "deadline"; return false }, "state %s", Lazy(func() string { return state }))
	}()
	<-done
	if !strings.Contains(ftb.msg, "state deadline") {
		t.Fatalf("message %q, want the state at the deadline", ftb.msg)
	}
}
