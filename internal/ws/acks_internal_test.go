package ws

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// ackInbox records the positions written.
type ackInbox struct {
	fakeInbox
	mu     sync.Mutex
	writes []string
	hold   chan struct{} // when set, Ack waits for it (a flush in flight)
}

func (a *ackInbox) Ack(_ context.Context, user string, seq int64) error {
	a.mu.Lock()
	hold := a.hold
	a.mu.Unlock()
	if hold != nil {
		<-hold
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.writes = append(a.writes, fmt.Sprintf("%s:%d", user, seq))
	return nil
}

func (a *ackInbox) written() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprint(a.writes)
}

// Positions are batched: one write per user per flush, the highest; flushUser writes one user
// at once, and waits for a flush that is writing it.
func TestAcksBatched(t *testing.T) {
	in := &ackInbox{fakeInbox: *newFakeInbox()}
	h := NewHub(Config{SendQueue: 8}, Deps{Bus: nopBus{}, Inbox: in})
	t.Cleanup(func() { h.acks.stop(context.Background()) })
	a := &h.acks
	for _, n := range []int64{3, 9, 5} {
		a.note("ann", n)
	}
	a.note("bob", 2)
	a.flushUser(context.Background(), "ann")
	if got := in.written(); got != "[ann:9]" {
		t.Fatalf("after flushUser: %s", got)
	}
	a.flushUser(context.Background(), "ann") // nothing recorded: no write
	a.flush(context.Background())
	if got := in.written(); got != "[ann:9 bob:2]" {
		t.Fatalf("after flush: %s", got)
	}

	// A flush in flight: flushUser of a user in it returns only once it is written.
	in.mu.Lock()
	in.hold = make(chan struct{})
	in.mu.Unlock()
	a.note("cy", 4)
	flushed := make(chan struct{})
	go func() { a.flush(context.Background()); close(flushed) }()
	for {
		a.mu.Lock()
		started := a.inflight != nil
		a.mu.Unlock()
		if started {
			break
		}
		time.Sleep(time.Millisecond) // polling the flush's start; bounded by the test's timeout
	}
	done := make(chan struct{})
	go func() { a.flushUser(context.Background(), "cy"); close(done) }()
	select {
	case <-done:
		t.Fatal("flushUser returned while the flush writing cy's position was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	in.mu.Lock()
	close(in.hold)
	in.hold = nil
	in.mu.Unlock()
	<-done
	<-flushed
	if got := in.written(); got != "[ann:9 bob:2 cy:4]" {
		t.Fatalf("after the flush in flight: %s", got)
	}
}
