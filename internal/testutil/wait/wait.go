package wait

import (
	"fmt"
	"testing"
	"time"
)

// The poll interval starts small so that fast conditions cost almost nothing,
// and grows to a cap so that a slow one (a Redis restart, a reconnect with
// backoff) does not burn a core on a 2-core CI machine while it waits.
const (
	firstInterval = 10 * time.Millisecond
	maxInterval   = 100 * time.Millisecond
)

// For polls cond every 10ms (growing to at most 100ms) until it returns true
// or timeout passes; then it fails tb with tb.Fatalf, using msg formatted
// with args (as fmt.Sprintf would) to say what was awaited. cond is called
// once more at the deadline, so a condition that turns true just in time
// passes. For must be called from the goroutine running the test, as
// tb.Fatalf requires.
func For(tb testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	interval := firstInterval
	for {
		if cond() {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			tb.Fatalf("wait: gave up after %v: %s", timeout, fmt.Sprintf(msg, args...))
			return // only reached when tb is a fake whose Fatalf returns
		}
		time.Sleep(min(interval, left))
		interval = min(interval*2, maxInterval)
	}
}

// Lazy formats as the result of calling it. For formats its message only when it gives up,
// so a Lazy argument shows the state at the deadline rather than at the start:
//
//	wait.For(t, d, done, "got %s", wait.Lazy(func() string { return fmt.Sprint(got()) }))
type Lazy func() string

func (l Lazy) String() string { return l() }
