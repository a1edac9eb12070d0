package ws

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// The catch-up logic (fill.go) without sockets: connections that were never started keep
// what they are given in their queue, which the tests read. The inbox is a fake that the
// tests fill and, to hold a read in flight, block.

type fakeInbox struct {
	mu      sync.Mutex
	msgs    map[string][]string // user → messages numbered first..latest
	first   map[string]int64
	acked   map[string]int64
	reads   int
	block   chan struct{} // when set, Read waits for it to close (a read in flight)
	reading chan struct{} // closed by the first Read that blocks
}

func newFakeInbox() *fakeInbox {
	return &fakeInbox{msgs: map[string][]string{}, first: map[string]int64{}, acked: map[string]int64{}}
}

// push stores a message and returns its number, as the real inbox does before publishing.
func (f *fakeInbox) push(user, data string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.first[user] == 0 {
		f.first[user] = 1
	}
	f.msgs[user] = append(f.msgs[user], data)
	return f.first[user] + int64(len(f.msgs[user])) - 1
}

// trim drops the oldest messages of user, as the cap does.
func (f *fakeInbox) trim(user string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs[user] = f.msgs[user][n:]
	f.first[user] += int64(n)
}

// Read answers from what the inbox holds now; when block is set, the first Read then waits
// for it before it returns, so what is pushed meanwhile is newer than its answer.
func (f *fakeInbox) Read(_ context.Context, user string, after int64) (Backlog, error) {
	f.mu.Lock()
	f.reads++
	first := max(f.first[user], 1)
	latest := first + int64(len(f.msgs[user])) - 1
	b := Backlog{Latest: latest, First: first, Acked: f.acked[user]}
	start := after
	switch {
	case after < 0:
		start = b.Acked
	case after > latest:
		start = 0
	}
	b.Start = max(start+1, first)
	for _, m := range f.msgs[user][b.Start-first:] {
		b.Msgs = append(b.Msgs, []byte(m))
	}
	block, reading := f.block, f.reading
	f.block = nil
	f.mu.Unlock()
	if block != nil {
		close(reading)
		<-block
	}
	return b, nil
}

// holdNextRead makes the next Read wait; it returns a channel closed once that Read has its
// answer, and the function that lets it return.
func (f *fakeInbox) holdNextRead() (answered <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	block, reading := make(chan struct{}), make(chan struct{})
	f.block, f.reading = block, reading
	return reading, sync.OnceFunc(func() { close(block) })
}

// connectDuringDeliveries connects user (a v1 client, from 0) while msgs are delivered live
// during its inbox read: they arrive after the read began and before it answered.
func connectDuringDeliveries(t *testing.T, h *Hub, in *fakeInbox, user string, msgs ...string) *Conn {
	t.Helper()
	answered, release := in.holdNextRead()
	done := make(chan *Conn)
	go func() { done <- connect(t, h, user, true, 0) }()
	<-answered
	deliver(h, in, user, msgs...)
	release()
	return <-done
}

func (f *fakeInbox) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

func (f *fakeInbox) Ack(context.Context, string, int64) error { return nil }

type nopBus struct{}

func (nopBus) Subscribe(context.Context, string) error   { return nil }
func (nopBus) Unsubscribe(context.Context, string) error { return nil }

func newFillHub(t *testing.T, in *fakeInbox) *Hub {
	t.Helper()
	return newTestHub(t, Config{SendQueue: 64, MaxConnsPerUser: 4, SubscribeTimeout: time.Second}, Deps{Bus: nopBus{}, Inbox: in})
}

// connect adds a connection of user as the handler does (register, then startFill), without
// a socket: after is its since (-1: none).
func connect(t *testing.T, h *Hub, user string, v1 bool, after int64) *Conn {
	t.Helper()
	c := h.newConn(user, "test")
	c.v1 = v1
	b, err := h.register(context.Background(), c, after)
	if err != nil {
		t.Fatal(err)
	}
	h.startFill(c, after, b)
	return c
}

// frames is what c was given so far, as a v1 client would read it ("3 x", "gap 1 2", "- b").
func frames(h *Hub, c *Conn) string {
	h.fills.wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.queue {
		switch {
		case m.kind == kindControl: // before Seq: a gap carries its end there
			out = append(out, string(m.Data))
		case m.Seq > 0:
			out = append(out, fmt.Sprintf("%d %s", m.Seq, m.Data))
		default:
			out = append(out, "- "+string(m.Data))
		}
	}
	return strings.Join(out, ", ")
}

func deliver(h *Hub, in *fakeInbox, user string, msgs ...string) {
	for _, m := range msgs {
		h.Deliver(user, in.push(user, m), []byte(m))
	}
}

func TestFillStartAndLive(t *testing.T) {
	in := newFakeInbox()
	h := newFillHub(t, in)
	in.push("alice", "a")
	in.push("alice", "b")
	in.acked["alice"] = 1
	fresh := connect(t, h, "alice", true, -1) // without since: after the acknowledged position
	resumed := connect(t, h, "alice", true, 0)
	raw := connect(t, h, "alice", false, -1)
	deliver(h, in, "alice", "c", "d")
	h.Deliver("alice", 0, []byte("unnumbered"))
	if got := frames(h, fresh); got != "2 b, 3 c, 4 d, - unnumbered" {
		t.Errorf("without since: %s", got)
	}
	if got := frames(h, resumed); got != "1 a, 2 b, 3 c, 4 d, - unnumbered" {
		t.Errorf("since=0: %s", got)
	}
	if got := frames(h, raw); got != "2 b, 3 c, 4 d, - unnumbered" {
		t.Errorf("raw: %s", got)
	}
	// A live duplicate (an old publish arriving late) is dropped.
	h.Deliver("alice", 3, []byte("c"))
	if got := frames(h, fresh); got != "2 b, 3 c, 4 d, - unnumbered" {
		t.Errorf("after a duplicate: %s", got)
	}
}

// A number that jumps (a publish this node never got) is caught up from the inbox first.
func TestFillOnJump(t *testing.T) {
	in := newFakeInbox()
	h := newFillHub(t, in)
	c := connect(t, h, "bob", true, -1)
	deliver(h, in, "bob", "1")
	in.push("bob", "2") // published, but lost on the way to this node
	in.push("bob", "3")
	deliver(h, in, "bob", "4")
	if got := frames(h, c); got != "1 1, 2 2, 3 3, 4 4" {
		t.Errorf("after a jump: %s", got)
	}
}

func TestFillGapAndReset(t *testing.T) {
	in := newFakeInbox()
	h := newFillHub(t, in)
	for i := 1; i <= 5; i++ {
		in.push("carol", fmt.Sprint(i))
	}
	in.trim("carol", 3) // 1..3 are gone (offline-max)
	if got := frames(h, connect(t, h, "carol", true, 1)); got != "gap 2 3, 4 4, 5 5" {
		t.Errorf("since=1 after a trim: %s", got)
	}
	if got := frames(h, connect(t, h, "carol", false, -1)); got != "4 4, 5 5" {
		t.Errorf("raw: %s (no control frames)", got)
	}
	if got := frames(h, connect(t, h, "carol", true, 9)); got != "reset 5, gap 1 3, 4 4, 5 5" {
		t.Errorf("since above latest: %s", got)
	}
}

// Live messages that arrive while the start read is in flight wait, and follow it in order,
// without a second read when they were all kept.
func TestFillLiveDuringRead(t *testing.T) {
	in := newFakeInbox()
	h := newFillHub(t, in)
	in.push("dave", "1")
	c := connectDuringDeliveries(t, h, in, "dave", "2", "3")
	if got := frames(h, c); got != "1 1, 2 2, 3 3" {
		t.Errorf("frames: %s", got)
	}
	if n := in.readCount(); n != 1 {
		t.Errorf("%d reads; the live ones waited, one read suffices", n)
	}
}

// More live messages than pending keeps (send-queue) arrive during the read: the catch-up
// reads again for the rest (maxSeen).
func TestFillReadsAgainWhenPendingOverflowed(t *testing.T) {
	in := newFakeInbox()
	h := newTestHub(t, Config{SendQueue: 2, MaxConnsPerUser: 4, SubscribeTimeout: time.Second}, Deps{Bus: nopBus{}, Inbox: in})
	c := connectDuringDeliveries(t, h, in, "erin", "1", "2", "3", "4", "5")
	if got := frames(h, c); got != "1 1, 2 2, 3 3, 4 4, 5 5" {
		t.Errorf("frames: %s", got)
	}
	if n := in.readCount(); n != 2 {
		t.Errorf("%d reads, want 2", n)
	}
}

// A second outage during a catch-up: messages published while the first catch-up's read was in
// flight reached neither that read nor the node live. The second Resync must not be lost on
// the catch-up under way: it reads once more.
func TestFillSecondOutageDuringCatchUp(t *testing.T) {
	in := newFakeInbox()
	h := newFillHub(t, in)
	c := connect(t, h, "frank", true, -1)
	deliver(h, in, "frank", "1")
	answered, release := in.holdNextRead()
	h.Resync() // the first outage ended: catch up
	<-answered
	in.push("frank", "2") // the second outage: published, never delivered live
	in.push("frank", "3")
	h.Resync() // the second outage ended while the first catch-up is still reading
	release()
	if got := frames(h, c); got != "1 1, 2 2, 3 3" {
		t.Errorf("frames: %s", got)
	}
}

// A user's state expired while a connection was open and numbering started again: the first
// live message (seq 1) below the position is a reset, not a duplicate.
func TestFillRestartedNumbering(t *testing.T) {
	in := newFakeInbox()
	h := newFillHub(t, in)
	deliverAll := func(user string, n int) {
		for i := 1; i <= n; i++ {
			in.push(user, fmt.Sprint(i))
		}
	}
	deliverAll("gina", 3)
	c := connect(t, h, "gina", true, 0)
	in.mu.Lock()
	delete(in.msgs, "gina") // expired
	delete(in.first, "gina")
	in.mu.Unlock()
	deliver(h, in, "gina", "new")
	if got := frames(h, c); got != "1 1, 2 2, 3 3, reset 1, 1 new" {
		t.Errorf("frames: %s", got)
	}
}
