package ws

import (
	"fmt"
	"testing"
	"time"
)

// A shard's ping round pings only its slot's connections, and the rounds of one interval
// together ping every connection exactly once: a round never pings the whole shard at once.
func TestPingRoundsPartitionTheShard(t *testing.T) {
	h := newTestHub(t, Config{SendQueue: 8}, Deps{}) // no ping timers: PingInterval 0
	sh := &h.shards[0]
	const n, slots = 50, 16
	var conns []*Conn
	for i := 0; i < n; i++ {
		c := h.newConn(fmt.Sprintf("u%d", i), "")
		// started, with a writer marked running: pingLocked only sets pingDue.
		c.started, c.writing = true, true
		sh.users[c.user] = &userEntry{conns: []*Conn{c}}
		conns = append(conns, c)
	}
	pinged := make(map[uint64]int)
	for round := 0; round < slots; round++ {
		h.pingShard(sh, round, slots)
		k := 0
		for _, c := range conns {
			if c.pingDue {
				if int(c.id%slots) != round {
					t.Fatalf("round %d pinged connection %d (slot %d)", round, c.id, c.id%slots)
				}
				pinged[c.id]++
				c.pingDue = false
				k++
			}
		}
		if k > n/slots+1 {
			t.Fatalf("round %d pinged %d of %d connections", round, k, n)
		}
	}
	for _, c := range conns {
		if pinged[c.id] != 1 {
			t.Fatalf("connection %d pinged %d times in one interval, want 1", c.id, pinged[c.id])
		}
	}
}

// The ping timers' period stays at least 64 ms however short ping-interval is.
func TestPingSlotsBounded(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		slots    int
	}{{25 * time.Second, 16}, {time.Second, 15}, {640 * time.Millisecond, 10}, {50 * time.Millisecond, 1}} {
		if got := pingSlots(tc.interval); got != tc.slots {
			t.Errorf("pingSlots(%v) = %d, want %d", tc.interval, got, tc.slots)
		}
	}
}
