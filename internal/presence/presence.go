// Package presence counts every user's live connections across the deployment, enforces
// max-conns-per-user on that count, and emits online and offline events (package events)
// exactly once per transition, by the one node whose script made it.
//
// Each gateway process takes a number from the hash ws:procs (number → node id) and names each
// of its connections '<proc>.<conn>' (both base 36). Redis keeps a user's connections in one of
// buckets hashes ws:presence:<b>, picked by a hash of the user id: field the user, value
// '<proc>.<conn>,…'. Sharing a hash among many users keeps it a small listpack, a few bytes per
// user instead of a key of its own (BENCHMARKS.md, "What presence costs"); a connection being
// named, connect and disconnect are idempotent and a retried call cannot count twice. The
// sorted set ws:nodes holds every node's last heartbeat. A node that stops beating for
// DeadAfter is reaped by one of the others (a lock decides which): every bucket drops the
// connections of its processes, and the users left with none go offline. A restarted node does
// the same at once for its earlier processes: they died, so their connections are gone.
package presence

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/ctxsleep"
	"github.com/wsgateway/wsgateway/internal/defaults"
	"github.com/wsgateway/wsgateway/internal/events"
	"github.com/wsgateway/wsgateway/internal/keys"
	"github.com/wsgateway/wsgateway/internal/scripts"
)

var (
	//go:embed lua/connect.lua
	connectLua string
	//go:embed lua/disconnect.lua
	disconnectLua string
	//go:embed lua/drop.lua
	dropLua string
	//go:embed lua/beat.lua
	beatLua string
)

// buckets is how many hashes hold the users' connections; every node must use the same
// number (and hash). Redis keeps a hash of up to hash-max-listpack-entries fields (512 by
// default) of at most hash-max-listpack-value bytes (64) as one compact listpack: 256 buckets
// stay compact up to about 130,000 connected users, while a few thousand users still fill each
// with a dozen. Beyond that, or once one of its users has an id over 64 bytes or about ten
// connections, a bucket becomes a plain hash table: about 65 B per user instead of 15–20
// (BENCHMARKS.md, "What presence costs").
const buckets = 256

// seqField is the field of ws:procs that holds the last number given to a process.
const seqField = "#"

// Options configure presence. Zero values take the defaults.
type Options struct {
	Prefix          string // key prefix; default "ws:"
	NodeID          string // this node; required
	MaxConnsPerUser int    // deployment-wide cap; default 16
	// Sharded: Redis Cluster, where a user's script may not touch the events stream (another
	// slot): the node appends the events after the script.
	Sharded bool
	// Heartbeat is how often the node beats and looks for dead nodes; default 2s. DeadAfter
	// is how long a node may miss its beats before it counts as dead; default 10s. Together
	// they bound how long a dead node's connections still count: DeadAfter + Heartbeat + the
	// reaping.
	Heartbeat, DeadAfter time.Duration
	Logger               *slog.Logger
}

// Redis is presence on Redis.
type Redis struct {
	rdb   redis.UniversalClient
	opt   Options
	log   *slog.Logger
	batch *scripts.Batcher
	ev    *events.Writer

	connect, disconnect, drop, beat *redis.Script

	procMu sync.Mutex
	proc   atomic.Pointer[string] // this process's number (base 36), once taken (ownProc)

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	retry map[leftConn]struct{} // disconnects that failed, retried by the heartbeat
}

// NewRedis returns presence on rdb; Start begins the heartbeat.
func NewRedis(rdb redis.UniversalClient, opt Options) *Redis {
	defaults.String(&opt.Prefix, "ws:")
	defaults.Positive(&opt.MaxConnsPerUser, 16)
	defaults.Positive(&opt.Heartbeat, 2*time.Second)
	defaults.Positive(&opt.DeadAfter, 10*time.Second)
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	return &Redis{
		rdb: rdb, opt: opt, log: opt.Logger, batch: scripts.New(rdb), retry: make(map[leftConn]struct{}),
		ev:         events.NewWriter(rdb, keys.Prefix(opt.Prefix).Events()),
		connect:    events.NewScript(connectLua),
		disconnect: events.NewScript(disconnectLua),
		drop:       events.NewScript(dropLua),
		beat:       redis.NewScript(beatLua),
	}
}

func (p *Redis) procs() string { return keys.Prefix(p.opt.Prefix).Procs() }
func (p *Redis) nodes() string { return keys.Prefix(p.opt.Prefix).Nodes() }

// bucket is the bucket that holds user's connections.
func bucket(user string) int {
	h := fnv.New32a()
	h.Write([]byte(user))
	return int(h.Sum32() % buckets)
}

// keys are a script's keys: bucket b, and in single-node Redis the events stream, which the
// script then appends to itself.
func (p *Redis) keys(b int) []string {
	k := keys.Prefix(p.opt.Prefix).Presence(b)
	if p.opt.Sharded {
		return []string{k}
	}
	return []string{k, p.ev.Stream()}
}

// ownProc returns this process's number, taken from ws:procs at the first call (a crash
// between the two writes only wastes a number).
func (p *Redis) ownProc(ctx context.Context) (string, error) {
	if id := p.proc.Load(); id != nil {
		return *id, nil
	}
	p.procMu.Lock()
	defer p.procMu.Unlock()
	if id := p.proc.Load(); id != nil {
		return *id, nil
	}
	n, err := p.rdb.HIncrBy(ctx, p.procs(), seqField, 1).Result()
	if err != nil {
		return "", fmt.Errorf("presence: numbering this process: %w", err)
	}
	id := strconv.FormatInt(n, 36)
	if err := p.rdb.HSet(ctx, p.procs(), id, p.opt.NodeID).Err(); err != nil {
		return "", fmt.Errorf("presence: numbering this process: %w", err)
	}
	p.proc.Store(&id)
	return id, nil
}

func connName(proc string, conn uint64) string { return proc + "." + strconv.FormatUint(conn, 36) }

// Connect counts one more connection (conn, unique on this node) of user. False: the user
// holds max-conns-per-user connections already, anywhere (the caller answers 429).
func (p *Redis) Connect(ctx context.Context, user string, conn uint64) (bool, error) {
	proc, err := p.ownProc(ctx)
	if err != nil {
		return false, err
	}
	vals, err := p.batch.Run(ctx, p.connect, p.keys(bucket(user)),
		user, connName(proc, conn), p.opt.MaxConnsPerUser, p.opt.NodeID).Slice()
	if err != nil {
		return false, fmt.Errorf("presence: connect %s: %w", user, err)
	}
	if len(vals) == 0 {
		return false, fmt.Errorf("presence: connect %s: empty reply", user)
	}
	if allowed, _ := vals[0].(int64); allowed != 1 {
		return false, nil
	}
	return true, p.ev.AppendReturned(ctx, vals[1:])
}

// Disconnect uncounts connection conn of user. When Redis cannot be reached, the call is kept
// and made again at the next heartbeats (else the connection would count for good): the error
// is only for the log.
func (p *Redis) Disconnect(ctx context.Context, user string, conn uint64) error {
	err := p.disconnectOnce(ctx, user, conn)
	if err != nil {
		p.mu.Lock()
		if len(p.retry) < maxRetries {
			p.retry[leftConn{user, conn}] = struct{}{}
		}
		p.mu.Unlock()
	}
	return err
}

// maxRetries bounds the disconnects kept for a retry while Redis is away.
const maxRetries = 100_000

type leftConn struct {
	user string
	conn uint64
}

func (p *Redis) disconnectOnce(ctx context.Context, user string, conn uint64) error {
	proc := p.proc.Load()
	if proc == nil {
		return nil // no connect ever ran: nothing counts
	}
	vals, err := p.batch.Run(ctx, p.disconnect, p.keys(bucket(user)), user, connName(*proc, conn), p.opt.NodeID).Slice()
	if err != nil {
		return fmt.Errorf("presence: disconnect %s: %w", user, err)
	}
	return p.ev.AppendReturned(ctx, vals)
}

// Count returns user's live connections across the deployment and on how many gateway
// processes.
func (p *Redis) Count(ctx context.Context, user string) (conns, nodes int, err error) {
	v, err := p.rdb.HGet(ctx, keys.Prefix(p.opt.Prefix).Presence(bucket(user)), user).Result()
	if errors.Is(err, redis.Nil) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("presence: count %s: %w", user, err)
	}
	all := strings.Split(v, ",")
	seen := make(map[string]struct{}, len(all))
	for _, c := range all {
		proc, _, _ := strings.Cut(c, ".")
		seen[proc] = struct{}{}
	}
	return len(all), len(seen), nil
}

// Start takes this process's number, removes what earlier processes with this node id left
// behind (they died, so their connections are gone; retried until Redis answers), then begins
// the heartbeat, which also reaps dead nodes. Close stops it.
func (p *Redis) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for ctx.Err() == nil {
			own, err := p.ownProc(ctx)
			if err == nil {
				err = p.reap(ctx, p.opt.NodeID, own)
			}
			if err == nil {
				break
			}
			p.log.Warn("removing an earlier process's connections failed, retrying", "err", err)
			ctxsleep.Sleep(ctx, p.opt.Heartbeat)
		}
		p.run(ctx)
	}()
}

// Close stops the heartbeat and takes this process out of ws:procs and this node out of the
// node set: its connections ended (Hub.Shutdown) and uncounted themselves. If some of those
// disconnects are still waiting for a retry, both stay, so that the others reap this node.
// Then it stops the batcher.
func (p *Redis) Close(ctx context.Context) {
	if p.cancel != nil {
		p.cancel()
		p.wg.Wait()
		p.mu.Lock()
		pending := len(p.retry)
		p.mu.Unlock()
		if pending > 0 {
			p.log.Warn("disconnects not made; leaving this node to the others to reap", "disconnects", pending)
		} else if err := p.leave(ctx); err != nil {
			p.log.Warn("leaving the node set failed; the others will reap this node", "err", err)
		}
	}
	p.batch.Close()
}

func (p *Redis) leave(ctx context.Context) error {
	if id := p.proc.Load(); id != nil {
		if err := p.rdb.HDel(ctx, p.procs(), *id).Err(); err != nil {
			return err
		}
	}
	return p.rdb.ZRem(ctx, p.nodes(), p.opt.NodeID).Err()
}

func (p *Redis) run(ctx context.Context) {
	t := time.NewTicker(p.opt.Heartbeat)
	defer t.Stop()
	for {
		p.tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tick beats, retries failed disconnects and reaps the nodes that stopped beating.
func (p *Redis) tick(ctx context.Context) {
	p.mu.Lock()
	retry := p.retry
	p.retry = make(map[leftConn]struct{})
	p.mu.Unlock()
	for c := range retry {
		if err := p.Disconnect(ctx, c.user, c.conn); err != nil {
			break // Redis is still away: the rest waits too (Disconnect kept this one)
		}
		delete(retry, c)
	}
	if len(retry) > 0 {
		p.mu.Lock()
		for c := range retry {
			if len(p.retry) < maxRetries {
				p.retry[c] = struct{}{}
			}
		}
		p.mu.Unlock()
	}

	tctx, cancel := context.WithTimeout(ctx, p.opt.Heartbeat)
	defer cancel()
	dead, err := p.beat.Run(tctx, p.rdb, []string{p.nodes()}, p.opt.NodeID, p.opt.DeadAfter.Milliseconds()).StringSlice()
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("presence heartbeat failed", "err", err)
		}
		return
	}
	for _, node := range dead {
		// One survivor reaps a node: the lock outlives a reaping, and expires if the
		// reaper dies, so that another finishes the job (drop is idempotent).
		lock := keys.Prefix(p.opt.Prefix).Reap(node)
		ok, err := p.rdb.SetNX(ctx, lock, p.opt.NodeID, 30*time.Second).Result()
		if err != nil || !ok {
			continue
		}
		if err := p.reap(ctx, node, ""); err != nil {
			p.log.Warn("reaping a dead node failed; retried later", "dead_node", node, "err", err)
			continue
		}
		p.log.Info("reaped a dead node", "dead_node", node)
		_ = p.rdb.ZRem(ctx, p.nodes(), node).Err()
		_ = p.rdb.Del(ctx, lock).Err()
	}
}

// reap removes from every bucket the connections of node's processes but keep (this process,
// or "") and emits offline for the users left with none; then those processes leave ws:procs.
func (p *Redis) reap(ctx context.Context, node, keep string) error {
	all, err := p.rdb.HGetAll(ctx, p.procs()).Result()
	if err != nil {
		return fmt.Errorf("presence: reap %s: %w", node, err)
	}
	var gone []string
	args := []any{node}
	for proc, n := range all {
		if n == node && proc != keep && proc != seqField {
			gone = append(gone, proc)
			args = append(args, proc)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	errs := make([]error, buckets)
	var wg sync.WaitGroup
	for b := range buckets {
		wg.Go(func() {
			vals, err := p.batch.Run(ctx, p.drop, p.keys(b), args...).Slice()
			if err == nil {
				err = p.ev.AppendReturned(ctx, vals)
			}
			errs[b] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("presence: reap %s: %w", node, err)
	}
	if err := p.rdb.HDel(ctx, p.procs(), gone...).Err(); err != nil {
		return fmt.Errorf("presence: reap %s: %w", node, err)
	}
	return nil
}
