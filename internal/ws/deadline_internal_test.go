package ws

import (
	"net"
	"testing"
	"time"
)

// countingConn records the write deadlines that reach the socket.
type countingConn struct {
	net.Conn
	set []time.Time
}

func (c *countingConn) SetWriteDeadline(t time.Time) error { c.set = append(c.set, t); return nil }
func (c *countingConn) SetDeadline(t time.Time) error      { c.set = append(c.set, t); return nil }

func TestDeadlineConnRoundsAndSkips(t *testing.T) {
	inner := &countingConn{}
	d := &deadlineConn{Conn: inner, step: time.Second, last: unsetDeadline}
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

	// Frames written within one step share one deadline: one call reaches the socket.
	for i := 0; i < 100; i++ {
		_ = d.SetWriteDeadline(base.Add(100*time.Millisecond + time.Duration(i)*time.Millisecond))
	}
	if len(inner.set) != 1 {
		t.Fatalf("100 deadlines within one step reached the socket %d times, want 1", len(inner.set))
	}
	got, want := inner.set[0], base.Add(time.Second)
	if !got.Equal(want) {
		t.Fatalf("deadline %v, want it rounded up to %v", got, want)
	}
	// Never earlier than asked: a deadline on a step boundary stays as it is.
	_ = d.SetWriteDeadline(base.Add(2 * time.Second))
	if got := inner.set[len(inner.set)-1]; !got.Equal(base.Add(2 * time.Second)) {
		t.Fatalf("deadline on a step boundary moved to %v", got)
	}
	// Clearing the deadline always reaches the socket, once.
	_ = d.SetWriteDeadline(time.Time{})
	_ = d.SetWriteDeadline(time.Time{})
	if n := len(inner.set); n != 3 || !inner.set[2].IsZero() {
		t.Fatalf("after clearing twice: calls %v, want one zero deadline last", inner.set)
	}
	// SetDeadline changes the socket's write deadline behind the cache: the next write
	// deadline must reach the socket even when it equals the cached one.
	_ = d.SetDeadline(time.Time{})
	_ = d.SetWriteDeadline(time.Time{})
	if n := len(inner.set); n != 5 {
		t.Fatalf("write deadline after SetDeadline was skipped: calls %v", inner.set)
	}
}

// The first call always reaches the socket, even a zero deadline (the HTTP server may have
// left one set).
func TestDeadlineConnFirstCallPassesThrough(t *testing.T) {
	inner := &countingConn{}
	d := &deadlineConn{Conn: inner, step: time.Second, last: unsetDeadline}
	_ = d.SetWriteDeadline(time.Time{})
	if len(inner.set) != 1 {
		t.Fatalf("first zero deadline did not reach the socket")
	}
}
