package ws

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// orderBus records the order of subscription changes reaching "Redis"; the first Subscribe
// fails, and Unsubscribe waits for release, so the test controls the window between them.
type orderBus struct {
	mu      sync.Mutex
	ops     []string
	failed  bool
	release chan struct{}
	unsub   chan struct{} // closed when Unsubscribe was called
}

func (b *orderBus) Subscribe(_ context.Context, user string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ops = append(b.ops, "sub")
	if !b.failed {
		b.failed = true
		return errors.New("subscribe timed out (it may still reach Redis)")
	}
	return nil
}

func (b *orderBus) Unsubscribe(_ context.Context, user string) error {
	b.mu.Lock()
	b.ops = append(b.ops, "unsub")
	b.mu.Unlock()
	close(b.unsub)
	<-b.release
	return nil
}

func (b *orderBus) order() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.ops, " ")
}

// A subscribe that failed is undone with an UNSUBSCRIBE; a reconnect in that window must not
// have its SUBSCRIBE reach Redis first, or the UNSUBSCRIBE would leave the new connection deaf
// (issue: failSubscribe deleted the user's entry without marking it leaving).
func TestFailedSubscribeThenReconnectIsNotDeaf(t *testing.T) {
	bus := &orderBus{release: make(chan struct{}), unsub: make(chan struct{})}
	h := newTestHub(t, Config{SendQueue: 8, MaxConnsPerUser: 4, SubscribeTimeout: time.Second}, Deps{Bus: bus, Inbox: newFakeInbox()})

	first := make(chan error, 1)
	go func() { _, err := h.register(context.Background(), h.newConn("alice", "test"), -1); first <- err }()
	<-bus.unsub // failSubscribe is undoing the subscribe, and waits in its UNSUBSCRIBE

	second := make(chan error, 1)
	go func() { _, err := h.register(context.Background(), h.newConn("alice", "test"), -1); second <- err }()
	select {
	case err := <-second:
		t.Fatalf("the reconnect registered (%v) while the failed subscribe was still being undone: order %s", err, bus.order())
	case <-time.After(100 * time.Millisecond):
		// It waits, as it must. (A bounded look for a wrong early return; the order check
		// below is what decides.)
	}
	close(bus.release)
	if err := <-first; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first connect: %v, want ErrUnavailable (503)", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	if got := bus.order(); got != "sub unsub sub" {
		t.Fatalf("subscription changes reached Redis as %q, want \"sub unsub sub\"", got)
	}
}
