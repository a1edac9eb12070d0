// Package presence counts every user's live connections across the deployment, enforces
// max-conns-per-user on that count, and emits online and offline events (package events)
// exactly once per transition, by the one node whose script made it.
//
// Redis keeps, per user, a hash ws:presence:{id} with one field per live connection
// ('<node>/<incarnation>.<conn>'; the incarnation is random per process, so a restarted node
// can tell its earlier process's leftovers from its own), so connect and disconnect are
// idempotent and a retried call cannot count
// twice; per node, the set ws:node:{node}:users of the users it holds; and the sorted set
// ws:nodes of every node's last heartbeat. A node that stops beating for DeadAfter is reaped by
// one of the others (a lock decides which): its fields are removed from its users' hashes and
// those left with no connection go offline.
package presence

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

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

// Options configure presence. Zero values take the defaults.
type Options struct {
	Prefix          string // key prefix; default "ws:"
	NodeID          string // this node; required
	MaxConnsPerUser int    // deployment-wide cap; default 16
	// Sharded: Redis Cluster, where a user's script may not touch the events stream or a
	// node's user set (other slots): the node appends and updates them after the script.
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

	incarnation string
	cancel      context.CancelFunc
	wg          sync.WaitGroup

	mu    sync.Mutex
	retry map[leftConn]bool // disconnects that failed, retried by the heartbeat (value: last)
}

// NewRedis returns presence on rdb; Start begins the heartbeat.
func NewRedis(rdb redis.UniversalClient, opt Options) *Redis {
	if opt.Prefix == "" {
		opt.Prefix = "ws:"
	}
	if opt.MaxConnsPerUser <= 0 {
		opt.MaxConnsPerUser = 16
	}
	if opt.Heartbeat <= 0 {
		opt.Heartbeat = 2 * time.Second
	}
	if opt.DeadAfter <= 0 {
		opt.DeadAfter = 10 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	return &Redis{
		rdb: rdb, opt: opt, log: opt.Logger, batch: scripts.New(rdb), retry: make(map[leftConn]bool),
		incarnation: strconv.FormatUint(rand.Uint64(), 36),
		ev:          events.NewWriter(rdb, keys.Prefix(opt.Prefix).Events()),
		connect:     events.NewScript(connectLua),
		disconnect:  events.NewScript(disconnectLua),
		drop:        events.NewScript(dropLua),
		beat:        redis.NewScript(beatLua),
	}
}

func (p *Redis) key(user string) string       { return keys.Prefix(p.opt.Prefix).Presence(user) }
func (p *Redis) nodeUsers(node string) string { return keys.Prefix(p.opt.Prefix).NodeUsers(node) }
func (p *Redis) nodes() string                { return keys.Prefix(p.opt.Prefix).Nodes() }
func (p *Redis) field(conn uint64) string {
	return p.own() + strconv.FormatUint(conn, 10)
}

// own is the field prefix of this process's connections.
func (p *Redis) own() string { return p.opt.NodeID + "/" + p.incarnation + "." }

// keys are a user script's keys: the user's hash, and in single-node Redis the events stream
// and node's user set, which the script then updates itself.
func (p *Redis) keys(user, node string) []string {
	if p.opt.Sharded {
		return []string{p.key(user)}
	}
	return []string{p.key(user), p.ev.Stream(), p.nodeUsers(node)}
}

// Connect counts one more connection (conn, unique on this node) of user. False: the user
// holds max-conns-per-user connections already, anywhere (the caller answers 429).
func (p *Redis) Connect(ctx context.Context, user string, conn uint64) (bool, error) {
	vals, err := p.batch.Run(ctx, p.connect, p.keys(user, p.opt.NodeID),
		p.field(conn), p.opt.MaxConnsPerUser, user, p.opt.NodeID).Slice()
	if err != nil {
		return false, fmt.Errorf("presence: connect %s: %w", user, err)
	}
	if len(vals) == 0 {
		return false, fmt.Errorf("presence: connect %s: empty reply", user)
	}
	if allowed, _ := vals[0].(int64); allowed != 1 {
		return false, nil
	}
	if p.opt.Sharded { // idempotent; the script updated it itself elsewhere
		if err := p.rdb.SAdd(ctx, p.nodeUsers(p.opt.NodeID), user).Err(); err != nil {
			return true, fmt.Errorf("presence: connect %s: %w", user, err)
		}
	}
	return true, p.appendEvents(ctx, vals[1:])
}

// Disconnect uncounts connection conn of user; last says it was this node's last connection
// of the user. When Redis cannot be reached, the call is kept and made again at the next
// heartbeats (else the connection would count for good): the error is only for the log.
func (p *Redis) Disconnect(ctx context.Context, user string, conn uint64, last bool) error {
	err := p.disconnectOnce(ctx, user, conn, last)
	if err != nil {
		p.mu.Lock()
		if len(p.retry) < maxRetries {
			p.retry[leftConn{user, conn}] = p.retry[leftConn{user, conn}] || last
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

func (p *Redis) disconnectOnce(ctx context.Context, user string, conn uint64, last bool) error {
	l := "0"
	if last {
		l = "1"
	}
	vals, err := p.batch.Run(ctx, p.disconnect, p.keys(user, p.opt.NodeID), p.field(conn), user, p.opt.NodeID, l).Slice()
	if err != nil {
		return fmt.Errorf("presence: disconnect %s: %w", user, err)
	}
	if p.opt.Sharded && last {
		if err := p.rdb.SRem(ctx, p.nodeUsers(p.opt.NodeID), user).Err(); err != nil {
			return fmt.Errorf("presence: disconnect %s: %w", user, err)
		}
	}
	return p.appendEvents(ctx, vals)
}

// appendEvents appends what a script returned instead of emitting it (Cluster mode).
func (p *Redis) appendEvents(ctx context.Context, vals []any) error {
	return p.ev.AppendReturned(ctx, vals)
}

// Count returns user's live connections across the deployment and on how many nodes.
func (p *Redis) Count(ctx context.Context, user string) (conns, nodes int, err error) {
	fields, err := p.rdb.HKeys(ctx, p.key(user)).Result()
	if err != nil {
		return 0, 0, fmt.Errorf("presence: count %s: %w", user, err)
	}
	seen := make(map[string]struct{}, len(fields))
	for _, f := range fields {
		node, _, _ := strings.Cut(f, "/")
		seen[node] = struct{}{}
	}
	return len(fields), len(seen), nil
}

// Start begins the heartbeat, which also reaps dead nodes, after removing what an earlier
// process with this node id left behind (it died, so its connections are gone; retried until
// Redis answers). Close stops it.
func (p *Redis) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for ctx.Err() == nil {
			err := p.reap(ctx, p.opt.NodeID, p.own())
			if err == nil {
				break
			}
			p.log.Warn("removing an earlier process's connections failed, retrying", "err", err)
			sleep(ctx, p.opt.Heartbeat)
		}
		p.run(ctx)
	}()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Close stops the heartbeat, and takes this node out of the node set: its connections ended
// (Hub.Shutdown) and uncounted themselves. Then it stops the batcher.
func (p *Redis) Close(ctx context.Context) {
	if p.cancel != nil {
		p.cancel()
		p.wg.Wait()
		if err := p.rdb.ZRem(ctx, p.nodes(), p.opt.NodeID).Err(); err != nil {
			p.log.Warn("leaving the node set failed; the others will reap this node", "err", err)
		}
	}
	p.batch.Close()
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
	p.retry = make(map[leftConn]bool)
	p.mu.Unlock()
	for c, last := range retry {
		if err := p.Disconnect(ctx, c.user, c.conn, last); err != nil {
			break // Redis is still away: the rest waits too (Disconnect kept this one)
		}
		delete(retry, c)
	}
	if len(retry) > 0 {
		p.mu.Lock()
		for c, last := range retry {
			if _, kept := p.retry[c]; !kept && len(p.retry) < maxRetries {
				p.retry[c] = last
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

// reap removes every connection node held (but those whose field starts with keep) and emits
// offline for the users left with none. A dead node's user set goes with it.
func (p *Redis) reap(ctx context.Context, node, keep string) error {
	set := p.nodeUsers(node)
	var cursor uint64
	for {
		users, next, err := p.rdb.SScan(ctx, set, cursor, "", 512).Result()
		if err != nil {
			return fmt.Errorf("presence: reap %s: %w", node, err)
		}
		errs := make([]error, len(users))
		var wg sync.WaitGroup
		for i, u := range users {
			wg.Go(func() {
				vals, err := p.batch.Run(ctx, p.drop, p.keys(u, node), node+"/", u, node, keep).Slice()
				if err == nil {
					err = p.appendEvents(ctx, vals)
				}
				errs[i] = err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("presence: reap %s: %w", node, err)
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if keep != "" {
		return nil // this node's own set: it holds its current users too
	}
	if err := p.rdb.Del(ctx, set).Err(); err != nil {
		return fmt.Errorf("presence: reap %s: %w", node, err)
	}
	return nil
}
