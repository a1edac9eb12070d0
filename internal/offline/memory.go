package offline

import (
	"context"
	"sync"
	"time"
)

// Memory is the single-node offline store. Its lock is held across publish and store, and
// Drain takes the same lock, which makes push-or-store atomic with respect to a connect.
type Memory struct {
	publish func(user string, data []byte) int
	max     int
	ttl     time.Duration
	now     func() time.Time

	mu        sync.Mutex
	lists     map[string]*memList
	nextSweep time.Time
}

type memList struct {
	msgs    [][]byte
	expires time.Time
}

// NewMemory returns a store that publishes through publish (which returns the number of
// receivers, like Redis PUBLISH) and keeps at most max messages per user for ttl.
func NewMemory(publish func(user string, data []byte) int, max int, ttl time.Duration, now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{publish: publish, max: max, ttl: ttl, now: now, lists: make(map[string]*memList)}
}

// Push publishes data to user, or stores it when nobody received it.
func (m *Memory) Push(_ context.Context, user string, data []byte) (online bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.publish(user, data) > 0 {
		return true, nil
	}
	now := m.now()
	m.sweepLocked(now)
	l := m.listLocked(user, now)
	l.msgs = append(l.msgs, data)
	if over := len(l.msgs) - m.max; over > 0 {
		clear(l.msgs[:over])
		l.msgs = l.msgs[over:]
	}
	l.expires = now.Add(m.ttl)
	return false, nil
}

// PushMany pushes data to each user; online[i] tells where users[i]'s copy went.
func (m *Memory) PushMany(ctx context.Context, users []string, data []byte) ([]bool, error) {
	online := make([]bool, len(users))
	for i, u := range users {
		online[i], _ = m.Push(ctx, u, data)
	}
	return online, nil
}

// Drain takes every stored message of user, oldest first.
func (m *Memory) Drain(_ context.Context, user string) ([][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.lists[user]
	delete(m.lists, user)
	if l == nil || !m.now().Before(l.expires) {
		return nil, nil
	}
	return l.msgs, nil
}

// Requeue puts msgs back ahead of what is stored, keeping the newest max.
func (m *Memory) Requeue(_ context.Context, user string, msgs [][]byte) error {
	if len(msgs) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	l := m.listLocked(user, now)
	all := make([][]byte, 0, len(msgs)+len(l.msgs))
	all = append(append(all, msgs...), l.msgs...)
	if over := len(all) - m.max; over > 0 {
		all = all[over:]
	}
	l.msgs = all
	l.expires = now.Add(m.ttl)
	return nil
}

// Len returns how many messages wait for user.
func (m *Memory) Len(_ context.Context, user string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.lists[user]; l != nil && m.now().Before(l.expires) {
		return len(l.msgs), nil
	}
	return 0, nil
}

func (m *Memory) listLocked(user string, now time.Time) *memList {
	l := m.lists[user]
	if l == nil || !now.Before(l.expires) {
		l = &memList{}
		m.lists[user] = l
	}
	return l
}

// sweepLocked drops expired lists about once a minute, so users who never come back do not
// hold memory past the TTL.
func (m *Memory) sweepLocked(now time.Time) {
	if now.Before(m.nextSweep) {
		return
	}
	m.nextSweep = now.Add(time.Minute)
	for user, l := range m.lists {
		if !now.Before(l.expires) {
			delete(m.lists, user)
		}
	}
}
