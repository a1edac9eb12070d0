package main

import (
	"errors"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

func TestSetMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	t.Setenv("GOMEMLIMIT", "")
	log := slog.New(slog.DiscardHandler)

	setMemoryLimit(log, memlimit.Limit(1<<30))
	ratio := memLimitRatio
	if got, want := debug.SetMemoryLimit(-1), int64(float64(1<<30)*ratio); got != want {
		t.Fatalf("with a 1 GiB cgroup limit: GOMEMLIMIT %d, want %d", got, want)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	setMemoryLimit(log, func() (uint64, error) { return 0, errors.New("no cgroup") })
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("without a cgroup: GOMEMLIMIT %d, want unchanged", got)
	}

	t.Setenv("GOMEMLIMIT", "100MiB") // the operator's setting wins
	setMemoryLimit(log, memlimit.Limit(1<<30))
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("with GOMEMLIMIT set: %d, want the runtime's own (unchanged here)", got)
	}
}
