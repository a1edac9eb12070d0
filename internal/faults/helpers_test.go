package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// Deadlines are generous: CI runs this package with -race on a loaded 2-core machine. A
// healthy run meets every condition long before; a deadline only bounds a failure.
const (
	timeout      = 20 * time.Second // any condition that should hold soon
	httpTimeout  = 10 * time.Second // one API call
	shutdownWait = 15 * time.Second // one node's Shutdown
)

// transport is shared by every API call of the package; TestMain closes its idle connections
// before goleak looks.
var (
	transport = &http.Transport{MaxIdleConnsPerHost: 16}
	httpc     = &http.Client{Transport: transport, Timeout: httpTimeout}
)

// --- nodes ---

// node is one in-process gateway.
type node struct{ *gwtest.Node }

// onRedis points a node at rs with the test's key prefix.
func onRedis(rs *redistest.Server, prefix string) func(*config.Config) {
	return func(c *config.Config) {
		c.RedisURL = rs.URL()
		c.KeyPrefix = prefix
	}
}

// startNode boots a gateway node on 127.0.0.1:0 with --dev semantics (?user_id= accepted, API
// open), with set applied to its config and opt as its test hooks (zero probe settings get
// a probe every 200ms that may stay away 3s), and waits until /readyz answers 200. It is shut
// down in the test's cleanup; its log is shown if the test failed.
func startNode(t *testing.T, id string, set func(*config.Config), opt server.Options) *node {
	t.Helper()
	return &node{gwtest.Start(t, id, gwtest.Options{
		Config: set, Server: opt, Ready: timeout, ShutdownWait: shutdownWait, LogTail: 80,
	})}
}

// --- pushes ---

// answer is one user's result of POST /api/v1/push.
type answer struct {
	Seq       int64  `json:"seq"`
	Online    bool   `json:"online"`
	Queued    bool   `json:"queued"`
	Duplicate bool   `json:"duplicate"`
	Error     string `json:"error"`
}

// push sends data (JSON) to user through the API at base ("http://host:port"), with push id
// id unless empty. It is safe from any goroutine; the caller decides what a failure means.
func push(base, user, id, data string) (int, answer, error) {
	body := `{"user_id":` + strconv.Quote(user) + `,"data":` + data
	if id != "" {
		body += `,"id":` + strconv.Quote(id)
	}
	body += "}"
	resp, err := httpc.Post(base+"/api/v1/push", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp.StatusCode, answer{}, err
	}
	var out struct {
		Results []answer `json:"results"`
	}
	if err := json.Unmarshal(b, &out); err != nil || len(out.Results) != 1 {
		return resp.StatusCode, answer{}, fmt.Errorf("push answer %s: %v", b, err)
	}
	return resp.StatusCode, out.Results[0], nil
}

// mustPush pushes and fails the test unless the API answered 200 with a number.
func mustPush(t *testing.T, base, user, id, data string) answer {
	t.Helper()
	code, a, err := push(base, user, id, data)
	if err != nil || code != http.StatusOK || a.Seq == 0 {
		t.Fatalf("push %s to %s via %s: status %d, %+v, %v", data, user, base, code, a, err)
	}
	return a
}

// ledger is what the pushes to one user were answered: the payloads the API accepted with 200,
// each with its number, and those it did not (503, a transport error), which may or may not
// have been stored and so may arrive, but at most once.
type ledger struct {
	mu       sync.Mutex
	accepted map[string]int64 // payload → seq
	unsure   map[string]bool
}

func newLedger() *ledger {
	return &ledger{accepted: map[string]int64{}, unsure: map[string]bool{}}
}

func (l *ledger) accept(payload string, seq int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.unsure, payload)
	l.accepted[payload] = seq
}

func (l *ledger) fail(payload string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unsure[payload] = true
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

// snapshot copies the ledger.
func (l *ledger) snapshot() (accepted map[string]int64, unsure map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	accepted, unsure = make(map[string]int64, len(l.accepted)), make(map[string]bool, len(l.unsure))
	for k, v := range l.accepted {
		accepted[k] = v
	}
	for k := range l.unsure {
		unsure[k] = true
	}
	return accepted, unsure
}

// pusher pushes to its users at a steady rate from its own goroutine: push i goes to
// users[i%len(users)] through bases[i%len(bases)], with payload "<tag>-<i>" (a JSON string,
// padded to pad bytes when pad is set) and push id "<tag>-<i>". Each push is made after the
// previous one was answered, so for each user there is one publisher and the order guarantee
// applies.
type pusher struct {
	bases, users []string
	tag          string
	every        time.Duration
	pad          int
	// retry pushes again with the same id, until 200, after a 502, 503 or transport error: a
	// push that reached a node that then died may have been stored, and only its id tells.
	retry   bool
	ledgers map[string]*ledger

	sent  atomic.Int64 // pushes answered 200
	tried atomic.Int64 // pushes made, whatever the answer
	stopc chan struct{}
	done  chan struct{}
	err   error // why a retrying pusher gave up; read after done
}

func startPusher(t *testing.T, p *pusher) *pusher {
	t.Helper()
	p.stopc, p.done = make(chan struct{}), make(chan struct{})
	if p.ledgers == nil {
		p.ledgers = map[string]*ledger{}
	}
	for _, u := range p.users {
		if p.ledgers[u] == nil {
			p.ledgers[u] = newLedger()
		}
	}
	t.Cleanup(p.stop)
	go p.run()
	return p
}

// payload is push i's data: a JSON string.
func (p *pusher) payload(i int) string {
	s := p.tag + "-" + strconv.Itoa(i)
	if len(s) < p.pad {
		s += "." + strings.Repeat("x", p.pad-len(s)-1)
	}
	return strconv.Quote(s)
}

func (p *pusher) run() {
	defer close(p.done)
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for i := 1; ; i++ {
		select {
		case <-p.stopc:
			return
		case <-tick.C:
		}
		user, base := p.users[i%len(p.users)], p.bases[i%len(p.bases)]
		id, data := p.tag+"-"+strconv.Itoa(i), p.payload(i)
		l := p.ledgers[user]
		giveUp := time.Now().Add(timeout)
		for {
			p.tried.Add(1)
			code, a, err := push(base, user, id, data)
			if err == nil && code == http.StatusOK {
				l.accept(data, a.Seq)
				p.sent.Add(1)
				break
			}
			l.fail(data)
			if !p.retry {
				break
			}
			if time.Now().After(giveUp) {
				p.err = fmt.Errorf("push %s to %s via %s: no 200 within %v (last: %d, %v)", id, user, base, timeout, code, err)
				return
			}
			select {
			case <-p.stopc:
				return
			case <-tick.C: // the retry keeps the pace
			}
		}
	}
}

// stop ends the pusher after the push in flight; it may be called more than once.
func (p *pusher) stop() {
	select {
	case <-p.stopc:
	default:
		close(p.stopc)
	}
	<-p.done
}

// check stops the pusher and fails the test if a retrying pusher gave up.
func (p *pusher) check(t *testing.T) {
	t.Helper()
	p.stop()
	if p.err != nil {
		t.Fatalf("pusher: %v", p.err)
	}
}

// waitSent waits until n more pushes than before were answered 200.
func (p *pusher) waitSent(t *testing.T, n int64, what string) {
	t.Helper()
	target := p.sent.Load() + n
	wait.For(t, 2*timeout, func() bool { return p.sent.Load() >= target },
		"%s: %s pushes answered 200, want %d (%s tried)", what, lazyInt(p.sent.Load), target, lazyInt(p.tried.Load))
}

// --- the v1 client ---

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
		"%s: not every push answered 200 arrived: %s", who, lazy(func() string { return missing(r.received(), accepted) }))
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

// --- misc ---

// lazy formats as the result of calling it: wait.For formats its message only when it gives
// up, so a lazy argument shows the state at the deadline rather than at the start.
type lazy func() string

func (l lazy) String() string { return l() }

func lazyInt(f func() int64) lazy {
	return func() string { return strconv.FormatInt(f(), 10) }
}
