package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures the Redis bus. Zero values take the documented defaults.
type RedisOptions struct {
	Prefix string // key and channel prefix; default "ws:"
	NodeID string // names this node's probe channel; required
	// ProbeInterval is how often the node publishes a probe to itself through Redis. Default 2s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long the node may go without receiving its own probe before it
	// declares its pub/sub connection wedged, turns not-ready and rebuilds it. Default 3×interval.
	ProbeTimeout time.Duration
	// SetupTimeout bounds (re)subscribing everything on a new pub/sub connection. Default 10s.
	SetupTimeout time.Duration
	// UpstreamMaxLen bounds the ws:upstream stream (XADD MAXLEN ~). Default 100000.
	UpstreamMaxLen int64
	// OnReady, when set, runs after every (re)established pub/sub connection, before the hub
	// drains; the wiring uses it to reload the Redis Function after a Redis restart.
	OnReady func(ctx context.Context)
	Logger  *slog.Logger
	// Sharded makes the bus use sharded pub/sub (SSUBSCRIBE, SPUBLISH) for users and for its
	// probe, on a client of one Cluster shard, and leaves broadcast and control to another bus
	// (Cluster composes one such bus per shard with one classic bus).
	Sharded bool
	// ProbeChannel overrides the probe channel; a shard's probe must hash to a slot the shard
	// owns. Default prefix + "probe:{" + NodeID + "}".
	ProbeChannel string
	// Observer receives reconnects and probe failures for metrics; may be nil.
	Observer Observer
}

// Observer is told about the pub/sub connection's health.
type Observer interface {
	PubSubReconnect()
	ProbeFailed()
}

// batchSize is the most channels per SUBSCRIBE/UNSUBSCRIBE command; centrifuge uses the same,
// which keeps one command well under Redis's 1 GiB query buffer and its latency small.
const batchSize = 512

// Redis is the bus on Redis pub/sub: one pub/sub connection per node carries every user this
// node holds, plus the broadcast, control and probe channels.
//
// Goroutines, all owned by Redis and stopped by Close: run (builds each pub/sub connection, a
// "generation", and supervises it with the probe), one receive loop per generation, and the
// batcher (turns Subscribe/Unsubscribe calls into batched commands).
type Redis struct {
	rdb redis.UniversalClient
	opt RedisOptions
	// sharded: see RedisOptions.Sharded.
	sharded bool
	log     *slog.Logger
	obs     Observer
	h       Handler
	user    string // prefix + "user:{"

	broadcastCh, controlCh, probeCh string

	ops    chan subOp
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	gen       *generation // the live generation, nil while (re)connecting
	want      map[string]struct{}
	subWait   map[string][]chan struct{}
	unsubWait map[string][]chan struct{}
	// setupWant is the snapshot of want that the generation being set up subscribes (nil
	// otherwise): an Unsubscribe of one of these must wait for that generation (Unsubscribe).
	setupWant map[string]struct{}

	ready     atomic.Bool
	lastProbe atomic.Int64 // unix nanos of the last probe received back
	probeSeq  atomic.Int64
}

type subOp struct {
	unsub   bool
	channel string
}

// generation is one pub/sub connection and its receive loop.
type generation struct {
	ps   *redis.PubSub
	acks atomic.Int64 // subscribe confirmations received
	ack  chan struct{}
	// lost is closed when the connection failed. go-redis then redials and re-subscribes the
	// PubSub by itself (pubsub.go, reconnect), so Redis may count it as a receiver again: the
	// receive loop keeps dispatching until closeGen has unsubscribed it.
	lost     chan struct{}
	lostOnce sync.Once
	retiring atomic.Bool
	quiet    chan struct{} // closed when closeGen's UNSUBSCRIBE of everything was confirmed
	done     chan struct{} // closed when the receive loop ended
}

// NewRedis returns a bus on rdb. Start it to connect.
func NewRedis(rdb redis.UniversalClient, opt RedisOptions) *Redis {
	if opt.Prefix == "" {
		opt.Prefix = "ws:"
	}
	if opt.ProbeInterval <= 0 {
		opt.ProbeInterval = 2 * time.Second
	}
	if opt.ProbeTimeout <= 0 {
		opt.ProbeTimeout = 3 * opt.ProbeInterval
	}
	if opt.SetupTimeout <= 0 {
		opt.SetupTimeout = 10 * time.Second
	}
	if opt.UpstreamMaxLen <= 0 {
		opt.UpstreamMaxLen = 100000
	}
	if opt.ProbeChannel == "" {
		opt.ProbeChannel = opt.Prefix + "probe:{" + opt.NodeID + "}"
	}
	r := &Redis{
		rdb: rdb, opt: opt, log: opt.Logger, obs: opt.Observer, sharded: opt.Sharded,
		user:        opt.Prefix + "user:{",
		broadcastCh: opt.Prefix + "broadcast",
		controlCh:   opt.Prefix + "control",
		probeCh:     opt.ProbeChannel,
		ops:         make(chan subOp, 4*batchSize),
		want:        make(map[string]struct{}),
		subWait:     make(map[string][]chan struct{}),
		unsubWait:   make(map[string][]chan struct{}),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.obs == nil {
		r.obs = nopObserver{}
	}
	return r
}

// Channel returns the pub/sub channel of user.
func (r *Redis) Channel(user string) string { return r.user + user + "}" }

// Start connects in the background (retrying until Redis answers) and delivers to h.
func (r *Redis) Start(h Handler) {
	r.h = h
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.run(ctx) }()
	go func() { defer r.wg.Done(); r.batcher(ctx) }()
}

// Close stops every goroutine and closes the pub/sub connection. The client stays open: main
// owns it.
func (r *Redis) Close() error {
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
	return nil
}

// Ready returns nil when the pub/sub connection is subscribed and this node's probe came back
// recently; else the reason, for /readyz.
func (r *Redis) Ready() error {
	if !r.ready.Load() {
		return errors.New("redis pub/sub not connected")
	}
	last := time.Unix(0, r.lastProbe.Load())
	if time.Since(last) > r.opt.ProbeTimeout {
		return fmt.Errorf("redis pub/sub probe not received for %s", time.Since(last).Round(time.Millisecond))
	}
	return nil
}

// Subscribe subscribes this node to user's channel and returns once Redis confirmed it.
func (r *Redis) Subscribe(ctx context.Context, user string) error {
	ch := r.Channel(user)
	w := make(chan struct{})
	r.mu.Lock()
	if r.gen == nil {
		r.mu.Unlock()
		return ErrUnavailable
	}
	r.want[ch] = struct{}{}
	r.subWait[ch] = append(r.subWait[ch], w)
	r.mu.Unlock()
	if err := r.send(ctx, subOp{channel: ch}); err != nil {
		r.dropWaiter(r.subWait, ch, w)
		return err
	}
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		r.dropWaiter(r.subWait, ch, w)
		return fmt.Errorf("bus: subscribe %s: %w", user, ctx.Err())
	}
}

// Unsubscribe unsubscribes user's channel and returns once Redis confirmed it, or once the
// connection it was subscribed on is gone; either way nothing more arrives for user.
func (r *Redis) Unsubscribe(ctx context.Context, user string) error {
	ch := r.Channel(user)
	w := make(chan struct{})
	r.mu.Lock()
	delete(r.want, ch)
	gen := r.gen
	if _, settingUp := r.setupWant[ch]; gen == nil && !settingUp {
		r.mu.Unlock()
		return nil // no connection: nothing is subscribed, the next one will not include ch
	}
	// Without a generation but with one being set up that subscribes ch, setup unsubscribes
	// ch once it is up (or wakes us if it failed); till then the hub keeps what arrives.
	r.unsubWait[ch] = append(r.unsubWait[ch], w)
	r.mu.Unlock()
	if gen != nil {
		if err := r.send(ctx, subOp{unsub: true, channel: ch}); err != nil {
			r.dropWaiter(r.unsubWait, ch, w)
			return err
		}
	}
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		r.dropWaiter(r.unsubWait, ch, w)
		return fmt.Errorf("bus: unsubscribe %s: %w", user, ctx.Err())
	}
}

func (r *Redis) send(ctx context.Context, op subOp) error {
	select {
	case r.ops <- op:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Redis) dropWaiter(m map[string][]chan struct{}, ch string, w chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := m[ch]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(m, ch)
	} else {
		m[ch] = ws
	}
}

// wakeLocked closes and forgets the waiters of ch.
func wakeLocked(m map[string][]chan struct{}, ch string) {
	for _, w := range m[ch] {
		close(w)
	}
	delete(m, ch)
}

// batcher turns Subscribe/Unsubscribe calls into commands of up to batchSize channels, so a
// connect storm costs a few writes instead of one per user. Consecutive ops of one kind are
// merged; the order of a subscribe and an unsubscribe is kept.
func (r *Redis) batcher(ctx context.Context) {
	batch := make([]string, 0, batchSize)
	for {
		var op subOp
		select {
		case op = <-r.ops:
		case <-ctx.Done():
			return
		}
		batch = append(batch[:0], op.channel)
		unsub := op.unsub
	collect:
		for len(batch) < batchSize {
			select {
			case next := <-r.ops:
				if next.unsub != unsub {
					r.write(ctx, unsub, batch)
					batch, unsub = append(batch[:0], next.channel), next.unsub
					continue
				}
				batch = append(batch, next.channel)
			default:
				break collect
			}
		}
		r.write(ctx, unsub, batch)
	}
}

// write sends one (UN)SUBSCRIBE on the live generation. Without one there is nothing to do:
// the next generation subscribes everything in want, and its confirmations wake the waiters.
func (r *Redis) write(ctx context.Context, unsub bool, channels []string) {
	r.mu.Lock()
	g := r.gen
	r.mu.Unlock()
	if g == nil {
		return
	}
	var err error
	switch {
	case unsub && r.sharded:
		err = g.ps.SUnsubscribe(ctx, channels...)
	case unsub:
		err = g.ps.Unsubscribe(ctx, channels...)
	case r.sharded:
		err = g.ps.SSubscribe(ctx, channels...)
	default:
		err = g.ps.Subscribe(ctx, channels...)
	}
	if err != nil {
		// The receive loop sees the broken connection too and the generation is rebuilt.
		r.log.Debug("pubsub command failed", "unsubscribe", unsub, "channels", len(channels), "err", err)
	}
}

// run builds a generation, supervises it and rebuilds it when it fails, until ctx ends.
func (r *Redis) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		g, err := r.setup(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("redis pub/sub not available, retrying", "err", err, "retry_in", backoff.String())
			sleep(ctx, backoff)
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if r.opt.OnReady != nil {
			r.opt.OnReady(ctx)
		}
		r.ready.Store(true)
		if !first {
			r.log.Info("redis pub/sub re-established; connections check their inboxes")
			r.h.Resync()
		}
		first = false
		lost := r.supervise(ctx, g)
		r.ready.Store(false)
		r.retire(g, lost && ctx.Err() == nil)
		if ctx.Err() == nil {
			r.obs.PubSubReconnect()
		}
	}
}

// setup opens a new pub/sub connection, subscribes the fixed channels and every wanted user in
// batches, and waits until Redis confirmed all of them.
func (r *Redis) setup(ctx context.Context) (*generation, error) {
	ps := r.rdb.Subscribe(ctx)
	if r.sharded {
		ps = r.rdb.SSubscribe(ctx)
	}
	g := &generation{ps: ps, ack: make(chan struct{}, 1),
		lost: make(chan struct{}), quiet: make(chan struct{}), done: make(chan struct{})}
	r.mu.Lock()
	channels := make([]string, 0, len(r.want)+3)
	if r.sharded {
		channels = append(channels, r.probeCh)
	} else {
		channels = append(channels, r.broadcastCh, r.controlCh, r.probeCh)
	}
	r.setupWant = make(map[string]struct{}, len(r.want))
	for ch := range r.want {
		channels = append(channels, ch)
		r.setupWant[ch] = struct{}{}
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.gen != g { // failed: what it subscribed went with its connection
			for ch := range r.setupWant {
				if _, ok := r.want[ch]; !ok {
					wakeLocked(r.unsubWait, ch)
				}
			}
		}
		r.setupWant = nil
	}()

	sctx, cancel := context.WithTimeout(ctx, r.opt.SetupTimeout)
	defer cancel()
	for i := 0; i < len(channels); i += batchSize {
		subscribe := g.ps.Subscribe
		if r.sharded {
			subscribe = g.ps.SSubscribe
		}
		if err := subscribe(sctx, channels[i:min(i+batchSize, len(channels))]...); err != nil {
			_ = g.ps.Close()
			return nil, fmt.Errorf("bus: subscribe: %w", err)
		}
	}
	go r.receive(g)
	for g.acks.Load() < int64(len(channels)) {
		select {
		case <-g.ack:
		case <-g.lost:
			r.closeGen(g, true)
			return nil, errors.New("bus: pub/sub connection lost while subscribing")
		case <-sctx.Done():
			r.closeGen(g, false)
			return nil, fmt.Errorf("bus: waiting for %d subscribe confirmations: %w", len(channels), sctx.Err())
		}
	}
	r.lastProbe.Store(time.Now().UnixNano())
	r.mu.Lock()
	r.gen = g
	// Anything subscribed between the snapshot and now goes out again on this generation;
	// a duplicate SUBSCRIBE is harmless and confirms again.
	for ch := range r.subWait {
		select {
		case r.ops <- subOp{channel: ch}:
		default:
		}
	}
	// And the other way round: a user whose last connection ended since the snapshot found no
	// generation, so its Unsubscribe returned at once, yet this generation subscribed it. Left
	// so, Redis counts this node as the user's receiver and every push to the user is neither
	// delivered (the hub holds no entry) nor stored: unsubscribe it. Under mu, so a Subscribe
	// from now on is ordered after this.
	for _, ch := range channels {
		if _, ok := r.want[ch]; !ok && strings.HasPrefix(ch, r.user) {
			select {
			case r.ops <- subOp{unsub: true, channel: ch}:
			default:
			}
		}
	}
	r.mu.Unlock()
	return g, nil
}

// supervise publishes a probe every ProbeInterval and returns when the generation's connection
// failed (true) or the probe has not come back within ProbeTimeout (a wedged link that Redis
// still counts as a subscriber; go-redis's own health check does not catch it, FACTS.md).
func (r *Redis) supervise(ctx context.Context, g *generation) (lost bool) {
	t := time.NewTicker(r.opt.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-g.lost:
			r.log.Warn("redis pub/sub connection lost")
			return true
		case <-t.C:
			last := time.Unix(0, r.lastProbe.Load())
			if time.Since(last) > r.opt.ProbeTimeout {
				r.obs.ProbeFailed()
				r.log.Warn("redis pub/sub probe not received; rebuilding the connection",
					"silent_for", time.Since(last).Round(time.Millisecond).String())
				return false
			}
			pctx, cancel := context.WithTimeout(ctx, r.opt.ProbeInterval)
			seq := strconv.FormatInt(r.probeSeq.Add(1), 10)
			publish := r.rdb.Publish
			if r.sharded {
				publish = r.rdb.SPublish
			}
			if err := publish(pctx, r.probeCh, seq).Err(); err != nil {
				r.log.Debug("probe publish failed", "err", err)
			}
			cancel()
		}
	}
}

// retire closes a generation and wakes every unsubscribe waiter: with the connection gone,
// nothing more arrives on any channel, which is what an unsubscribe promises.
func (r *Redis) retire(g *generation, graceful bool) {
	r.closeGen(g, graceful)
	r.mu.Lock()
	if r.gen == g {
		r.gen = nil
	}
	for ch := range r.unsubWait {
		wakeLocked(r.unsubWait, ch)
	}
	r.mu.Unlock()
}

// closeGen closes g's PubSub and waits for its receive loop. graceful is for a connection
// that failed while Redis is reachable: go-redis has (or will have) redialled and re-subscribed
// it, and a message Redis hands to that connection counts as received, so it must not be
// dropped with it. So first UNSUBSCRIBE everything and wait for Redis's confirmation while the
// receive loop dispatches what arrives until then; from then on pushes find no subscriber here
// and are stored, for the drain after the next generation subscribed.
func (r *Redis) closeGen(g *generation, graceful bool) {
	if graceful {
		g.retiring.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), r.opt.SetupTimeout)
		unsubscribe := g.ps.Unsubscribe
		if r.sharded {
			unsubscribe = g.ps.SUnsubscribe
		}
		if err := unsubscribe(ctx); err == nil {
			select {
			case <-g.quiet:
			case <-g.done:
			case <-ctx.Done():
			}
		}
		cancel()
	}
	_ = g.ps.Close()
	<-g.done
}

// receive is the generation's receive loop. It never blocks on anything but Redis: every
// message is handed to the Handler, whose methods return at once. When the connection fails it
// closes lost (run then rebuilds the generation, so that the drain after a resubscribe always
// happens) but goes on receiving: go-redis has redialled and re-subscribed the same PubSub, and
// what Redis delivers there must be dispatched until closeGen unsubscribed and closed it.
func (r *Redis) receive(g *generation) {
	defer close(g.done)
	ctx := context.Background()
	var quiet sync.Once
	for {
		msg, err := g.ps.Receive(ctx)
		if err != nil {
			if errors.Is(err, redis.ErrClosed) {
				return // closeGen closed it
			}
			g.lostOnce.Do(func() { close(g.lost) })
			// Each Receive redials while Redis is away; closeGen ends this soon anyway.
			time.Sleep(20 * time.Millisecond)
			continue
		}
		switch m := msg.(type) {
		case *redis.Message:
			r.dispatch(m)
		case *redis.Subscription:
			// Sharded pub/sub confirms with ssubscribe/sunsubscribe; treat them alike.
			switch m.Kind {
			case "ssubscribe":
				m.Kind = "subscribe"
			case "sunsubscribe":
				m.Kind = "unsubscribe"
			}
			r.mu.Lock()
			switch m.Kind {
			case "subscribe":
				wakeLocked(r.subWait, m.Channel)
			case "unsubscribe":
				wakeLocked(r.unsubWait, m.Channel)
			}
			r.mu.Unlock()
			if m.Kind == "unsubscribe" && m.Count == 0 && g.retiring.Load() {
				quiet.Do(func() { close(g.quiet) })
			}
			if m.Kind == "subscribe" {
				g.acks.Add(1)
				select {
				case g.ack <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (r *Redis) dispatch(m *redis.Message) {
	switch m.Channel {
	case r.probeCh:
		r.lastProbe.Store(time.Now().UnixNano())
	case r.broadcastCh:
		r.h.Broadcast([]byte(m.Payload))
	case r.controlCh:
		var c control
		if err := json.Unmarshal([]byte(m.Payload), &c); err != nil {
			r.log.Warn("bad control message", "err", err)
			return
		}
		if c.Op == "kick" {
			r.h.Kick(c.User)
		}
	default:
		if user, ok := strings.CutPrefix(m.Channel, r.user); ok && strings.HasSuffix(user, "}") {
			seq, data := ParseNumbered([]byte(m.Payload))
			r.h.Deliver(user[:len(user)-1], seq, data)
		}
	}
}

// control is the format of the ws:control channel (internal to the gateway).
type control struct {
	Op   string `json:"op"`
	User string `json:"user,omitempty"`
}

// Broadcast publishes data to every node.
func (r *Redis) Broadcast(ctx context.Context, data []byte) error {
	if err := r.rdb.Publish(ctx, r.broadcastCh, data).Err(); err != nil {
		return fmt.Errorf("bus: broadcast: %w", err)
	}
	return nil
}

// Kick asks every node to close user's connections with 4001.
func (r *Redis) Kick(ctx context.Context, user string) error {
	b, _ := json.Marshal(control{Op: "kick", User: user})
	if err := r.rdb.Publish(ctx, r.controlCh, b).Err(); err != nil {
		return fmt.Errorf("bus: kick %s: %w", user, err)
	}
	return nil
}

// Online reports whether any node is subscribed to user (PUBSUB NUMSUB).
func (r *Redis) Online(ctx context.Context, user string) (bool, error) {
	ch := r.Channel(user)
	res, err := r.rdb.PubSubNumSub(ctx, ch).Result()
	if err != nil {
		return false, fmt.Errorf("bus: presence %s: %w", user, err)
	}
	return res[ch] > 0, nil
}

// Append adds an inbound client frame to the ws:upstream stream (SPEC section 7).
func (r *Redis) Append(ctx context.Context, user string, data []byte) error {
	err := r.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: r.opt.Prefix + "upstream",
		MaxLen: r.opt.UpstreamMaxLen,
		Approx: true,
		Values: []any{"user", user, "node", r.opt.NodeID, "data", data},
	}).Err()
	if err != nil {
		return fmt.Errorf("bus: upstream from %s: %w", user, err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

type nopObserver struct{}

func (nopObserver) PubSubReconnect() {}
func (nopObserver) ProbeFailed()     {}
