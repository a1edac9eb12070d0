package ws

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const numShards = 64 // as centrifuge: enough to make shard-lock contention vanish at 2–64 cores

// Hub is this node's registry of user → connections. The maps are sharded by user id; under a
// shard lock only map operations and non-blocking enqueues happen. Subscribing and
// unsubscribing a user at Redis happens outside the locks, serialized per user by the
// user entry's states (subscribing via ready, unsubscribing via leaving).
type Hub struct {
	cfg      Config
	bus      Subscriber
	inbox    Inbox
	presence Presence
	upstream Upstream
	auth     Authenticator // set by NewHandler; checks "auth <jwt>" refreshes
	obs      Observer
	log      *slog.Logger
	now      func() time.Time

	seed     maphash.Seed
	shards   [numShards]shard
	nextID   atomic.Uint64
	draining atomic.Bool
	stopping chan struct{}  // closed when Shutdown begins; /ws/echo connections watch it
	conns    sync.WaitGroup // one per registered connection, done after its clean-up
	fills    filler
	acks     acker
	admit    admission
	// pingers are one timer per shard, staggered over the ping interval, instead of a ticker
	// per connection: an idle connection then needs no goroutine or timer of its own.
	pingers [numShards]*time.Timer
	// poll parks idle connections in epoll (Linux); nil until the first connection, and
	// when it is not available (pollErr), every connection keeps a reader goroutine.
	pollMu  sync.Mutex
	poll    *poller
	pollErr error
	born    time.Time // for clock
}

type shard struct {
	mu    sync.Mutex
	users map[string]*userEntry
}

// userEntry is one user's connections on this node.
type userEntry struct {
	conns []*Conn
	// ready is closed when the subscription is confirmed (subErr tells whether it failed).
	ready  chan struct{}
	subErr error
	// leaving is non-nil while the entry's unsubscribe is in flight (the last connection left,
	// or the subscribe failed): a new connection of the user waits for it, so that its
	// SUBSCRIBE cannot reach Redis before that UNSUBSCRIBE and be undone by it.
	leaving chan struct{}
	// maxSeen is the highest number that arrived live for the user. A connection that was
	// catching up compares it with its position afterwards: what it skipped meanwhile may be
	// newer than what it read (fill.go).
	maxSeen int64
}

// EnvNoEpoll, set to 1, makes every connection keep its own reader goroutine instead of
// being parked in epoll when idle: the portable path, which non-Linux systems always take.
// `make test` runs the WebSocket suites both ways.
const EnvNoEpoll = "WSGATEWAY_NO_EPOLL"

// NewHub returns a hub; the HTTP side is added with NewHandler.
func NewHub(cfg Config, d Deps) *Hub {
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = time.Second
	}
	if cfg.SubscribeTimeout <= 0 {
		cfg.SubscribeTimeout = 5 * time.Second
	}
	h := &Hub{
		cfg: cfg, bus: d.Bus, inbox: d.Inbox, presence: d.Presence, upstream: d.Upstream,
		obs: d.Observer, log: d.Logger, now: d.Now, seed: maphash.MakeSeed(),
		stopping: make(chan struct{}), born: time.Now(),
	}
	if h.obs == nil {
		h.obs = nopObserver{}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	for i := range h.shards {
		h.shards[i].users = make(map[string]*userEntry)
	}
	h.fills.h = h
	h.acks.start(h)
	if os.Getenv(EnvNoEpoll) == "1" {
		h.pollErr = errors.New("disabled by " + EnvNoEpoll)
	}
	h.startPingers()
	return h
}

// prepark readies c for the poller: its idle timer, made before c.start so that every
// goroutine that may touch it (writers via closeRead) sees it. False: c keeps its own reader.
func (h *Hub) prepark(c *Conn) bool {
	if c.br == nil || h.cfg.PingInterval+h.cfg.PongTimeout <= 0 {
		return false
	}
	if c.raw = rawConn(c.ws.NetConn()); c.raw == nil {
		return false
	}
	h.pollMu.Lock()
	if h.poll == nil && h.pollErr == nil && !h.draining.Load() {
		h.poll, h.pollErr = newPoller()
		if h.pollErr != nil {
			h.log.Warn("epoll unavailable, one reader goroutine per connection", "err", h.pollErr)
		}
	}
	ok := h.poll != nil
	h.pollMu.Unlock()
	if !ok {
		return false
	}
	wait := h.cfg.PingInterval + h.cfg.PongTimeout
	c.seen.Store(h.clock())
	c.idle = time.AfterFunc(wait, c.expire)
	return true
}

// park puts c, started and with its read handlers set, into the poller. False: c needs its
// own reader goroutine (the poller stopped, or the socket is already closed: the reader
// then finds that out).
func (h *Hub) park(c *Conn) bool {
	if err := h.poll.add(c); err != nil {
		c.idle.Stop()
		return false
	}
	return true
}

// clock is the monotonic time since the hub was made, in nanoseconds: the idle timers' base,
// which a step of the wall clock cannot move.
func (h *Hub) clock() int64 { return int64(time.Since(h.born)) }

// stopPoll stops the poller once every connection ended (Shutdown).
func (h *Hub) stopPoll() {
	h.pollMu.Lock()
	p := h.poll
	h.pollMu.Unlock()
	if p != nil {
		p.stop()
	}
}

// Draining reports whether Shutdown began.
func (h *Hub) Draining() bool { return h.draining.Load() }

// Shutdown refuses new connections, closes every connection with 1001 and waits until each has
// ended and recorded its position, or until ctx ends. Each connection's own writer sends its close
// frame, so the closes run in parallel, each bounded by write-timeout + close grace.
func (h *Hub) Shutdown(ctx context.Context) error {
	if !h.draining.Swap(true) {
		close(h.stopping)
		for _, t := range h.pingers {
			if t != nil {
				t.Stop()
			}
		}
	}
	h.forEachConn(func(c *Conn) { c.closeWith(1001, "node shutting down", ReasonShutdown) })
	done := make(chan struct{})
	go func() {
		h.conns.Wait()
		h.fills.wait()
		h.acks.stop(ctx)
		h.stopPoll()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
