package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisCmd is one command's share of Redis's time during the measured phase (INFO
// commandstats, after minus before): what tells one server's use of Redis from another's.
type redisCmd struct {
	Calls       int64   `json:"calls"`
	Usec        int64   `json:"usec"`
	UsecPerCall float64 `json:"usec_per_call"`
	PerPush     float64 `json:"calls_per_push"` // calls per accepted push (request)
}

// redisCommandStats reads INFO commandstats as command → calls, usec.
func redisCommandStats(ctx context.Context, rdb *redis.Client) (map[string]redisCmd, error) {
	m, err := redisInfo(ctx, rdb, "commandstats")
	if err != nil {
		return nil, err
	}
	out := make(map[string]redisCmd)
	for k, v := range m {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		var c redisCmd
		for _, f := range strings.Split(v, ",") {
			fk, fv, _ := strings.Cut(f, "=")
			switch fk {
			case "calls":
				c.Calls, _ = strconv.ParseInt(fv, 10, 64)
			case "usec":
				c.Usec, _ = strconv.ParseInt(fv, 10, 64)
			}
		}
		out[name] = c
	}
	return out, nil
}

// commandDelta is after minus before, per command that ran in between, with its rates per
// accepted push.
func commandDelta(before, after map[string]redisCmd, accepted int64) map[string]redisCmd {
	out := make(map[string]redisCmd)
	for name, a := range after {
		c := redisCmd{Calls: a.Calls - before[name].Calls, Usec: a.Usec - before[name].Usec}
		if c.Calls <= 0 {
			continue
		}
		c.UsecPerCall = float64(c.Usec) / float64(c.Calls)
		if accepted > 0 {
			c.PerPush = float64(c.Calls) / float64(accepted)
		}
		out[name] = c
	}
	return out
}

// formatCommands is the summary line: the commands that took most of Redis's time first. A
// script's own usec includes the commands it calls, which are also counted on their own.
func formatCommands(cmds map[string]redisCmd) string {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return cmds[names[i]].Usec > cmds[names[j]].Usec })
	var parts []string
	for _, n := range names[:min(len(names), 5)] {
		c := cmds[n]
		parts = append(parts, fmt.Sprintf("%s %d calls (%.2f/push) %.1f µs/call", n, c.Calls, c.PerPush, c.UsecPerCall))
	}
	return strings.Join(parts, ", ")
}
