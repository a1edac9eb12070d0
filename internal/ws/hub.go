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

// Store is what the hub needs from the offline store (internal/offline).
type Store interface {
	// Drain atomically takes every stored message of user, oldest first.
	Drain(ctx context.Context, user string) ([][]byte, error)
	// Requeue puts msgs (oldest first) back at the head of user's list, ahead of anything
	// stored meanwhile, because they are older than it.
	Requeue(ctx context.Context, user string, msgs [][]byte) error
}

// Upstream receives what clients send (SPEC section 7). Nil drops it after the checks.
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
	Requeued(n int)
	Inbound(bytes int)
}

// Config holds the hub's settings; see SPEC section 2 for their meaning.
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
	store    Store
	upstream Upstream
	obs      Observer
	log      *slog.Logger
	now      func() time.Time

	seed     maphash.Seed
	shards   [numShards]shard
	nextID   atomic.Uint64
	draining atomic.Bool
	stopping chan struct{}  // closed when Shutdown begins; /ws/echo connections watch it
	conns    sync.WaitGroup // one per registered connection, done after its clean-up
	redrain  redrainer
	// lostEpoch counts PubSubLost calls. A drain pass ends holding only if no newer loss
	// happened since the Resubscribed that asked for it.
	lostEpoch atomic.Uint64
	admit     admission
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
	// leaving is non-nil while the last connection's unsubscribe is in flight; messages that
	// still arrive then are kept in orphans and stored offline ahead of anything newer.
	leaving chan struct{}
	orphans [][]byte
	// holding is set while the node's pub/sub connection is being rebuilt (PubSubLost):
	// what still arrives live is kept in held, and handed over only after the offline list
	// was drained, because the list holds older messages (SPEC section 6, order).
	holding bool
	held    [][]byte
}

// closingLocked returns the gone channel of a connection of u that the server is closing
// (slow consumer, kick, …). A new connection of the user waits for it: what that one did not
// write is stored when it is gone, and is older than anything the new one would get live
// (SPEC section 6, order after a reconnect; a stalled client reconnects while its old
// connection is still stuck in a write).
func (u *userEntry) closingLocked() <-chan struct{} {
	if u == nil {
		return nil
	}
	for _, c := range u.conns {
		if c.closing.Load() {
			return c.gone
		}
	}
	return nil
}

// Deps are the hub's collaborators. Bus and Store are required.
type Deps struct {
	Bus      Subscriber
	Store    Store
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
		cfg: cfg, bus: d.Bus, store: d.Store, upstream: d.Upstream,
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
	h.redrain.h = h
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
// waits until that finished, so its orphans are stored before this connection drains.
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
		if gone := u.closingLocked(); gone != nil {
			sh.mu.Unlock()
			select {
			case <-gone:
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

// failSubscribe removes a user whose subscription failed; every connection waiting for it is
// refused with 503 and nothing was delivered to them, so nothing is lost.
func (h *Hub) failSubscribe(user string, u *userEntry, err error) {
	sh := h.shardOf(user)
	sh.mu.Lock()
	u.subErr = err
	if sh.users[user] == u {
		delete(sh.users, user)
	}
	orphans := append(u.orphans, u.held...)
	u.orphans, u.held = nil, nil
	sh.mu.Unlock()
	close(u.ready)
	h.log.Warn("subscribe failed", "user_id", user, "err", err)
	// The subscribe may have reached Redis after all: undo it, best effort.
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
	defer cancel()
	_ = h.bus.Unsubscribe(ctx, user)
	var msgs [][]byte
	for _, c := range u.conns {
		msgs = append(msgs, c.remainder()...)
	}
	h.requeue(ctx, user, append(msgs, orphans...))
}

// finish is the handler's last step for c: release (unless c's writer did it already, before
// its close frame) and mark c done for Shutdown.
func (h *Hub) finish(ctx context.Context, c *Conn) {
	defer h.conns.Done()
	c.release(ctx)
}

// release removes c from the hub and stores what it did not send. The last connection of a
// user unsubscribes first and stores the messages that arrived meanwhile (orphans) behind c's
// remainder, both ahead of anything stored after the unsubscribe. Run once per c (Conn.release).
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

	// Detach from the caller's context: a client that went away must not cancel the store.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.SubscribeTimeout+h.cfg.WriteTimeout)
	defer cancel()
	rest := c.remainder()
	if !last {
		h.requeue(ctx, c.user, rest)
		return
	}
	if err := h.bus.Unsubscribe(ctx, c.user); err != nil {
		h.log.Warn("unsubscribe failed", "user_id", c.user, "err", err)
	}
	sh.mu.Lock()
	rest = append(rest, u.orphans...)
	rest = append(rest, u.held...)
	u.orphans, u.held = nil, nil
	delete(sh.users, c.user)
	sh.mu.Unlock()
	h.requeue(ctx, c.user, rest)
	close(u.leaving)
}

func (h *Hub) requeue(ctx context.Context, user string, msgs [][]byte) {
	if len(msgs) == 0 {
		return
	}
	if err := h.store.Requeue(ctx, user, msgs); err != nil {
		h.obs.Dropped("store_failed", len(msgs))
		h.log.Error("storing undelivered messages failed", "user_id", user, "count", len(msgs), "err", err)
		return
	}
	h.obs.Requeued(len(msgs))
}

// Deliver hands a message for user to every local connection of that user. It never blocks:
// the bus calls it from its receive loop.
func (h *Hub) Deliver(user string, data []byte) {
	m := newMessage(data, kindUser, h.now())
	sh := h.shardOf(user)
	sh.mu.Lock()
	u := sh.users[user]
	switch {
	case u == nil:
		sh.mu.Unlock()
		// Only possible after a subscribe that failed locally but reached Redis.
		h.obs.Dropped("no_receiver", 1)
		return
	case u.holding:
		h.holdLocked(u, data)
	case len(u.conns) == 0:
		u.orphans = append(u.orphans, data)
	case len(u.conns) == 1:
		u.conns[0].enqueue(m)
	default:
		m.prepare()
		for _, c := range u.conns {
			c.enqueue(m)
		}
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
// stored what it had not sent, or until ctx ends. Each connection's own writer sends its close
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
	go func() { h.conns.Wait(); h.redrain.wait(); h.stopPoll(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Resubscribed is called by the bus when its subscriptions came back after an outage. A push
// made while they were away found no subscriber and was stored offline although the user is
// connected here: drain those lists now (SPEC section 6, "Resubscribe windows"). It never
// blocks; the drain runs on one hub-owned goroutine.
func (h *Hub) Resubscribed() { h.redrain.trigger(true, h.lostEpoch.Load()) }

// PubSubLost is called by the bus when its pub/sub connection failed. From now on every user
// held here keeps what arrives live until the offline lists were drained: what the outage sent
// to the lists is older. It never blocks on anything but the shard locks.
func (h *Hub) PubSubLost() {
	h.lostEpoch.Add(1)
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, u := range sh.users {
			u.holding = true
		}
		sh.mu.Unlock()
	}
}

// PubSubQuiet is called by the bus once the failed connection can deliver nothing more. What
// the lists got before that, then what arrived live on the old connection, is handed over
// now; holding goes on until Resubscribed, because the lists keep collecting until then.
func (h *Hub) PubSubQuiet() { h.redrain.trigger(false, 0) }

// holdLocked keeps a live message while u is holding, bounded like a closing connection's
// queue; beyond it the oldest held message is dropped and counted.
func (h *Hub) holdLocked(u *userEntry, data []byte) {
	if len(u.held) >= h.cfg.SendQueue+h.cfg.OfflineMax {
		u.held = u.held[1:]
		h.obs.Dropped("hold_overflow", 1)
	}
	u.held = append(u.held, data)
}

// redrainer runs at most one drain pass at a time; a trigger during a pass causes one more.
type redrainer struct {
	h       *Hub
	mu      sync.Mutex
	running bool
	again   bool
	release bool   // the next pass ends holding (Resubscribed came) …
	epoch   uint64 // … unless the connection was lost again after this epoch
	wg      sync.WaitGroup
}

func (r *redrainer) trigger(release bool, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if release {
		r.release, r.epoch = true, max(r.epoch, epoch)
	}
	if r.running {
		r.again = true
		return
	}
	r.running = true
	r.wg.Add(1)
	go r.loop()
}

func (r *redrainer) wait() { r.wg.Wait() }

func (r *redrainer) loop() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		release, epoch := r.release, r.epoch
		r.release = false
		r.mu.Unlock()
		r.h.drainHeld(release, epoch)
		r.mu.Lock()
		if !r.again || r.h.draining.Load() {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.again = false
		r.mu.Unlock()
	}
}

func (h *Hub) drainHeld(release bool, epoch uint64) {
	for _, user := range h.Users() {
		if h.draining.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
		msgs, err := h.store.Drain(ctx, user)
		cancel()
		if err != nil {
			// Hand over what is held anyway: a user must not stall on a flaky store. The
			// stored messages come at the next pass or connect.
			h.log.Warn("drain after resubscribe failed", "user_id", user, "err", err)
			msgs = nil
		}
		if !h.deliverDrained(user, msgs, release, epoch) {
			// The user left while its list was being drained: put the messages back for its
			// next connect rather than drop them, as Deliver would for an absent user.
			ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
			h.requeue(ctx, user, msgs)
			cancel()
			continue
		}
		h.obs.FlushedOffline(len(msgs))
	}
	if release {
		h.stopHolding(epoch) // users that left and came back meanwhile
	}
}

// stopHolding ends holding for every user, handing over what each still holds.
func (h *Hub) stopHolding(epoch uint64) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, u := range sh.users {
			if u.holding || len(u.held) > 0 {
				h.handOverLocked(u, nil, true, epoch)
			}
		}
		sh.mu.Unlock()
	}
}

// deliverDrained hands messages drained after a resubscribe to user's connections, under one
// lock; to the orphans (stored when it is gone) while the last connection is leaving. It
// returns false, having handed over nothing, when the user has no entry here any more.
func (h *Hub) deliverDrained(user string, msgs [][]byte, release bool, epoch uint64) bool {
	sh := h.shardOf(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.users[user]
	if u == nil {
		return len(msgs) == 0
	}
	h.handOverLocked(u, msgs, release, epoch)
	return true
}

// handOverLocked delivers drained messages, then the held ones (newer), to u's connections.
// release ends holding, unless the connection was lost again after epoch (PubSubLost bumps
// the epoch before it takes any shard lock, so reading it here under the lock is safe).
func (h *Hub) handOverLocked(u *userEntry, drained [][]byte, release bool, epoch uint64) {
	held := u.held
	u.held = nil
	if release && h.lostEpoch.Load() == epoch {
		u.holding = false
	}
	now := h.now()
	for _, data := range append(drained, held...) {
		m := newMessage(data, kindUser, now)
		switch len(u.conns) {
		case 0:
			u.orphans = append(u.orphans, data)
		case 1:
			u.conns[0].enqueue(m)
		default:
			m.prepare()
			for _, c := range u.conns {
				c.enqueue(m)
			}
		}
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
func (nopObserver) Requeued(int)                     {}
func (nopObserver) Inbound(int)                      {}
