package main

import (
	"log/slog"
	"math"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memLimitRatio is the share of the container's memory the Go heap may aim for, leaving room
// for what the runtime does not count (goroutine stacks are counted; kernel socket buffers
// and the binary are not).
const memLimitRatio = 0.9

// setMemoryLimit sets the Go runtime's soft memory limit to memLimitRatio of the limit limits
// reports (the cgroup's memory.max in production), unless GOMEMLIMIT is set: near the limit
// the GC then collects harder instead of the kernel killing the process in a connection storm.
// Without a limit nothing changes. README "Deploy" documents it (AUTOMEMLIMIT=off disables it).
func setMemoryLimit(log *slog.Logger, limits memlimit.Provider) {
	limit, err := memlimit.Set(memlimit.WithRatio(memLimitRatio), memlimit.WithProvider(limits),
		memlimit.WithLogger(slog.New(slog.DiscardHandler)))
	switch {
	case err != nil:
		log.Debug("no memory limit from the cgroup", "err", err)
	case limit != math.MaxInt64:
		log.Info("Go memory limit set", "GOMEMLIMIT", limit)
	}
}
