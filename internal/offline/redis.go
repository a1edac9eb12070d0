package offline

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed push.lua
var pushLua string

// FunctionName is the Redis Function that redis-cli users call for the same push-or-store the
// API does: FCALL wsgateway_push 2 'ws:user:{alice}' 'ws:offline:{alice}' 'hello'.
const FunctionName = "wsgateway_push"

// Redis is the offline store on Redis lists. Keys of one user share the hash tag {id}, so a
// Cluster keeps the channel and the list on one shard and the script stays atomic there.
type Redis struct {
	rdb    redis.UniversalClient
	prefix string
	max    int
	ttl    time.Duration
	push   *redis.Script
	// publishCommand is PUBLISH, or SPUBLISH in Cluster mode, where a classic PUBLISH counts
	// only the subscribers of the node that ran it (FACTS.md).
	publishCommand string
	// waitReplicas > 0: a push returns only after WAIT confirmed that many replicas hold it.
	waitReplicas int
	waitTimeout  time.Duration
	// batch shares round trips between concurrent pushes and drains; Close stops it.
	batch *batcher
}

// ErrNotReplicated means WAIT timed out before enough replicas confirmed a push. The message
// was published or stored on the master; the caller answers 503, and a retry may duplicate it.
var ErrNotReplicated = errors.New("offline: not confirmed by enough replicas in time")

// RequireReplicas makes every push wait until n replicas hold it (Redis WAIT), at most timeout.
// Replication is asynchronous: without it, a message stored offline on a master that dies
// before replicating is gone after the failover.
func (s *Redis) RequireReplicas(n int, timeout time.Duration) {
	s.waitReplicas, s.waitTimeout = n, timeout
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
func (s *Redis) pushWait(ctx context.Context, user string, data []byte) (int64, error) {
	node, err := s.nodeFor(ctx, s.Key(user))
	if err != nil {
		return 0, err
	}
	for attempt := 0; ; attempt++ {
		var push *redis.Cmd
		var wait *redis.Cmd
		_, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
			push = s.push.EvalSha(ctx, p, []string{s.Channel(user), s.Key(user)}, data, s.max, s.ttlSeconds())
			wait = p.Do(ctx, "WAIT", s.waitReplicas, s.waitTimeout.Milliseconds())
			return nil
		})
		if perr := push.Err(); perr != nil && redis.HasErrorPrefix(perr, "NOSCRIPT") && attempt == 0 {
			if err := s.push.Load(ctx, node).Err(); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, err
		}
		if n, _ := wait.Int64(); n < int64(s.waitReplicas) {
			return 0, ErrNotReplicated
		}
		return push.Int64()
	}
}

// NewRedis returns a store for keys under prefix (e.g. "ws:"). sharded selects SPUBLISH.
func NewRedis(rdb redis.UniversalClient, prefix string, max int, ttl time.Duration, sharded bool) *Redis {
	cmd := "PUBLISH"
	if sharded {
		cmd = "SPUBLISH"
	}
	src := strings.Replace(pushLua, "PUBLISH_COMMAND", "'"+cmd+"'", 1) +
		"\nreturn push(KEYS, ARGV, 0, 0)\n"
	return &Redis{
		rdb: rdb, prefix: prefix, max: max, ttl: ttl, push: redis.NewScript(src), publishCommand: cmd,
		batch: newBatcher(rdb),
	}
}

// Close stops the workers that batch concurrent Push and Drain calls, after the batches in
// flight; later calls get ErrClosed. It does not close the Redis client, which the caller
// owns: close that afterwards.
func (s *Redis) Close() { s.batch.close() }

// Channel returns the pub/sub channel of user.
func (s *Redis) Channel(user string) string { return s.prefix + "user:{" + user + "}" }

// Key returns the offline list of user.
func (s *Redis) Key(user string) string { return s.prefix + "offline:{" + user + "}" }

func (s *Redis) ttlSeconds() string {
	sec := int64(s.ttl / time.Second)
	if sec < 1 {
		sec = 1
	}
	return strconv.FormatInt(sec, 10)
}

// Push publishes data to user, or stores it when no node is subscribed. Concurrent pushes
// share pipelines (the batcher); with RequireReplicas each push waits on its own.
func (s *Redis) Push(ctx context.Context, user string, data []byte) (online bool, err error) {
	var n int64
	if s.waitReplicas > 0 {
		n, err = s.pushWait(ctx, user, data)
	} else {
		n, err = s.batch.run(ctx, s.push, []string{s.Channel(user), s.Key(user)}, data, s.max, s.ttlSeconds()).Int64()
	}
	if err != nil {
		return false, fmt.Errorf("offline: push %s: %w", user, err)
	}
	return n > 0, nil
}

// PushMany pushes data to every user in one pipeline (one round trip instead of one per user).
func (s *Redis) PushMany(ctx context.Context, users []string, data []byte) ([]bool, error) {
	online := make([]bool, len(users))
	if s.waitReplicas > 0 {
		// Each push waits for its replicas on its own node's connection; simple, and the
		// WAIT round trip dominates anyway.
		for i, u := range users {
			o, err := s.Push(ctx, u, data)
			if err != nil {
				return nil, err
			}
			online[i] = o
		}
		return online, nil
	}
	run := func(idx []int) ([]int, error) {
		cmds := make([]*redis.Cmd, len(idx))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range idx {
				u := users[i]
				cmds[j] = s.push.EvalSha(ctx, p, []string{s.Channel(u), s.Key(u)}, data, s.max, s.ttlSeconds())
			}
			return nil
		})
		var retry []int
		for j, c := range cmds {
			n, cerr := c.Int64()
			switch {
			case cerr == nil:
				online[idx[j]] = n > 0
			case redis.HasErrorPrefix(cerr, "NOSCRIPT"):
				retry = append(retry, idx[j]) // not run: safe to run again
			default:
				return nil, fmt.Errorf("offline: push to %d users: %w", len(users), cerr)
			}
		}
		if err != nil && len(retry) == 0 {
			return nil, fmt.Errorf("offline: push to %d users: %w", len(users), err)
		}
		return retry, nil
	}
	all := make([]int, len(users))
	for i := range all {
		all[i] = i
	}
	retry, err := run(all)
	if err != nil {
		return nil, err
	}
	if len(retry) > 0 {
		if err := s.push.Load(ctx, s.rdb).Err(); err != nil {
			return nil, fmt.Errorf("offline: load push script: %w", err)
		}
		if retry, err = run(retry); err != nil {
			return nil, err
		}
		if len(retry) > 0 {
			return nil, errors.New("offline: push script vanished twice")
		}
	}
	return online, nil
}

// drainLua takes the list in a way that survives a lost reply: the list is renamed to a key
// named by the caller's token (same slot, via the hash tag) and returned; the same call run
// again — go-redis retries a command whose reply was lost, e.g. when Redis shuts down — finds
// that key and returns the same messages instead of an empty list.
// KEYS[1]: the offline list, KEYS[2]: the taken key of this call; ARGV[1]: its TTL in ms.
const drainLua = `
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.call('LRANGE', KEYS[2], 0, -1) end
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return redis.call('LRANGE', KEYS[2], 0, -1)
`

var drainScript = redis.NewScript(drainLua)

// takenTTL bounds how long taken messages stay in Redis when the gateway never came back for
// them (it deletes the key as soon as it has them).
const takenTTL = time.Minute

// drainRetryFor bounds the retries of one drain: long enough for a Redis restart, short
// enough that a connect does not hang on a Redis that is gone (it then gets 1011).
const drainRetryFor = 3 * time.Second

// Drain atomically takes every stored message of user, oldest first. When the reply is lost
// (Redis restarting), the same call is retried — by go-redis, then here until ctx ends — and
// returns the same messages, so none are lost between Redis and the connection. Concurrent
// drains (a connect storm) share pipelines through the batcher; each keeps its own token, so
// running one again, alone or in another batch, stays idempotent.
func (s *Redis) Drain(ctx context.Context, user string) ([][]byte, error) {
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	taken := s.Key(user) + ":taken:" + hex.EncodeToString(tok[:])
	keys := []string{s.Key(user), taken}
	var vals []string
	var err error
	giveUp := time.Now().Add(drainRetryFor)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		vals, err = s.batch.run(ctx, drainScript, keys, takenTTL.Milliseconds()).StringSlice()
		if err == nil || errors.Is(err, redis.Nil) || ctx.Err() != nil || !retryable(err) || time.Now().After(giveUp) {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("offline: drain %s: %w", user, err)
	}
	if len(vals) == 0 {
		return nil, nil
	}
	// Got them: the taken key has done its job (best effort; its TTL cleans up otherwise).
	_ = s.rdb.Del(context.WithoutCancel(ctx), taken).Err()
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}

// retryable reports whether err is a connection problem (the command may not have run, or its
// reply was lost), as opposed to an error reply from Redis.
func retryable(err error) bool {
	if errors.Is(err, ErrClosed) {
		return false
	}
	var rerr redis.Error
	return !errors.As(err, &rerr) || redis.HasErrorPrefix(err, "LOADING") || redis.HasErrorPrefix(err, "TRYAGAIN")
}

// Requeue puts msgs (oldest first) back at the head of user's list, ahead of anything stored
// meanwhile, keeping the newest offline-max.
func (s *Redis) Requeue(ctx context.Context, user string, msgs [][]byte) error {
	if len(msgs) == 0 {
		return nil
	}
	// LPUSH inserts its arguments one by one at the head, so the last argument ends up first:
	// pass them newest first.
	args := make([]any, len(msgs))
	for i, m := range msgs {
		args[len(msgs)-1-i] = m
	}
	key := s.Key(user)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, key, args...)
		p.LTrim(ctx, key, int64(-s.max), -1)
		p.Expire(ctx, key, s.ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("offline: requeue %d for %s: %w", len(msgs), user, err)
	}
	return nil
}

// Len returns how many messages wait for user.
func (s *Redis) Len(ctx context.Context, user string) (int, error) {
	n, err := s.rdb.LLen(ctx, s.Key(user)).Result()
	if err != nil {
		return 0, fmt.Errorf("offline: len %s: %w", user, err)
	}
	return int(n), nil
}

// LoadFunction installs (or replaces) the Redis Function FunctionName, so that redis-cli users
// get the same atomic push-or-store. Its cap and TTL default to this store's settings and
// may be given as the 2nd and 3rd arguments. It runs again after every Redis restart.
func (s *Redis) LoadFunction(ctx context.Context) error {
	src := "#!lua name=wsgateway\n" +
		strings.Replace(pushLua, "PUBLISH_COMMAND", "'"+s.publishCommand+"'", 1) +
		fmt.Sprintf("\nredis.register_function('%s', function(keys, args) return push(keys, args, %d, %s) end)\n",
			FunctionName, s.max, s.ttlSeconds())
	load := func(ctx context.Context, c redis.Cmdable) error { return c.FunctionLoadReplace(ctx, src).Err() }
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		// Functions live per node: every master needs it (replicas copy it).
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return load(ctx, c) })
	} else {
		err = load(ctx, s.rdb)
	}
	if err != nil {
		return fmt.Errorf("offline: load function %s: %w", FunctionName, err)
	}
	return nil
}
