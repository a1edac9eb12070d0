package bus

import (
	"context"
	"sync"
)

// Memory is the single-node bus: subscriptions are a set, publishing calls the handler.
//
// Lock order: inbox.Memory's lock → Memory.mu → the hub's shard locks. Publish delivers
// while holding mu so that a publish and an unsubscribe of the same user never interleave:
// a message either reaches the hub before the unsubscribe returns or finds no subscriber.
type Memory struct {
	mu   sync.Mutex
	h    Handler
	subs map[string]struct{}
}

// NewMemory returns an in-memory bus; Start it before use.
func NewMemory() *Memory { return &Memory{subs: make(map[string]struct{})} }

// Start sets the handler that receives deliveries.
func (m *Memory) Start(h Handler) {
	m.mu.Lock()
	m.h = h
	m.mu.Unlock()
}

// Subscribe marks user as held by this node. It is confirmed at once.
func (m *Memory) Subscribe(_ context.Context, user string) error {
	m.mu.Lock()
	m.subs[user] = struct{}{}
	m.mu.Unlock()
	return nil
}

// Unsubscribe forgets user. No delivery for user starts after it returns.
func (m *Memory) Unsubscribe(_ context.Context, user string) error {
	m.mu.Lock()
	delete(m.subs, user)
	m.mu.Unlock()
	return nil
}

// Publish delivers message seq of user (0: unnumbered) and returns the number of receivers
// (0 or 1 node), like Redis PUBLISH.
func (m *Memory) Publish(user string, seq int64, data []byte) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.subs[user]; !ok || m.h == nil {
		return 0
	}
	m.h.Deliver(user, seq, data)
	return 1
}

// Broadcast delivers data to every connection.
func (m *Memory) Broadcast(_ context.Context, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h != nil {
		m.h.Broadcast(data)
	}
	return nil
}

// Kick closes every connection of user.
func (m *Memory) Kick(_ context.Context, user string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h != nil {
		m.h.Kick(user)
	}
	return nil
}

// Ready always succeeds: there is nothing to reach.
func (m *Memory) Ready() error { return nil }

// Close does nothing; it exists so both buses shut down alike.
func (m *Memory) Close() error { return nil }
