package faults

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// The v1 client as the fault tests drive it, and the checks of what it received.

// reader is a client.Client whose messages are collected by a goroutine of the test, which
// can stop taking them (pause) to make the client a reader that does not read.
type reader struct {
	c *client.Client

	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	msgs   []client.Message
	events []client.Event
	trail  []string // events and messages in the order they happened, for failure output
	done   chan struct{}
}

// fast fills in the options every test wants: quick reconnects and acks. The silence timeout
// stays the client's default unless the test sets one.
func fast(o client.Options) client.Options {
	if o.ReconnectMin == 0 {
		o.ReconnectMin, o.ReconnectMax = 50*time.Millisecond, 500*time.Millisecond
	}
	if o.AckDelay == 0 {
		o.AckDelay = 20 * time.Millisecond
	}
	return o
}

// newReader starts a client and its collector; with connected set it waits for the first
// connection. The client is closed in the test's cleanup.
func newReader(t *testing.T, o client.Options, connected bool) *reader {
	t.Helper()
	r := &reader{done: make(chan struct{})}
	r.cond = sync.NewCond(&r.mu)
	user := o.OnEvent
	o.OnEvent = func(e client.Event) {
		r.mu.Lock()
		r.events = append(r.events, e)
		r.trail = append(r.trail, describe(e))
		r.mu.Unlock()
		if user != nil {
			user(e)
		}
	}
	o = fast(o)
	var err error
	if connected {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		r.c, err = client.Dial(ctx, o)
		cancel()
	} else {
		r.c, err = client.New(o)
	}
	if err != nil {
		t.Fatalf("client for %s: %v", o.URL, err)
	}
	go r.collect()
	t.Cleanup(func() {
		r.resume()
		_ = r.c.Close()
		<-r.done
		if t.Failed() {
			t.Logf("client %s trail (tail): %s", o.URL, r.tail(40))
		}
	})
	return r
}

func (r *reader) collect() {
	defer close(r.done)
	for {
		r.mu.Lock()
		for r.paused {
			r.cond.Wait()
		}
		r.mu.Unlock()
		m, ok := <-r.c.Messages()
		if !ok {
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.trail = append(r.trail, strconv.FormatInt(m.Seq, 10)+" "+abbrev(m.Data))
		r.mu.Unlock()
	}
}

// pause stops taking messages after the one the collector may be waiting for: the client's
// reader then blocks, stops reading its socket, and the gateway's writes back up.
func (r *reader) pause() {
	r.mu.Lock()
	r.paused = true
	r.mu.Unlock()
}

func (r *reader) resume() {
	r.mu.Lock()
	r.paused = false
	r.mu.Unlock()
	r.cond.Broadcast()
}

func (r *reader) received() []client.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.Message(nil), r.msgs...)
}

func (r *reader) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *reader) eventsOf(typ client.EventType) []client.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []client.Event
	for _, e := range r.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func (r *reader) tail(n int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.trail
	if len(t) > n {
		t = t[len(t)-n:]
	}
	return strings.Join(t, " | ")
}

// has reports whether every payload of want arrived.
func (r *reader) has(want map[string]int64) bool {
	got := make(map[string]bool)
	for _, m := range r.received() {
		got[string(m.Data)] = true
	}
	for p := range want {
		if !got[p] {
			return false
		}
	}
	return true
}

// waitAll waits until every push l accepted arrived, then checks the delivery (checkOnce)
// from seq 1.
func (r *reader) waitAll(t *testing.T, who string, l *ledger, within time.Duration) {
	t.Helper()
	r.waitFrom(t, who, l, within, 1)
}

// waitFrom is waitAll for a client whose first message is seq first.
func (r *reader) waitFrom(t *testing.T, who string, l *ledger, within time.Duration, first int64) {
	t.Helper()
	accepted, _ := l.snapshot()
	wait.For(t, within, func() bool { return r.has(accepted) },
		"%s: not every push answered 200 arrived: %s", who, wait.Lazy(func() string { return missing(r.received(), accepted) }))
	checkOnce(t, who, r.received(), l, first)
}

// checkOnce checks what a client received against what the pushes were answered: the
// numbers run from first without a hole and without a repeat (so nothing is lost and nothing
// is delivered twice, in order); every payload arrives once, under the number its push was
// answered with; every push answered 200 is there; anything else is a push the API did not
// answer 200 (it may have been stored all the same).
func checkOnce(t *testing.T, who string, got []client.Message, l *ledger, first int64) {
	t.Helper()
	accepted, unsure := l.snapshot()
	seen := make(map[string]int64, len(got))
	want := first
	for i, m := range got {
		p := string(m.Data)
		if m.Seq != want {
			t.Fatalf("%s: message %d is seq %d (%s), want %d: a hole, a repeat or a reordering (around it: %s)",
				who, i, m.Seq, abbrev(m.Data), want, around(got, i))
		}
		want++
		if s, dup := seen[p]; dup {
			t.Fatalf("%s: payload %s arrived twice, as seq %d and %d", who, abbrev(m.Data), s, m.Seq)
		}
		seen[p] = m.Seq
		if s, ok := accepted[p]; ok && s != m.Seq {
			t.Fatalf("%s: payload %s arrived as seq %d, its push was answered seq %d", who, abbrev(m.Data), m.Seq, s)
		}
		if _, ok := accepted[p]; !ok && !unsure[p] {
			t.Fatalf("%s: payload %s (seq %d) was never pushed", who, abbrev(m.Data), m.Seq)
		}
	}
	if s := missing(got, accepted); s != "" {
		t.Fatalf("%s: pushes answered 200 never arrived: %s", who, s)
	}
}

// missing lists the accepted pushes not in got, by number.
func missing(got []client.Message, accepted map[string]int64) string {
	have := make(map[string]bool, len(got))
	for _, m := range got {
		have[string(m.Data)] = true
	}
	var seqs []int64
	for p, s := range accepted {
		if !have[p] {
			seqs = append(seqs, s)
		}
	}
	if len(seqs) == 0 {
		return ""
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if len(seqs) > 20 {
		return fmt.Sprintf("%d of %d, seqs %v … (received %d)", len(seqs), len(accepted), seqs[:20], len(got))
	}
	return fmt.Sprintf("%d of %d, seqs %v (received %d)", len(seqs), len(accepted), seqs, len(got))
}

func around(got []client.Message, i int) string {
	var parts []string
	for j := max(0, i-3); j < min(len(got), i+4); j++ {
		parts = append(parts, strconv.FormatInt(got[j].Seq, 10)+" "+abbrev(got[j].Data))
	}
	return strings.Join(parts, ", ")
}

func describe(e client.Event) string {
	switch e.Type {
	case client.EventGap:
		return fmt.Sprintf("[gap %d-%d]", e.From, e.To)
	case client.EventReset:
		return fmt.Sprintf("[reset %d]", e.Latest)
	case client.EventDisconnected:
		return fmt.Sprintf("[disconnected %d %v]", e.Code, e.Err)
	case client.EventRetry:
		return fmt.Sprintf("[retry in %v: %v]", e.Delay.Round(time.Millisecond), e.Err)
	}
	return "[" + e.Type.String() + "]"
}

// abbrev shortens a (padded) payload for messages.
func abbrev(b []byte) string {
	if i := bytes.IndexByte(b, '.'); i > 0 && len(b) > 40 {
		return string(b[:i]) + `…"`
	}
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// userURL is the /ws URL of user at addr, --dev style.
func userURL(addr, user string) string { return "ws://" + addr + "/ws?user_id=" + user }
