package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

func TestCloseCodesThatStopTheClient(t *testing.T) {
	for _, code := range []int{4001, 1007, 1008, 1009} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			g, rec := newFake(t), &recorder{}
			c := start(t, fastOptions(g, rec))
			g.conn(0) // recorded by the fake, so that closeAll finds it
			g.closeAll(code)
			waitClosed(t, c)
			var ce *websocket.CloseError
			if err := c.Err(); !errors.As(err, &ce) || ce.Code != code {
				t.Fatalf("Err() = %v, want a *websocket.CloseError with code %d", err, code)
			}
			if n := g.numConns(); n != 1 {
				t.Fatalf("%d connections: the client came back after %d", n, code)
			}
			if d := rec.of(EventDisconnected); len(d) != 1 || d[0].Code != code {
				t.Fatalf("disconnected events %+v, want one with code %d", d, code)
			}
		})
	}
}

func TestCloseCodesThatReconnect(t *testing.T) {
	for _, code := range []int{1000, 1001, 1011, 1013, 4002} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			g, rec := newFake(t), &recorder{}
			c := start(t, fastOptions(g, rec))
			g.push("before")
			expect(t, c, "1 before")
			g.closeAll(code)
			rec.waitFor(t, EventConnected, 2)
			if d := rec.of(EventDisconnected)[0]; d.Code != code || d.Reason != "closed by the test" {
				t.Fatalf("disconnected event %+v, want code %d with the reason", d, code)
			}
			g.push("after")
			expect(t, c, "2 after")
		})
	}
}

func TestBackoffIsBoundedAndJittered(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	g.set(func(g *fakeGateway) { g.refuse = http.StatusServiceUnavailable })
	opts := fastOptions(g, rec)
	opts.ReconnectMin, opts.ReconnectMax = 2*time.Millisecond, 16*time.Millisecond
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	retries := rec.waitFor(t, EventRetry, 12)
	g.set(func(g *fakeGateway) { g.refuse = 0 })
	rec.waitFor(t, EventConnected, 1)

	distinct := map[time.Duration]bool{}
	for i, e := range retries {
		var he *HandshakeError
		if !errors.As(e.Err, &he) || he.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("retry %d: Err = %v, want the HTTP 503", i, e.Err)
		}
		// Attempts count 0, 1, 2, 3 and stay at 3, where 2ms·2³ reaches the 16ms cap.
		if want := min(i, 3); e.Attempt != want {
			t.Fatalf("retry %d: Attempt %d, want %d", i, e.Attempt, want)
		}
		ceiling := min(opts.ReconnectMax, opts.ReconnectMin<<e.Attempt)
		if e.Delay < 0 || e.Delay >= ceiling {
			t.Fatalf("retry %d: Delay %v outside [0, %v)", i, e.Delay, ceiling)
		}
		distinct[e.Delay] = true
	}
	if len(distinct) < 2 {
		t.Fatalf("every delay was %v: no jitter", retries[0].Delay)
	}
}

func TestBackoffStartsAgainAfterAStableConnection(t *testing.T) {
	for _, tc := range []struct {
		stableAfter time.Duration
		fresh       bool
	}{{time.Nanosecond, true}, {time.Hour, false}} {
		t.Run(tc.stableAfter.String(), func(t *testing.T) {
			g, rec := newFake(t), &recorder{}
			g.set(func(g *fakeGateway) { g.refuse = http.StatusServiceUnavailable })
			opts := fastOptions(g, rec)
			opts.ReconnectMin, opts.ReconnectMax = time.Millisecond, time.Second
			opts.StableAfter = tc.stableAfter
			c, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rec.waitFor(t, EventRetry, 3)
			g.set(func(g *fakeGateway) { g.refuse = 0 })
			rec.waitFor(t, EventConnected, 1)
			failures := len(rec.of(EventRetry))
			g.conn(0)
			g.drop()
			after := rec.waitFor(t, EventRetry, failures+1)[failures]
			if fresh := after.Attempt == 0; fresh != tc.fresh {
				t.Fatalf("after %d failures and a connection, Attempt %d: want a fresh start %v",
					failures, after.Attempt, tc.fresh)
			}
		})
	}
}

func TestBackoffNeverOverflows(t *testing.T) {
	for _, attempt := range []int{0, 1, 40, 62, 63, 64, 1000} {
		if d := backoff(attempt, time.Second, 30*time.Second); d < 0 || d >= 30*time.Second {
			t.Fatalf("backoff(%d) = %v", attempt, d)
		}
	}
}

func TestDialStopsAtAPermanentRefusal(t *testing.T) {
	g := newFake(t)
	g.set(func(g *fakeGateway) { g.refuse = http.StatusForbidden })
	_, err := Dial(context.Background(), Options{URL: g.url()})
	var he *HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusForbidden {
		t.Fatalf("Dial: %v, want a HandshakeError with 403", err)
	}
}

func TestDialGivesUpWithItsContext(t *testing.T) {
	g := newFake(t)
	g.set(func(g *fakeGateway) { g.refuse = http.StatusServiceUnavailable })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, Options{URL: g.url(), ReconnectMin: time.Millisecond, ReconnectMax: 5 * time.Millisecond})
	var he *HandshakeError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &he) || he.StatusCode != 503 {
		t.Fatalf("Dial: %v, want the deadline and the last attempt's 503", err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{URL: "ftp://host/ws"},
		{URL: "/ws"},
		{URL: "ws://host/ws", ReconnectMin: time.Second, ReconnectMax: time.Millisecond},
		{URL: "ws://host/ws", Since: -1},
		{URL: "ws://host/ws", SilenceTimeout: -time.Second},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func TestSilentConnectionIsDroppedAndResumed(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	opts := fastOptions(g, rec)
	opts.SilenceTimeout = 600 * time.Millisecond
	c := start(t, opts)
	g.push("a")
	expect(t, c, "1 a")

	g.mute() // the socket stays open, but nothing comes through any more
	g.push("b")
	d := rec.waitFor(t, EventDisconnected, 1)[0]
	if !errors.Is(d.Err, ErrSilent) || d.Code != 1006 {
		t.Fatalf("disconnected event %+v, want ErrSilent with 1006", d)
	}
	expect(t, c, "2 b") // the resume from 1 brings it
	first := g.conn(0)
	g.set(func(*fakeGateway) {
		if first.pings == 0 {
			t.Errorf("the client never pinged the silent connection before giving up")
		}
	})
}

func TestSlowApplicationIsNotSilence(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	opts := fastOptions(g, rec)
	opts.SilenceTimeout = 600 * time.Millisecond
	c := start(t, opts)
	g.push("a")
	g.push("b")
	expect(t, c, "1 a")
	// The application sits on "a" for longer than SilenceTimeout: three pings go out (one
	// every 200ms) while the reader waits to hand over "b".
	first := g.conn(0)
	wait.For(t, patience, func() bool {
		var n int
		g.set(func(*fakeGateway) { n = first.pings })
		return n >= 3
	}, "three pings while the application is busy")
	expect(t, c, "2 b")
	g.push("c")
	expect(t, c, "3 c")
	if d := rec.of(EventDisconnected); len(d) != 0 {
		t.Fatalf("disconnected %+v: a slow application was taken for a dead connection", d)
	}
}

func TestPingKeepsAQuietConnectionAlive(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	opts := fastOptions(g, rec)
	opts.SilenceTimeout = 3 * time.Second // a ping a second
	c := start(t, opts)
	// Four pings span more than SilenceTimeout: only the pongs kept the connection.
	first := g.conn(0)
	wait.For(t, patience, func() bool {
		var n int
		g.set(func(*fakeGateway) { n = first.pings })
		return n >= 4
	}, "four pings on the first connection")
	if n := g.numConns(); n != 1 {
		t.Fatalf("%d connections: a quiet connection was dropped (events %+v)", n, rec.of(EventDisconnected))
	}
	select {
	case m := <-c.Messages():
		t.Fatalf("got %+v: a pong must not be delivered", m)
	default:
	}
}

func TestTokenIsRefreshedInBand(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	g.set(func(g *fakeGateway) { g.enforceExp = true })
	var calls atomic.Int32
	opts := fastOptions(g, rec)
	// 4s tokens are refreshed a quarter of their life, one second, before exp.
	opts.Token = func(context.Context) (string, error) {
		calls.Add(1)
		return makeToken("alice", time.Now().Add(4*time.Second)), nil
	}
	start(t, opts)
	var auths []string
	first := g.conn(0)
	wait.For(t, patience, func() bool {
		g.set(func(*fakeGateway) { auths = first.auths })
		return len(auths) >= 1
	}, "an auth frame on the first connection")
	was, _ := tokenExpiry(first.token)
	next, _ := tokenExpiry(auths[0])
	if !next.After(was) {
		t.Fatalf("the refresh carried exp %v, not later than %v", next, was)
	}
	if n, c := g.numConns(), calls.Load(); n != 1 || c != 2 {
		t.Fatalf("%d connections and %d Token calls, want 1 and 2", n, c)
	}
}

func TestExpiredTokenReconnectsWithANewOne(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	g.set(func(g *fakeGateway) { g.enforceExp = true })
	short := makeToken("alice", time.Now().Add(1500*time.Millisecond))
	long := makeToken("alice", time.Now().Add(time.Hour))
	var calls atomic.Int32
	opts := fastOptions(g, rec)
	opts.Token = func(context.Context) (string, error) {
		if calls.Add(1) <= 2 {
			return short, nil // the refresh gets the same token again: nothing to send
		}
		return long, nil
	}
	start(t, opts)
	rec.waitFor(t, EventConnected, 2)
	if d := rec.of(EventDisconnected)[0]; d.Code != 4002 {
		t.Fatalf("disconnected event %+v, want 4002", d)
	}
	first, second := g.conn(0), g.conn(1)
	g.set(func(*fakeGateway) {
		if len(first.auths) != 0 {
			t.Errorf("auth frames %d: an unchanged token was sent again", len(first.auths))
		}
		if second.token != long {
			t.Errorf("the reconnect did not use a new token")
		}
	})
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	cases := map[string]func(t *testing.T, g *fakeGateway, opts *Options) (ready func() bool){
		"connected": func(t *testing.T, g *fakeGateway, opts *Options) func() bool {
			return func() bool { return g.numConns() == 1 }
		},
		"waiting to retry": func(t *testing.T, g *fakeGateway, opts *Options) func() bool {
			g.set(func(g *fakeGateway) { g.refuse = http.StatusServiceUnavailable })
			opts.ReconnectMin, opts.ReconnectMax = time.Hour, time.Hour
			var retried atomic.Bool
			opts.OnEvent = func(e Event) { retried.Store(retried.Load() || e.Type == EventRetry) }
			return retried.Load
		},
		"blocked delivering": func(t *testing.T, g *fakeGateway, opts *Options) func() bool {
			g.push("never read")
			g.push("never read either")
			return func() bool { return g.numConns() == 1 }
		},
		"inside Token": func(t *testing.T, g *fakeGateway, opts *Options) func() bool {
			var entered atomic.Bool
			opts.Token = func(ctx context.Context) (string, error) {
				entered.Store(true)
				<-ctx.Done()
				return "", ctx.Err()
			}
			return entered.Load
		},
		"in a handshake that never ends": func(t *testing.T, g *fakeGateway, opts *Options) func() bool {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var accepted atomic.Bool
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // accepts and says nothing
				defer wg.Done()
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Store(true)
				_, _ = conn.Read(make([]byte, 1<<16))
				conn.Close()
			}()
			t.Cleanup(func() { ln.Close(); wg.Wait() })
			opts.URL = "ws://" + ln.Addr().String() + "/ws"
			opts.SilenceTimeout = time.Hour // Close must not wait for the attempt's deadline
			return accepted.Load
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			// Cleanups run last-in first-out: this check runs after the fake is gone.
			before := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, before) })
			g := newFake(t)
			opts := fastOptions(g, &recorder{})
			ready := setup(t, g, &opts)
			c, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			wait.For(t, patience, ready, "the client to reach the state")
			closed := make(chan struct{})
			go func() { c.Close(); close(closed) }()
			timer := time.NewTimer(patience)
			defer timer.Stop()
			select {
			case <-closed:
			case <-timer.C:
				t.Fatalf("Close did not return within %v", patience)
			}
			if _, ok := <-c.Messages(); ok {
				t.Fatalf("Messages still open after Close")
			}
			if err := c.Err(); err != nil {
				t.Fatalf("Err() = %v after Close, want nil", err)
			}
		})
	}
}
