package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/defaults"
	"github.com/wsgateway/wsgateway/internal/keys"
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
	// OnReady, when set, runs after every (re)established pub/sub connection, before the hub
	// catches up (Resync); the wiring uses it to reload the Redis Function after a Redis restart.
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

// retryDelay is how long a channel whose (un)subscribe got an error reply waits before the
// command is sent again (CLUSTERDOWN, LOADING, a slot in the middle of a failover, …).
const retryDelay = time.Second

// Redis is the bus on Redis pub/sub: one pub/sub connection per node carries every user this
// node holds, plus the broadcast, control and probe channels.
//
// Goroutines, all owned by Redis and stopped by Close: run (builds each pub/sub connection, a
// "generation", and supervises it with the probe), one receive loop per generation, and the
// batcher (turns Subscribe/Unsubscribe calls into batched commands).
//
// Lock order: generation.wmu, then mu.
type Redis struct {
	rdb redis.UniversalClient
	opt RedisOptions
	// sharded: see RedisOptions.Sharded.
	sharded bool
	// addr is the server a plain client dials; go-redis drops the connection on a MOVED reply
	// that names it (see lostOnReply).
	addr string
	log  *slog.Logger
	obs  Observer
	h    Handler
	user string // prefix + "user:{"

	broadcastCh, controlCh string
	probe                  atomic.Pointer[probeChannels]
	// onMoved, when set (by Cluster), is called when Redis says that a slot of a wanted channel
	// is served elsewhere: a MOVED reply, or a subscription the server dropped itself because
	// the slot moved away. It must not block.
	onMoved func()

	poke   chan struct{} // wakes the batcher; capacity 1
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex
	gen *generation // the live generation, nil while (re)connecting
	// want is what the callers asked for; fixed is what the bus keeps by itself (probe, and
	// broadcast and control on a classic bus). The batcher reconciles the connection with them.
	want, fixed map[string]struct{}
	// dirty channels get the command their wanted state asks for at the batcher's next round;
	// retry channels, whose last command failed, become dirty again after retryDelay.
	dirty, retry       map[string]struct{}
	subWait, unsubWait map[string][]chan error
	// setupWant is the snapshot of want that the generation being set up subscribes (nil
	// otherwise): an Unsubscribe of one of these must wait for that generation (Unsubscribe).
	setupWant map[string]struct{}

	ready     atomic.Bool
	lastProbe atomic.Int64 // unix nanos of the last probe received back
	probeSeq  atomic.Int64
}

// probeChannels is the probe channel and, after a change, the previous one, whose probes in
// flight still count.
type probeChannels struct{ cur, old string }

// NewRedis returns a bus on rdb. Start it to connect.
func NewRedis(rdb redis.UniversalClient, opt RedisOptions) *Redis {
	defaults.String(&opt.Prefix, "ws:")
	defaults.Positive(&opt.ProbeInterval, 2*time.Second)
	defaults.Positive(&opt.ProbeTimeout, 3*opt.ProbeInterval)
	defaults.Positive(&opt.SetupTimeout, 10*time.Second)
	defaults.String(&opt.ProbeChannel, keys.Prefix(opt.Prefix).Probe(opt.NodeID))
	r := &Redis{
		rdb: rdb, opt: opt, log: opt.Logger, obs: opt.Observer, sharded: opt.Sharded,
		user:        opt.Prefix + "user:{",
		broadcastCh: keys.Prefix(opt.Prefix).Broadcast(),
		controlCh:   keys.Prefix(opt.Prefix).Control(),
		poke:        make(chan struct{}, 1),
		want:        make(map[string]struct{}),
		fixed:       map[string]struct{}{opt.ProbeChannel: {}},
		dirty:       make(map[string]struct{}),
		retry:       make(map[string]struct{}),
		subWait:     make(map[string][]chan error),
		unsubWait:   make(map[string][]chan error),
	}
	if !r.sharded {
		r.fixed[r.broadcastCh] = struct{}{}
		r.fixed[r.controlCh] = struct{}{}
	}
	r.probe.Store(&probeChannels{cur: opt.ProbeChannel})
	if c, ok := rdb.(*redis.Client); ok {
		r.addr = c.Options().Addr
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

// Subscribe subscribes this node to user's channel and returns once Redis confirmed it. When
// Redis refuses (an error reply such as MOVED or NOPERM) or ctx ends first, it returns the
// error and the channel is no longer wanted: a failed Subscribe leaves nothing behind.
func (r *Redis) Subscribe(ctx context.Context, user string) error {
	ch := r.Channel(user)
	w := make(chan error, 1)
	r.mu.Lock()
	if r.gen == nil {
		r.mu.Unlock()
		return ErrUnavailable
	}
	r.want[ch] = struct{}{}
	r.subWait[ch] = append(r.subWait[ch], w)
	r.dirty[ch] = struct{}{}
	r.mu.Unlock()
	r.wake()
	select {
	case err := <-w:
		if err == nil {
			return nil
		}
		r.forget(ch)
		return fmt.Errorf("bus: subscribe %s: %w", user, err)
	case <-ctx.Done():
		r.dropWaiter(r.subWait, ch, w)
		r.forget(ch)
		return fmt.Errorf("bus: subscribe %s: %w", user, ctx.Err())
	}
}

// forget drops ch from want after a failed Subscribe; the batcher unsubscribes it in case the
// command reached Redis after all.
func (r *Redis) forget(ch string) {
	r.mu.Lock()
	delete(r.want, ch)
	if r.gen != nil {
		r.dirty[ch] = struct{}{}
	}
	r.mu.Unlock()
	r.wake()
}

// Unsubscribe unsubscribes user's channel and returns once Redis confirmed it, or once the
// connection it was subscribed on is gone; either way nothing more arrives for user.
func (r *Redis) Unsubscribe(ctx context.Context, user string) error {
	ch := r.Channel(user)
	w := make(chan error, 1)
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
	if gen != nil {
		r.dirty[ch] = struct{}{}
	}
	r.mu.Unlock()
	r.wake()
	select {
	case err := <-w:
		if err != nil {
			return fmt.Errorf("bus: unsubscribe %s: %w", user, err)
		}
		return nil
	case <-ctx.Done():
		r.dropWaiter(r.unsubWait, ch, w)
		return fmt.Errorf("bus: unsubscribe %s: %w", user, ctx.Err())
	}
}

// setProbe moves the probe to ch (Cluster: the shard no longer owns the old probe's slot).
func (r *Redis) setProbe(ch string) {
	r.mu.Lock()
	old := r.probe.Load().cur
	if old == ch {
		r.mu.Unlock()
		return
	}
	delete(r.fixed, old)
	r.fixed[ch] = struct{}{}
	r.probe.Store(&probeChannels{cur: ch, old: old})
	if r.gen != nil {
		r.dirty[old] = struct{}{}
		r.dirty[ch] = struct{}{}
	}
	r.mu.Unlock()
	r.wake()
}

func (r *Redis) dropWaiter(m map[string][]chan error, ch string, w chan error) {
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

// wakeLocked hands err to the waiters of ch and forgets them. Each waiter's channel has room
// for one value and is removed here, so this never blocks.
func wakeLocked(m map[string][]chan error, ch string, err error) {
	for _, w := range m[ch] {
		w <- err
	}
	delete(m, ch)
}

func (r *Redis) wantedLocked(ch string) bool {
	_, w := r.want[ch]
	_, f := r.fixed[ch]
	return w || f
}

func (r *Redis) dispatch(m *redis.Message) {
	if p := r.probe.Load(); m.Channel == p.cur || m.Channel == p.old {
		r.lastProbe.Store(time.Now().UnixNano())
		return
	}
	switch m.Channel {
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

type nopObserver struct{}

func (nopObserver) PubSubReconnect() {}
func (nopObserver) ProbeFailed()     {}
