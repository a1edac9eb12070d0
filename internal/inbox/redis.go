package inbox

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/defaults"
	"github.com/wsgateway/wsgateway/internal/events"
	"github.com/wsgateway/wsgateway/internal/keys"
	"github.com/wsgateway/wsgateway/internal/scripts"
)

var (
	//go:embed lua/push.lua
	pushLua string
	//go:embed lua/script.lua
	scriptLua string
	//go:embed lua/function.lua
	functionLua string
	//go:embed lua/read.lua
	readLua string
	//go:embed lua/ack.lua
	ackLua string
	//go:embed lua/due.lua
	dueLua string
	//go:embed lua/claim.lua
	claimLua string
	//go:embed lua/release.lua
	releaseLua string
)

// Redis is the inbox on Redis: per user a list ws:inbox:{id} and a hash ws:inbox:{id}:state,
// plus ws:inbox:{id}:id:<push id> for de-duplication (lua/push.lua). Every key of a user shares
// the hash tag {id}, so a Cluster keeps them and the user's channel on one shard, where each
// script runs atomically.
type Redis struct {
	rdb  redis.UniversalClient
	opt  Options
	push *redis.Script
	// pushBatch runs many pushes in one call (lua/batch.lua, pushbatch.go).
	pushBatch *redis.Script
	read      *redis.Script
	ack       *redis.Script
	batch     *scripts.Batcher // shares round trips between concurrent calls; Close stops it
	// pushes makes batches of concurrent pushes (single-node Redis; nil in a Cluster).
	pushes *scripts.Runner[*pushCall]
	ev     *events.Writer
	due    dueRunner // the undelivered schedule (due.go)
}

// Options configure the Redis inbox. Zero durations take the defaults of the gateway's flags.
type Options struct {
	Prefix    string        // key and channel prefix; default "ws:"
	Max       int           // offline-max: messages kept per user; default 1000
	TTL       time.Duration // offline-ttl: the inbox expires this long after its last push
	ResumeTTL time.Duration // resume-ttl: acknowledged messages stay readable at least this long
	DedupTTL  time.Duration // dedup-ttl: a push id is remembered this long
	// Sharded selects SPUBLISH (Redis Cluster), where a classic PUBLISH counts only the
	// subscribers of the node that ran it.
	Sharded bool
	// WaitReplicas > 0: a push returns only after WAIT confirmed that many replicas hold it,
	// waiting at most WaitTimeout. Replication is asynchronous: without it, a message on a
	// master that dies before replicating is gone after the failover.
	WaitReplicas int
	WaitTimeout  time.Duration
	// NodeID names this node in the events it emits.
	NodeID string
	// UndeliveredAfter > 0: a message still unacknowledged this long after its push emits an
	// undelivered event (StartDue runs the schedule).
	UndeliveredAfter time.Duration
}

// PushOptions are a push's own settings.
type PushOptions struct {
	// ID makes the push idempotent for dedup-ttl: a repeat answers the first push's number
	// with Duplicate set, storing and sending nothing.
	ID string
	// Receipt asks for a delivered event at the message's first acknowledgement.
	Receipt bool
}

func (o *Options) defaults() {
	defaults.String(&o.Prefix, "ws:")
	defaults.Positive(&o.Max, 1000)
	defaults.Positive(&o.TTL, 168*time.Hour)
	defaults.Positive(&o.ResumeTTL, 5*time.Minute)
	defaults.Positive(&o.DedupTTL, 10*time.Minute)
	defaults.Positive(&o.WaitTimeout, time.Second)
}

// ErrNotReplicated means WAIT timed out before enough replicas confirmed a push. The message
// is in the inbox on the master; a retry with the same id does not store it twice.
var ErrNotReplicated = errors.New("inbox: not confirmed by enough replicas in time")

// NewRedis returns the inbox on rdb.
func NewRedis(rdb redis.UniversalClient, opt Options) *Redis {
	opt.defaults()
	s := &Redis{
		rdb:       rdb,
		opt:       opt,
		push:      redis.NewScript(pushLua + strings.Replace(scriptLua, "PUBLISH_COMMAND", "'"+publishCommand(opt.Sharded)+"'", 1)),
		pushBatch: redis.NewScript(pushLua + batchLua),
		read:      redis.NewScript(readLua),
		ack:       events.NewScript(ackLua),
		batch:     scripts.New(rdb),
		ev:        events.NewWriter(rdb, keys.Prefix(opt.Prefix).Events()),
	}
	if !opt.Sharded {
		s.pushes = scripts.NewRunner(s.execPushes)
	}
	s.due = dueRunner{s: s, check: events.NewScript(dueLua), claim: redis.NewScript(claimLua), release: redis.NewScript(releaseLua)}
	return s
}

// withEvents are keys of a user's script plus, in single-node Redis, the events stream, which
// the script then appends to itself (in a Cluster it lives in another slot: the caller
// appends what the script returns).
func (s *Redis) withEvents(keys ...string) []string {
	if s.opt.Sharded {
		return keys
	}
	return append(keys, s.ev.Stream())
}

// dueKey is the global undelivered schedule: user → its earliest deadline.
func (s *Redis) dueKey() string { return keys.Prefix(s.opt.Prefix).Due() }

// appendEvents appends the events a script returned instead of emitting them (Cluster).
func (s *Redis) appendEvents(ctx context.Context, vals []any) error {
	return s.ev.AppendReturned(ctx, vals)
}

func publishCommand(sharded bool) string {
	if sharded {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// Close stops the undelivered schedule and the workers that batch concurrent calls, after the
// batches in flight; later calls get ErrClosed. The Redis client is the caller's: close it
// afterwards.
func (s *Redis) Close() {
	s.due.stop()
	if s.pushes != nil {
		s.pushes.Close()
	}
	s.batch.Close()
}

// Channel returns the pub/sub channel of user.
func (s *Redis) Channel(user string) string { return keys.Prefix(s.opt.Prefix).User(user) }

// Key returns the inbox list of user; its companions share the prefix (Key + ":state", …).
func (s *Redis) Key(user string) string { return keys.Prefix(s.opt.Prefix).Inbox(user) }

// internalIDTTL is how long an id the gateway made up is remembered: a Cluster push's without
// one of its caller's, a batch's record. It only has to outlive the gateway's own retries
// (pushRetryFor, plus go-redis's retries inside each attempt), and it costs one small key while
// it lives.
const internalIDTTL = time.Minute

// NewID returns a random push id for a push whose caller gave none.
func NewID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "g" + base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *Redis) pushArgs(user string, data []byte, o PushOptions) []any {
	id, ttl := o.ID, s.opt.DedupTTL
	if id == "" {
		id, ttl = NewID(), internalIDTTL
	}
	receipt := 0
	if o.Receipt {
		receipt = 1
	}
	return []any{data, id, s.opt.Max, seconds(s.opt.TTL), seconds(ttl), receipt, s.opt.UndeliveredAfter.Milliseconds(), user}
}

func seconds(d time.Duration) int64 { return max(1, int64(d/time.Second)) }

// Push numbers data, stores it in user's inbox and publishes it. On a single Redis, pushes
// made at the same time go to Redis as one batch (pushbatch.go); in a Cluster each is a script
// run of its own, under an id the gateway makes up when the caller gave none, so that a retry
// after a lost reply is recognized.
func (s *Redis) Push(ctx context.Context, user string, data []byte, o PushOptions) (Result, error) {
	if s.pushes != nil {
		c := &pushCall{ctx: ctx, msg: Message{User: user, Data: data, PushOptions: o}, reply: make(chan Result, 1)}
		if err := s.pushes.Do(ctx, c); err != nil {
			return Result{}, fmt.Errorf("inbox: push %s: %w", user, err)
		}
		r := <-c.reply
		return r, r.Err
	}
	keys := []string{s.Channel(user), s.Key(user)}
	args := s.pushArgs(user, data, o)
	var res Result
	err := retry(ctx, func() error {
		var cmd *redis.Cmd
		if s.opt.WaitReplicas > 0 {
			var err error
			if cmd, err = s.pushWait(ctx, keys, args); err != nil {
				return err
			}
		} else {
			cmd = s.batch.Run(ctx, s.push, keys, args...)
		}
		var err error
		res, err = parsePush(cmd)
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("inbox: push %s: %w", user, err)
	}
	if res.deadline > 0 {
		// In a Cluster the schedule lives in another slot than the user: added after the
		// push, it is missed if this node dies in between (README, events).
		if err := s.rdb.ZAddLT(ctx, s.dueKey(), redis.Z{Score: float64(res.deadline), Member: user}).Err(); err != nil {
			return res, fmt.Errorf("inbox: schedule %s: %w", user, err)
		}
	}
	return res, nil
}

func parsePush(cmd *redis.Cmd) (Result, error) {
	v, err := cmd.Int64Slice()
	if err != nil {
		return Result{}, err
	}
	if len(v) < 4 {
		return Result{}, fmt.Errorf("unexpected push reply %v", v)
	}
	return Result{Seq: v[0], Receivers: v[1], Duplicate: v[2] == 1, deadline: v[3]}, nil
}

// nodeFor returns where WAIT must run for key: WAIT covers the writes of its own connection,
// so it goes in one pipeline with the push, on the node that owns key.
func (s *Redis) nodeFor(ctx context.Context, key string) (redis.Cmdable, error) {
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.MasterForKey(ctx, key)
	}
	return s.rdb, nil
}

// pushWait runs the push script and WAIT in one pipeline on one connection.
func (s *Redis) pushWait(ctx context.Context, keys []string, args []any) (*redis.Cmd, error) {
	node, err := s.nodeFor(ctx, keys[1])
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		var push, wait *redis.Cmd
		_, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
			push = s.push.EvalSha(ctx, p, keys, args...)
			wait = p.Do(ctx, "WAIT", s.opt.WaitReplicas, s.opt.WaitTimeout.Milliseconds())
			return nil
		})
		if redis.HasErrorPrefix(push.Err(), "NOSCRIPT") && attempt == 0 {
			if err := s.push.Load(ctx, node).Err(); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if n, _ := wait.Int64(); n < int64(s.opt.WaitReplicas) {
			return nil, ErrNotReplicated
		}
		return push, nil
	}
}

// Read returns what a connection of user needs to start or catch up: the numbers and the kept
// messages after position after (-1: after the acknowledged position). It only reads, so a
// call whose reply was lost is simply made again.
func (s *Redis) Read(ctx context.Context, user string, after int64) (Range, error) {
	var rng Range
	err := retry(ctx, func() error {
		vals, err := s.batch.Run(ctx, s.read, []string{s.Key(user)}, after, 0).Slice()
		if err != nil {
			return err
		}
		rng, err = parseRead(vals, after)
		return err
	})
	if err != nil {
		return Range{}, fmt.Errorf("inbox: read %s: %w", user, err)
	}
	return rng, nil
}

func parseRead(vals []any, after int64) (Range, error) {
	if len(vals) < 3 {
		return Range{}, fmt.Errorf("unexpected read reply of %d values", len(vals))
	}
	var n [3]int64
	for i := range n {
		v, ok := vals[i].(int64)
		if !ok {
			return Range{}, fmt.Errorf("unexpected read reply %v", vals[:3])
		}
		n[i] = v
	}
	r := Range{Latest: n[0], First: n[1], Acked: n[2]}
	r.Start = r.startAfter(after)
	r.Msgs = make([][]byte, 0, len(vals)-3)
	for _, v := range vals[3:] {
		s, ok := v.(string)
		if !ok {
			return Range{}, fmt.Errorf("unexpected message of type %T in read reply", v)
		}
		r.Msgs = append(r.Msgs, []byte(s))
	}
	return r, nil
}

// Ack moves user's acknowledged position to seq (never backwards, never above the latest),
// and emits delivered for the messages pushed with a receipt up to it.
func (s *Redis) Ack(ctx context.Context, user string, seq int64) error {
	vals, err := s.batch.Run(ctx, s.ack, s.withEvents(s.Key(user)), seq, s.opt.ResumeTTL.Milliseconds(),
		user, s.opt.NodeID).Slice()
	if err == nil && len(vals) > 1 {
		err = s.appendEvents(ctx, vals[1:])
	}
	if err != nil {
		return fmt.Errorf("inbox: ack %s: %w", user, err)
	}
	return nil
}
