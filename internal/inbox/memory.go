package inbox

import (
	"context"
	"sync"
	"time"
)

// Memory is the single-node inbox with the semantics of the Redis one (lua/*.lua). Its lock is
// held across numbering, storing and publishing, and Read takes the same lock, which makes a
// push atomic with respect to a connect.
type Memory struct {
	publish func(user string, seq int64, data []byte) int
	opt     Options
	now     func() time.Time

	mu        sync.Mutex
	users     map[string]*memInbox
	ids       map[memID]memSeen
	nextSweep time.Time
}

type memInbox struct {
	seq, ack int64
	msgs     [][]byte // numbered seq-len(msgs)+1 … seq
	mark     int64    // the position as it was at markTime (lua/ack.lua)
	markTime time.Time
	expires  time.Time
}

type memID struct{ user, id string }

type memSeen struct {
	seq     int64
	expires time.Time
}

// NewMemory returns an inbox that publishes through publish (which returns the number of
// receivers, like Redis PUBLISH). now may be nil (time.Now).
func NewMemory(publish func(user string, seq int64, data []byte) int, opt Options, now func() time.Time) *Memory {
	opt.defaults()
	if now == nil {
		now = time.Now
	}
	return &Memory{publish: publish, opt: opt, now: now, users: make(map[string]*memInbox), ids: make(map[memID]memSeen)}
}

// Push numbers data, keeps it and publishes it; see Redis.Push.
// Events (receipts, undelivered) exist only on Redis.
func (m *Memory) Push(_ context.Context, user string, data []byte, o PushOptions) (Result, error) {
	id := o.ID
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweepLocked(now)
	if id != "" {
		if s, ok := m.ids[memID{user, id}]; ok && now.Before(s.expires) {
			return Result{Seq: s.seq, Duplicate: true}, nil
		}
	}
	b := m.inboxLocked(user, now)
	b.seq++
	b.msgs = append(b.msgs, data)
	if over := len(b.msgs) - m.opt.Max; over > 0 {
		clear(b.msgs[:over])
		b.msgs = b.msgs[over:]
	}
	b.expires = maxTime(b.expires, now.Add(m.opt.TTL))
	if id != "" {
		m.ids[memID{user, id}] = memSeen{seq: b.seq, expires: now.Add(m.opt.DedupTTL)}
	}
	n := m.publish(user, b.seq, data)
	return Result{Seq: b.seq, Receivers: int64(n)}, nil
}

// PushBatch pushes every message in order; it cannot fail in memory.
func (m *Memory) PushBatch(ctx context.Context, msgs []Message) []Result {
	out := make([]Result, len(msgs))
	for i, msg := range msgs {
		out[i], _ = m.Push(ctx, msg.User, msg.Data, msg.PushOptions)
	}
	return out
}

// Read returns the numbers and the kept messages after position after; see Redis.Read.
func (m *Memory) Read(_ context.Context, user string, after int64) (Range, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.users[user]
	if b == nil || !m.now().Before(b.expires) {
		b = &memInbox{}
	}
	r := Range{Latest: b.seq, First: b.seq - int64(len(b.msgs)) + 1, Acked: b.ack}
	r.Start = r.startAfter(after)
	r.Msgs = append([][]byte(nil), b.msgs[r.Start-r.First:]...)
	return r, nil
}

// Ack moves user's acknowledged position to seq; see Redis.Ack.
func (m *Memory) Ack(_ context.Context, user string, seq int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	b := m.users[user]
	if b == nil || !now.Before(b.expires) || seq > b.seq || seq <= b.ack {
		return nil
	}
	b.ack = seq
	if !b.markTime.IsZero() && now.Sub(b.markTime) >= m.opt.ResumeTTL {
		if drop := b.mark - (b.seq - int64(len(b.msgs)) + 1) + 1; drop > 0 {
			drop = min(drop, int64(len(b.msgs)))
			clear(b.msgs[:drop])
			b.msgs = b.msgs[drop:]
		}
		b.markTime = time.Time{}
	}
	if b.markTime.IsZero() {
		b.mark, b.markTime = seq, now
	}
	b.expires = maxTime(b.expires, now.Add(m.opt.ResumeTTL))
	return nil
}

func (m *Memory) inboxLocked(user string, now time.Time) *memInbox {
	b := m.users[user]
	if b == nil || !now.Before(b.expires) {
		b = &memInbox{}
		m.users[user] = b
	}
	return b
}

// sweepLocked drops expired inboxes and ids about once a minute, so users who never come back
// do not hold memory past the TTL.
func (m *Memory) sweepLocked(now time.Time) {
	if now.Before(m.nextSweep) {
		return
	}
	m.nextSweep = now.Add(time.Minute)
	for user, b := range m.users {
		if !now.Before(b.expires) {
			delete(m.users, user)
		}
	}
	for k, s := range m.ids {
		if !now.Before(s.expires) {
			delete(m.ids, k)
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
