package inbox

// How the batcher ends: Close with calls waiting and in flight, and Close of an unused store.

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/scripts"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
)

// Close answers the calls still waiting for a worker with scripts.ErrClosed, lets the batches in flight
// finish, and leaves no goroutine behind; calls after Close fail at once.
func TestBatchClose(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	leaks := goleak.IgnoreCurrent()
	hook := &pipeHook{}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	rdb.AddHook(hook)
	e := &batchEnv{srv: srv, admin: admin, rdb: rdb, hook: hook, s: NewRedis(rdb, Options{Prefix: redistest.Prefix(t), Max: 10})}
	ctx := context.Background()

	unpause := e.pause(t)
	occupied := e.occupy(t)
	const waiting = 10
	waited := make(chan error, waiting)
	for i := range waiting {
		go func() {
			_, err := pushOnline(e.s, ctx, "waiting"+strconv.Itoa(i), []byte("x"))
			waited <- err
		}()
	}
	closed := make(chan struct{})
	go func() {
		e.s.Close()
		close(closed)
	}()
	for range waiting {
		select {
		case err := <-waited:
			if !errors.Is(err, scripts.ErrClosed) {
				t.Errorf("waiting caller: %v; want scripts.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiting caller hangs after Close")
		}
	}
	select {
	case <-closed:
		t.Fatal("Close returned before the batches in flight were answered")
	default:
	}
	unpause()
	for range occupiers {
		if err := <-occupied; err != nil {
			t.Errorf("call in flight at Close: %v; want its result", err)
		}
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	e.s.Close() // again: nothing happens

	if _, err := pushOnline(e.s, ctx, "after", []byte("x")); !errors.Is(err, scripts.ErrClosed) {
		t.Errorf("push after Close: %v; want scripts.ErrClosed", err)
	}
	start := time.Now()
	if _, err := drain(e.s, ctx, "after"); !errors.Is(err, scripts.ErrClosed) {
		t.Errorf("drain after Close: %v; want scripts.ErrClosed", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("drain after Close took %s; want no retries", took)
	}
	for i := range waiting {
		if n, _ := pending(e.s, ctx, "waiting"+strconv.Itoa(i)); n != 0 {
			t.Errorf("waiting%d: a call refused with scripts.ErrClosed was stored", i)
		}
	}
	_ = rdb.Close()
	goleak.VerifyNone(t, leaks)
}

// A store that was never used starts no goroutine, and Close works on it.
func TestBatchCloseUnused(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	s := NewRedis(rdb, Options{Max: 10})
	s.Close()
	if _, err := pushOnline(s, context.Background(), "alice", []byte("x")); !errors.Is(err, scripts.ErrClosed) {
		t.Fatalf("push after Close: %v; want scripts.ErrClosed", err)
	}
	_ = rdb.Close()
	goleak.VerifyNone(t, leaks)
}
