package inbox

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// FunctionName is the Redis Function redis-cli users call for the same push the API does:
// FCALL wsgateway_push 2 'ws:user:{alice}' 'ws:inbox:{alice}' 'hello' [id].
const FunctionName = "wsgateway_push"

// LoadFunction installs (or replaces) the Redis Function FunctionName, so that redis-cli users
// get the same push as the API, with this inbox's cap and TTLs. It runs again after every
// Redis restart (the bus's OnReady).
func (s *Redis) LoadFunction(ctx context.Context) error {
	src := "#!lua name=wsgateway\n" + pushLua + strings.NewReplacer(
		"PUBLISH_COMMAND", "'"+publishCommand(s.opt.Sharded)+"'",
		"PREFIX_PATTERN", luaQuote(patternEscape(s.opt.Prefix)),
		"PREFIX", luaQuote(s.opt.Prefix),
		"DEDUP_TTL", strconv.FormatInt(seconds(s.opt.DedupTTL), 10),
		"UNDELIVERED_MS", strconv.FormatInt(s.functionUndelivered(), 10),
		"DUE_KEY", s.functionDueKey(),
		"MAX", strconv.Itoa(s.opt.Max),
		"TTL", strconv.FormatInt(seconds(s.opt.TTL), 10),
	).Replace(functionLua)
	load := func(ctx context.Context, c redis.Cmdable) error { return c.FunctionLoadReplace(ctx, src).Err() }
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		// Functions live per node: every master needs it (replicas copy it).
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return load(ctx, c) })
	} else {
		err = load(ctx, s.rdb)
	}
	if err != nil {
		return fmt.Errorf("inbox: load function %s: %w", FunctionName, err)
	}
	return nil
}

// functionUndelivered is the Function's undelivered-after in ms: 0 in a Cluster, where the
// Function cannot reach the schedule.
func (s *Redis) functionUndelivered() int64 {
	if s.opt.Sharded {
		return 0
	}
	return s.opt.UndeliveredAfter.Milliseconds()
}

func (s *Redis) functionDueKey() string {
	if s.opt.Sharded {
		return "nil"
	}
	return luaQuote(s.dueKey())
}

// luaQuote makes s a Lua string literal.
func luaQuote(s string) string { return strconv.Quote(s) }

// patternEscape escapes Lua pattern magic characters in s.
func patternEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("^$()%.[]*+-?", r) {
			b.WriteByte('%')
		}
		b.WriteRune(r)
	}
	return b.String()
}
