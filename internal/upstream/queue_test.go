package upstream_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/upstream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// patience bounds every wait; far above what a step takes on an idle machine.
const patience = 20 * time.Second

// counter is an Observer that counts dropped frames by reason.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) Dropped(reason string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[reason] += n
}

func (c *counter) get(reason string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[reason]
}

// freshStream starts a Redis of the test's own and names the stream the queue writes to.
func freshStream(t *testing.T) (*redis.Client, string) {
	t.Helper()
	return redistest.Start(t).Client(t), redistest.Prefix(t) + "upstream"
}

func newQueue(t *testing.T, rdb redis.Cmdable, opt upstream.Options) *upstream.Queue {
	t.Helper()
	q := upstream.New(rdb, opt)
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// memory is the stream's memory in Redis, every radix-tree node counted.
func memory(t *testing.T, rdb *redis.Client, stream string) int64 {
	t.Helper()
	n, err := rdb.MemoryUsage(context.Background(), stream, 0).Result()
	if err != nil {
		t.Fatalf("MEMORY USAGE %s: %v", stream, err)
	}
	return n
}

// 64 KiB frames, 200 of them (12.5 MiB), into a 1 MiB budget: the stream's memory in Redis
// stays around the budget, and the newest frames are the ones kept. Before the byte budget,
// the stream was capped at 100,000 entries, and all 12.5 MiB stayed.
func TestBudgetHoldsLargeFrames(t *testing.T) {
	rdb, stream := freshStream(t)
	const budget = 1 << 20
	q := newQueue(t, rdb, upstream.Options{Stream: stream, NodeID: "n1", MaxBytes: budget, QueueBytes: 64 << 20})
	frame := bytes.Repeat([]byte("x"), 64<<10)
	const frames = 200
	for i := range frames {
		f := append([]byte(fmt.Sprintf("%04d", i)), frame[4:]...)
		_ = q.Append(context.Background(), "alice", f)
	}
	_ = q.Close() // sends what is queued
	mem := memory(t, rdb, stream)
	n := rdb.XLen(context.Background(), stream).Val()
	t.Logf("%d frames of 64 KiB into a %d-byte budget: %d entries kept, %d bytes of memory", frames, budget, n, mem)
	if mem > budget+budget/10 {
		t.Fatalf("stream uses %d bytes, budget %d", mem, budget)
	}
	if n < 8 {
		t.Fatalf("only %d entries kept: the budget holds about 12 frames of 64 KiB", n)
	}
	last, err := rdb.XRevRangeN(context.Background(), stream, "+", "-", 1).Result()
	if err != nil || len(last) != 1 {
		t.Fatalf("XREVRANGE: %v %v", last, err)
	}
	v := last[0].Values
	if v["user"] != "alice" || v["node"] != "n1" || fmt.Sprint(v["data"])[:4] != fmt.Sprintf("%04d", frames-1) {
		t.Fatalf("newest entry has user %v node %v data %.8q…, want alice, n1 and the last frame", v["user"], v["node"], v["data"])
	}
}

// Small frames are kept by the thousand: the budget is bytes, not a count derived from the
// largest frames.
func TestBudgetKeepsSmallFrames(t *testing.T) {
	rdb, stream := freshStream(t)
	const budget = 512 << 10
	q := newQueue(t, rdb, upstream.Options{Stream: stream, NodeID: "a", MaxBytes: budget, QueueLen: 1 << 16})
	small := bytes.Repeat([]byte("s"), 100)
	for i := range 30000 {
		_ = q.Append(context.Background(), fmt.Sprintf("u%d", i%50), small)
	}
	_ = q.Close()
	mem := memory(t, rdb, stream)
	n := rdb.XLen(context.Background(), stream).Val()
	t.Logf("100-byte frames, %d-byte budget: %d entries kept, %d bytes of memory", budget, n, mem)
	if mem > budget+budget/10 {
		t.Fatalf("stream uses %d bytes, budget %d", mem, budget)
	}
	// Each is estimated at (3 + 1 + 100) × 5/4 + 64 = 194 bytes: 2702 fit, less a mark's
	// spacing (an eighth of a budget's worth at most with batches).
	if n < 2000 {
		t.Fatalf("only %d entries kept", n)
	}
}

// Two nodes append to one stream, one of them large frames: each keeps its own entries within
// its budget, so the stream stays within the two budgets. (Trimming by id also removes the
// other node's older entries: how far back the stream reaches is set by the node whose
// budget lasts the shortest time.)
func TestBudgetHoldsFramesFromTwoNodes(t *testing.T) {
	rdb, stream := freshStream(t)
	const budget = 512 << 10
	a := newQueue(t, rdb, upstream.Options{Stream: stream, NodeID: "a", MaxBytes: budget, QueueLen: 1 << 16})
	b := newQueue(t, rdb, upstream.Options{Stream: stream, NodeID: "b", MaxBytes: budget, QueueLen: 1 << 16, QueueBytes: 64 << 20})
	small := bytes.Repeat([]byte("s"), 100)
	large := bytes.Repeat([]byte("L"), 32<<10)
	for i := range 30000 {
		_ = a.Append(context.Background(), fmt.Sprintf("u%d", i%50), small)
		if i%100 == 0 {
			_ = b.Append(context.Background(), "big", large)
		}
	}
	_ = a.Close()
	_ = b.Close()
	mem := memory(t, rdb, stream)
	t.Logf("two nodes, %d-byte budgets: %d entries kept, %d bytes of memory", budget, rdb.XLen(context.Background(), stream).Val(), mem)
	if mem > 2*budget+budget/10 {
		t.Fatalf("stream uses %d bytes, two budgets are %d", mem, 2*budget)
	}
}

// While Redis does not answer (CLIENT PAUSE), Append still returns at once; what does not
// fit the queue is dropped and counted as upstream_overflow, and what fit is appended once
// Redis is back: queued + dropped = sent.
func TestOverflowWhileRedisStalls(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	admin := rs.Client(t)
	stream := redistest.Prefix(t) + "upstream"
	var obs counter
	q := newQueue(t, rdb, upstream.Options{Stream: stream, NodeID: "n1", MaxBytes: 1 << 20, QueueLen: 16, Batch: 4, Observer: &obs})
	if err := admin.Do(context.Background(), "CLIENT", "PAUSE", 10000, "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	unpaused := false
	unpause := func() {
		if !unpaused {
			unpaused = true
			_ = admin.Do(context.Background(), "CLIENT", "UNPAUSE").Err()
		}
	}
	t.Cleanup(unpause)
	const sent = 500
	start := time.Now()
	for i := range sent {
		_ = q.Append(context.Background(), "alice", []byte(fmt.Sprint(i)))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("%d Appends took %s while Redis was paused: they block", sent, d)
	}
	dropped := obs.get(upstream.ReasonOverflow)
	// 16 queued, and a batch of at most 4 stuck in Redis.
	if dropped < sent-16-4 || dropped > sent-16 {
		t.Fatalf("%d of %d frames counted as overflow, want %d–%d", dropped, sent, sent-16-4, sent-16)
	}
	unpause()
	wait.For(t, patience, func() bool {
		return rdb.XLen(context.Background(), stream).Val() == int64(sent-dropped)
	}, "the queued frames did not reach the stream")
	if e := obs.get(upstream.ReasonError); e != 0 {
		t.Fatalf("%d frames counted as errors", e)
	}
}

// Frames still queued at Close are sent before it returns.
func TestCloseSendsWhatIsQueued(t *testing.T) {
	rdb, stream := freshStream(t)
	var obs counter
	q := upstream.New(rdb, upstream.Options{Stream: stream, NodeID: "n1", MaxBytes: 1 << 20, Observer: &obs})
	for i := range 1000 {
		_ = q.Append(context.Background(), "alice", []byte(fmt.Sprint(i)))
	}
	_ = q.Close()
	_ = q.Close() // twice is fine
	if n := rdb.XLen(context.Background(), stream).Val(); n+int64(obs.get(upstream.ReasonOverflow)) != 1000 {
		t.Fatalf("%d entries and %d overflows after Close, want 1000 in all", n, obs.get(upstream.ReasonOverflow))
	}
	_ = q.Append(context.Background(), "alice", []byte("late"))
	if e := obs.get(upstream.ReasonError); e != 1 {
		t.Fatalf("a frame after Close: %d counted as upstream_error, want 1", e)
	}
}

// With Redis unreachable, Append does not block, failed sends are counted as
// upstream_error, and Close returns within its flush timeout.
func TestRedisUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	var obs counter
	q := upstream.New(rdb, upstream.Options{Stream: "t:upstream", NodeID: "n1", MaxBytes: 1 << 20, Observer: &obs, FlushTimeout: 500 * time.Millisecond})
	start := time.Now()
	for i := range 100 {
		_ = q.Append(context.Background(), "alice", []byte(fmt.Sprint(i)))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Appends took %s with Redis down", d)
	}
	wait.For(t, patience, func() bool { return obs.get(upstream.ReasonError) > 0 }, "no upstream_error counted")
	start = time.Now()
	_ = q.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %s with Redis down", d)
	}
	if got := obs.get(upstream.ReasonError) + obs.get(upstream.ReasonOverflow); got != 100 {
		t.Fatalf("%d of 100 frames counted as dropped", got)
	}
}
