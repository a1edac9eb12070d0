package client

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// patience bounds every wait: far above what any step needs, so that only a real failure,
// not a loaded CI machine, ends a test.
const patience = 15 * time.Second

// recorder keeps the events a client reports.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// of returns the events of type typ so far.
func (r *recorder) of(typ EventType) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// waitFor waits until n events of type typ were seen and returns them.
func (r *recorder) waitFor(t *testing.T, typ EventType, n int) []Event {
	t.Helper()
	wait.For(t, patience, func() bool { return len(r.of(typ)) >= n }, "%d %v event(s)", n, typ)
	return r.of(typ)
}

// fastOptions are options for tests: quick retries, acks and a silence timeout long enough
// that a loaded machine never trips it by accident.
func fastOptions(g *fakeGateway, rec *recorder) Options {
	return Options{
		URL:            g.url(),
		AckDelay:       5 * time.Millisecond,
		ReconnectMin:   5 * time.Millisecond,
		ReconnectMax:   50 * time.Millisecond,
		SilenceTimeout: 10 * time.Second,
		OnEvent:        rec.add,
	}
}

// start dials with opts and closes the client when the test ends.
func start(t *testing.T, opts Options) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c, err := Dial(ctx, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv takes the next message.
func recv(t *testing.T, c *Client) Message {
	t.Helper()
	timer := time.NewTimer(patience)
	defer timer.Stop()
	select {
	case m, ok := <-c.Messages():
		if !ok {
			t.Fatalf("Messages closed while a message was awaited (Err: %v)", c.Err())
		}
		return m
	case <-timer.C:
		t.Fatalf("no message within %v", patience)
	}
	return Message{}
}

// expect receives len(want) numbered messages and checks their seqs and payloads.
func expect(t *testing.T, c *Client, want ...string) {
	t.Helper()
	for _, w := range want {
		m := recv(t, c)
		if got := strconv.FormatInt(m.Seq, 10) + " " + string(m.Data); got != w {
			t.Fatalf("got message %q, want %q", got, w)
		}
	}
}

// waitClosed waits until Messages is closed, draining what is left.
func waitClosed(t *testing.T, c *Client) {
	t.Helper()
	timer := time.NewTimer(patience)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-c.Messages():
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("Messages not closed within %v", patience)
		}
	}
}
