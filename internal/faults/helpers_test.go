package faults

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// push sends data (JSON) to user through the API at base ("http://host:port"), with push id
// id unless empty; see gwtest.Push.
func push(base, user, id, data string) (int, gwtest.PushResult, error) {
	return gwtest.Push(httpc, base, user, id, data)
}

// mustPush pushes and fails the test unless the API answered 200 with a number.
func mustPush(t *testing.T, base, user, id, data string) gwtest.PushResult {
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

// --- misc ---

func lazyInt(f func() int64) wait.Lazy {
	return func() string { return strconv.FormatInt(f(), 10) }
}
