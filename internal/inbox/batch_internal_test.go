package inbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/scripts"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// pipeHook watches what the batcher sends: how many commands or pipelines are in flight
// (sent, not yet answered) and the most calls sent together: the longest pipeline, or the most
// pushes in one batch script run.
type pipeHook struct{ inFlight, longest atomic.Int64 }

func (h *pipeHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *pipeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.inFlight.Add(1)
		defer h.inFlight.Add(-1)
		h.note(pushesIn(cmd))
		return next(ctx, cmd)
	}
}
func (h *pipeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.inFlight.Add(1)
		defer h.inFlight.Add(-1)
		h.note(int64(len(cmds)))
		for _, c := range cmds {
			h.note(pushesIn(c))
		}
		return next(ctx, cmds)
	}
}

func (h *pipeHook) note(n int64) {
	for {
		m := h.longest.Load()
		if n <= m || h.longest.CompareAndSwap(m, n) {
			return
		}
	}
}

// batchHash names the batch script in EVALSHA.
var batchHash = redis.NewScript(pushLua + batchLua).Hash()

// pushesIn is the number of pushes cmd carries when it runs the batch script, else 0.
func pushesIn(cmd redis.Cmder) int64 {
	a := cmd.Args()
	if cmd.Name() != "evalsha" || len(a) < 4 || a[1] != batchHash {
		return 0
	}
	nkeys, _ := a[2].(int)
	if len(a) <= 3+nkeys {
		return 0
	}
	n, _ := a[3+nkeys].(int)
	return int64(n)
}

type batchEnv struct {
	srv   *redistest.Server
	rdb   *redis.Client // the store's client, with hook
	admin *redis.Client // for the test's own commands (never paused: it writes nothing then)
	hook  *pipeHook
	s     *Redis
}

func newBatchEnv(t *testing.T) *batchEnv {
	t.Helper()
	srv := redistest.Start(t)
	e := &batchEnv{srv: srv, admin: srv.Client(t), hook: &pipeHook{}}
	e.rdb = redis.NewClient(&redis.Options{Addr: srv.Addr})
	e.rdb.AddHook(e.hook)
	e.s = NewRedis(e.rdb, Options{Prefix: redistest.Prefix(t), Max: 100})
	t.Cleanup(func() {
		e.s.Close()
		_ = e.rdb.Close()
	})
	return e
}

// pause holds every write command (EVALSHA included) until the returned unpause, or 2s at
// most (below go-redis's 3s read timeout): callers pile up, so batches form for sure.
func (e *batchEnv) pause(t *testing.T) (unpause func()) {
	t.Helper()
	ctx := context.Background()
	if err := e.admin.Do(ctx, "CLIENT", "PAUSE", 2000, "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unpause = func() {
		once.Do(func() {
			if err := e.admin.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(unpause)
	return unpause
}

// occupiers is how many calls occupy starts: the first one runs on its own goroutine (nothing
// was in flight), then one per worker.
const occupiers = 1 + scripts.Workers

// occupy makes every batch worker wait on a paused Redis, one pushed call each (the next is
// started only once the previous one is in flight, so each lands on a free worker). It
// returns the channel their results arrive on.
func (e *batchEnv) occupy(t *testing.T) <-chan error {
	t.Helper()
	done := make(chan error, occupiers)
	for i := range occupiers {
		go func() {
			_, err := pushOnline(e.s, context.Background(), "occupier"+strconv.Itoa(i), []byte("x"))
			done <- err
		}()
		wait.For(t, 5*time.Second, func() bool { return e.hook.inFlight.Load() == int64(i+1) }, "worker not busy")
	}
	return done
}

// Concurrent pushes share pipelines, and every caller gets its own answer: online for the
// subscribed users, in each caller's order, and every message is in the inbox.
func TestBatchedPushes(t *testing.T) {
	e := newBatchEnv(t)
	ctx := context.Background()
	const callers, perCaller = 64, 20
	online := func(i int) bool { return i%4 == 0 }
	var channels []string
	for i := range callers {
		if online(i) {
			channels = append(channels, e.s.Channel("u"+strconv.Itoa(i)))
		}
	}
	ps := e.admin.Subscribe(ctx, channels...)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	for range len(channels) - 1 { // one confirmation per channel
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	got := map[string][]string{} // channel → payloads
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for m := range ps.Channel() {
			mu.Lock()
			_, payload, _ := strings.Cut(m.Payload, " ") // "\x00<seq> <payload>"
			got[m.Channel] = append(got[m.Channel], payload)
			mu.Unlock()
		}
	}()

	unpause := e.pause(t)
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			user := "u" + strconv.Itoa(i)
			for j := range perCaller {
				o, err := pushOnline(e.s, ctx, user, []byte(strconv.Itoa(j)))
				if err != nil || o != online(i) {
					errs <- fmt.Errorf("%s push %d: online=%v err=%v; want online=%v", user, j, o, err, online(i))
					return
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	unpause()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.hook.longest.Load(); n < 2 {
		t.Errorf("longest pipeline %d; want concurrent pushes batched", n)
	}

	want := fmt.Sprint(seq(perCaller))
	for i := range callers {
		user := "u" + strconv.Itoa(i)
		if online(i) {
			ch := e.s.Channel(user)
			wait.For(t, 5*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got[ch]) >= perCaller
			}, "%s not all published", user)
			mu.Lock()
			if g := fmt.Sprint(got[ch]); g != want {
				t.Errorf("%s received %s; want %s", user, g, want)
			}
			mu.Unlock()
		}
		// Every push is in the inbox, published live or not.
		msgs, err := drain(e.s, ctx, user)
		if err != nil || fmt.Sprint(strs(msgs)) != want {
			t.Errorf("%s drained %q, %v; want %s", user, strs(msgs), err, want)
		}
	}
	_ = ps.Close()
	<-recvDone
}

func seq(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(i)
	}
	return out
}

func strs(b [][]byte) []string {
	out := make([]string, len(b))
	for i, x := range b {
		out[i] = string(x)
	}
	return out
}

// A Redis that lost its scripts (restart, SCRIPT FLUSH) fails a whole batch with NOSCRIPT:
// nothing ran, so the batcher loads the script and runs the calls once more — each exactly
// once, for pushes and drains.
func TestBatchNoScriptRecovery(t *testing.T) {
	e := newBatchEnv(t)
	ctx := context.Background()
	const users = 32
	// Between calls.
	for i := range 3 {
		if err := e.admin.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := pushOnline(e.s, ctx, "alice", []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("push after SCRIPT FLUSH: %v", err)
		}
	}
	if err := e.admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := drain(e.s, ctx, "alice"); err != nil || fmt.Sprint(strs(got)) != "[0 1 2]" {
		t.Fatalf("drain after SCRIPT FLUSH = %q, %v", strs(got), err)
	}

	// Inside batches: every call of the first pipeline fails with NOSCRIPT.
	run := func(what string, call func(i int) error) {
		t.Helper()
		if err := e.admin.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		e.hook.longest.Store(0)
		unpause := e.pause(t)
		var wg sync.WaitGroup
		errs := make(chan error, users)
		for i := range users {
			wg.Go(func() {
				if err := call(i); err != nil {
					errs <- err
				}
			})
		}
		time.Sleep(100 * time.Millisecond)
		unpause()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("%s: %v", what, err)
		}
		if n := e.hook.longest.Load(); n < 2 {
			t.Errorf("%s: longest pipeline %d; want batched", what, n)
		}
	}
	run("push", func(i int) error {
		o, err := pushOnline(e.s, ctx, "u"+strconv.Itoa(i), []byte("m"+strconv.Itoa(i)))
		if err != nil || o {
			return fmt.Errorf("u%d: online=%v err=%v; want stored", i, o, err)
		}
		return nil
	})
	for i := range users {
		if n, _ := pending(e.s, ctx, "u"+strconv.Itoa(i)); n != 1 {
			t.Fatalf("u%d has %d stored; want exactly 1", i, n)
		}
	}
	run("drain", func(i int) error {
		got, err := drain(e.s, ctx, "u"+strconv.Itoa(i))
		if err != nil || fmt.Sprint(strs(got)) != fmt.Sprintf("[m%d]", i) {
			return fmt.Errorf("u%d drained %q, %v; want [m%d]", i, strs(got), err, i)
		}
		return nil
	})
}

// A caller whose ctx ends before a worker took its call gets ctx.Err() at once, and its push
// never runs.
func TestBatchCallerContext(t *testing.T) {
	e := newBatchEnv(t)
	if _, err := pushOnline(e.s, context.Background(), "warm", []byte("x")); err != nil { // load the script
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := pushOnline(e.s, cancelled, "late", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("push with a cancelled ctx: %v; want context.Canceled", err)
	}
	if _, err := drain(e.s, cancelled, "late"); !errors.Is(err, context.Canceled) {
		t.Fatalf("drain with a cancelled ctx: %v; want context.Canceled", err)
	}

	unpause := e.pause(t)
	occupied := e.occupy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := pushOnline(e.s, ctx, "late", []byte("x"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("push while every worker is busy: %v; want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the caller waited %s for busy workers; want its own deadline (100ms)", took)
	}
	unpause()
	for range occupiers {
		if err := <-occupied; err != nil {
			t.Fatalf("occupier: %v", err)
		}
	}
	if n, _ := pending(e.s, context.Background(), "late"); n != 0 {
		t.Fatal("the cancelled push was stored")
	}
}

// pushOnline pushes with no id and reports whether a node took it live.
func pushOnline(s *Redis, ctx context.Context, user string, data []byte) (bool, error) {
	r, err := s.Push(ctx, user, data, PushOptions{})
	return r.Receivers > 0, err
}

// drain reads user's unacknowledged messages and acknowledges them, as a raw client's connect
// does.
func drain(s *Redis, ctx context.Context, user string) ([][]byte, error) {
	r, err := s.Read(ctx, user, -1)
	if err != nil {
		return nil, err
	}
	if len(r.Msgs) > 0 {
		if err := s.Ack(ctx, user, r.Latest); err != nil {
			return nil, err
		}
	}
	return r.Msgs, nil
}

// pending counts user's unacknowledged messages.
func pending(s *Redis, ctx context.Context, user string) (int, error) {
	r, err := s.Read(ctx, user, -1)
	return len(r.Msgs), err
}
