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

// Subscriber is what the hub needs from the fan-out layer (internal/bus). Both calls return
// once the subscription change is confirmed: after Subscribe returns, every message published
// to the user reaches Hub.Deliver; after Unsubscribe returns, none does any more.
type Subscriber interface {
	Subscribe(ctx context.Context, user string) error
	Unsubscribe(ctx context.Context, user string) error
}

// Inbox is what the hub needs from the user's message store (internal/inbox).
type Inbox interface {
	// Read returns the user's numbers and the kept messages after position after (-1: after
	// the acknowledged position).
	Read(ctx context.Context, user string, after int64) (Backlog, error)
	// Ack moves the user's acknowledged position forward to seq.
	Ack(ctx context.Context, user string, seq int64) error
}

// Backlog is what Inbox.Read found.
type Backlog struct {
	Latest int64 // the user's latest number; 0 when the user has no state
	First  int64 // the oldest kept number (Latest+1 when none is kept)
	Acked  int64 // the acknowledged position
	Start  int64 // the number of Msgs[0]
	Msgs   [][]byte
}

// Upstream receives what clients send (the README's ws:upstream). Nil drops it after the checks.
// Append runs on the connection's read path: it must not block (upstream.Queue only queues).
type Upstream interface {
	Append(ctx context.Context, user string, data []byte) error
}

// Observer is told what happens, for metrics. Every method must be cheap and non-blocking.
type Observer interface {
	ConnOpened()
	ConnClosed(reason string, d time.Duration)
	Refused(status int)
	Delivered(received time.Time)
	Dropped(reason string, n int)
	SlowConsumer()
	QueueDepth(n int)
	FlushedOffline(n int)
	Inbound(bytes int)
}

// Config holds the hub's settings; see the README's settings table for their meaning.
type Config struct {
	PingInterval    time.Duration
	PongTimeout     time.Duration
	WriteTimeout    time.Duration
	MaxMessageBytes int64
	SendQueue       int
	MaxConnsPerUser int
	OfflineMax      int
	AllowedOrigins  []string // "*" allows any; empty allows the request's own host only
	// MaxInboundRate is the inbound messages per second per connection (bursts of twice
	// that); over it the connection is closed with 1008. 0 = no limit.
	MaxInboundRate float64
	MaxConns       int // connections per node, 0 = no cap; beyond → 503
	// EnforceTokenExpiry closes a connection with 4002 when its token's exp passes, unless
	// a wsgateway.v1 client refreshed it in-band ("auth <jwt>").
	EnforceTokenExpiry bool
	MaxConnsPerIP  int // connections per remote address, 0 = no cap; beyond → 429
	// CloseGrace is how long the writer waits for the client's answer to a close frame
	// before it closes the socket. Default 1s.
	CloseGrace time.Duration
	// SubscribeTimeout bounds the subscription of a user's first connection. Default 5s.
	SubscribeTimeout time.Duration
}

// Errors of Register, each mapped to its HTTP status by the handler.
var (
	ErrTooManyConns = errors.New("ws: too many connections for this user") // 429
	ErrDraining     = errors.New("ws: node is draining")                   // 503
	ErrUnavailable  = errors.New("ws: fan-out unavailable")                // 503
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

// Deps are the hub's collaborators. Bus and Inbox are required.
type Deps struct {
	Bus      Subscriber
	Inbox    Inbox
	Upstream Upstream
	Observer Observer
	Logger   *slog.Logger
	Now      func() time.Time
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
		cfg: cfg, bus: d.Bus, inbox: d.Inbox, upstream: d.Upstream,
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
	if cfg.PingInterval > 0 {
		// Each shard's timer fires slots times per interval and pings the connections whose
		// id falls in that slot: 64 × slots evenly spaced rounds per interval. One round per
		// shard per interval pinged ~160 of 10,000 connections at once, ~5 ms of writes and
		// pong reads on one core, which showed in the delivery p99. The period stays at least
		// 64 ms, so a short test ping-interval does not turn into thousands of timers a second.
		slots := pingSlots(cfg.PingInterval)
		period := cfg.PingInterval / time.Duration(slots)
		for i := range h.shards {
			sh := &h.shards[i]
			first := period * time.Duration(i+1) / numShards
			round := 0
			var t *time.Timer
			t = time.AfterFunc(time.Hour, func() {
				if h.draining.Load() {
					return // Shutdown closes every connection; no more pings
				}
				h.pingShard(sh, round, slots)
				round = (round + 1) % slots
				if !h.draining.Load() {
					t.Reset(period)
				}
			})
			t.Reset(first) // after t and round are set: the callback uses them
			h.pingers[i] = t
		}
	}
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

// maxPingSlots is how many rounds each shard's ping timer splits one interval into.
const maxPingSlots = 16

// pingSlots is the number of ping rounds per shard and interval: up to maxPingSlots, fewer
// when that would make a shard's timer fire more often than every 64 ms.
func pingSlots(interval time.Duration) int {
	return int(min(maxPingSlots, max(1, interval/(64*time.Millisecond))))
}

// pingShard asks the connections of sh in ping slot round (of slots) for a ping; their writers
// send it. A connection is pinged once per ping interval, its first time within one interval
// of its connect.
func (h *Hub) pingShard(sh *shard, round, slots int) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, u := range sh.users {
		for _, c := range u.conns {
			if int(c.id%uint64(slots)) != round {
				continue
			}
			c.mu.Lock()
			c.pingLocked()
			c.mu.Unlock()
		}
	}
}

func (h *Hub) shardOf(user string) *shard {
	return &h.shards[maphash.String(h.seed, user)%numShards]
}

// register adds c to its user. The first connection of a user subscribes (outside the lock);
// the others wait for that subscription. A user whose last connection is still unsubscribing
// waits until that unsubscribe is confirmed, so the two reach Redis in order. The new connection
// starts catching up (filling): live messages wait for its initial read (Handler.ServeHTTP).
func (h *Hub) register(ctx context.Context, c *Conn) error {
	sh := h.shardOf(c.user)
	for {
		sh.mu.Lock()
		if h.draining.Load() {
			sh.mu.Unlock()
			return ErrDraining
		}
		u := sh.users[c.user]
		if u != nil && u.leaving != nil {
			leaving := u.leaving
			sh.mu.Unlock()
			select {
			case <-leaving:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if u != nil && len(u.conns) >= h.cfg.MaxConnsPerUser {
			sh.mu.Unlock()
			return ErrTooManyConns
		}
		first := u == nil
		if first {
			u = &userEntry{ready: make(chan struct{})}
			sh.users[c.user] = u
		}
		u.conns = append(u.conns, c)
		c.filling = true // live messages wait in c.pending until the connection has read its start
		h.conns.Add(1)
		sh.mu.Unlock()

		if first {
			sctx, cancel := context.WithTimeout(ctx, h.cfg.SubscribeTimeout)
			err := h.bus.Subscribe(sctx, c.user)
			cancel()
			if err != nil {
				h.failSubscribe(c.user, u, err)
			} else {
				close(u.ready)
			}
		}
		select {
		case <-u.ready:
		case <-ctx.Done():
			h.finish(ctx, c)
			return ctx.Err()
		}
		if u.subErr != nil {
			h.conns.Done()
			return ErrUnavailable
		}
		return nil
	}
}

// failSubscribe refuses every connection waiting for a subscription that failed (503;
// nothing was delivered to them). The subscribe may have reached Redis after all, so it is
// undone, and the entry stays, leaving, until that UNSUBSCRIBE is confirmed: a reconnect in
// the meantime must not have its SUBSCRIBE ordered before it (register waits for leaving).
func (h *Hub) failSubscribe(user string, u *userEntry, err error) {
	sh := h.shardOf(user)
	sh.mu.Lock()
	u.subErr = err
	u.leaving = make(chan struct{})
	sh.mu.Unlock()
	close(u.ready)
	h.log.Warn("subscribe failed", "user_id", user, "err", err)
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
	defer cancel()
	_ = h.bus.Unsubscribe(ctx, user)
	sh.mu.Lock()
	if sh.users[user] == u {
		delete(sh.users, user)
	}
	sh.mu.Unlock()
	close(u.leaving)
}

// finish is the handler's last step for c: release (unless c's writer did it already, before
// its close frame) and mark c done for Shutdown.
func (h *Hub) finish(ctx context.Context, c *Conn) {
	defer h.conns.Done()
	c.release(ctx)
}

// release removes c from the hub and records how far it got (acks.go); the last connection of
// a user unsubscribes. Nothing else is kept: what c did not send is still in the inbox, not
// acknowledged. Run once per c (Conn.release).
func (h *Hub) release(ctx context.Context, c *Conn) {
	sh := h.shardOf(c.user)
	sh.mu.Lock()
	u := sh.users[c.user]
	if u == nil || u.subErr != nil {
		sh.mu.Unlock()
		return // failSubscribe handled it
	}
	for i, x := range u.conns {
		if x == c {
			u.conns = append(u.conns[:i], u.conns[i+1:]...)
			break
		}
	}
	last := len(u.conns) == 0
	if last {
		u.leaving = make(chan struct{})
	}
	sh.mu.Unlock()

	// Detach from the caller's context: a client that went away must not cancel the ack.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.SubscribeTimeout+h.cfg.WriteTimeout)
	defer cancel()
	// The client may reconnect elsewhere at once: its position must be in the inbox first.
	h.acks.flushUser(ctx, c.user)
	if !last {
		return
	}
	if err := h.bus.Unsubscribe(ctx, c.user); err != nil {
		h.log.Warn("unsubscribe failed", "user_id", c.user, "err", err)
	}
	sh.mu.Lock()
	delete(sh.users, c.user)
	sh.mu.Unlock()
	close(u.leaving)
}

// Deliver hands message seq of user (0: unnumbered) to every local connection of that user.
// It never blocks: the bus calls it from its receive loop.
func (h *Hub) Deliver(user string, seq int64, data []byte) {
	m := newMessage(data, kindUser, h.now())
	m.Seq = seq
	sh := h.shardOf(user)
	sh.mu.Lock()
	u := sh.users[user]
	if u == nil {
		sh.mu.Unlock()
		// Only possible after a subscribe that failed locally but reached Redis; the
		// message is in the inbox.
		h.obs.Dropped("no_receiver", 1)
		return
	}
	u.maxSeen = max(u.maxSeen, seq)
	if len(u.conns) > 1 {
		m.prepare()
	}
	for _, c := range u.conns {
		h.offerLocked(c, m)
	}
	sh.mu.Unlock()
}

// Broadcast hands data to every local connection. Nothing is stored for broadcasts.
func (h *Hub) Broadcast(data []byte) {
	m := newMessage(data, kindBroadcast, h.now())
	m.prepare()
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, u := range sh.users {
			for _, c := range u.conns {
				c.enqueue(m)
			}
		}
		sh.mu.Unlock()
	}
}

// Kick closes every local connection of user with 4001.
func (h *Hub) Kick(user string) {
	h.closeUser(user, CloseKicked, "disconnected by the API", ReasonKicked)
}

func (h *Hub) closeUser(user string, code int, text, reason string) {
	sh := h.shardOf(user)
	sh.mu.Lock()
	if u := sh.users[user]; u != nil {
		for _, c := range u.conns {
			c.closeWith(code, text, reason)
		}
	}
	sh.mu.Unlock()
}

// Online reports whether this node holds a connection of user.
func (h *Hub) Online(user string) bool {
	sh := h.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.users[user]
	return u != nil && len(u.conns) > 0
}

// Users returns the users with a connection on this node.
func (h *Hub) Users() []string {
	var out []string
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for user, u := range sh.users {
			if len(u.conns) > 0 && u.leaving == nil {
				out = append(out, user)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// Conns returns the number of connections on this node.
func (h *Hub) Conns() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, u := range sh.users {
			n += len(u.conns)
		}
		sh.mu.Unlock()
	}
	return n
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
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, u := range sh.users {
			for _, c := range u.conns {
				c.closeWith(1001, "node shutting down", ReasonShutdown)
			}
		}
		sh.mu.Unlock()
	}
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

// Resync is called by the bus when messages may have been published while this node did not
// receive them (its pub/sub connection came back, users moved to another Cluster shard): every
// connection reads its user's inbox after its position and gets what it missed (fill.go). It
// never blocks; the reads run on the hub's fillers.
func (h *Hub) Resync() {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, u := range sh.users {
			for _, c := range u.conns {
				h.fillLocked(c)
			}
		}
		sh.mu.Unlock()
	}
}

type nopObserver struct{}

func (nopObserver) ConnOpened()                      {}
func (nopObserver) ConnClosed(string, time.Duration) {}
func (nopObserver) Refused(int)                      {}
func (nopObserver) Delivered(time.Time)              {}
func (nopObserver) Dropped(string, int)              {}
func (nopObserver) SlowConsumer()                    {}
func (nopObserver) QueueDepth(int)                   {}
func (nopObserver) FlushedOffline(int)               {}
func (nopObserver) Inbound(int)                      {}
