package ws

import "time"

// maxPingSlots is how many rounds each shard's ping timer splits one interval into.
const maxPingSlots = 16

// pingSlots is the number of ping rounds per shard and interval: up to maxPingSlots, fewer
// when that would make a shard's timer fire more often than every 64 ms.
func pingSlots(interval time.Duration) int {
	return int(min(maxPingSlots, max(1, interval/(64*time.Millisecond))))
}

// pingShard asks the connections of sh in ping slot round (of slots) for a ping; their writers
// send it. A connection is pinged once per ping interval, its first time within one interval
// of its connect.
func (h *Hub) pingShard(sh *shard, round, slots int) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, u := range sh.users {
		for _, c := range u.conns {
			if int(c.id%uint64(slots)) != round {
				continue
			}
			c.mu.Lock()
			c.pingLocked()
			c.mu.Unlock()
		}
	}
}

// startPingers starts one ping timer per shard, staggered over the ping interval, instead of a
// ticker per connection: an idle connection then needs no goroutine or timer of its own.
func (h *Hub) startPingers() {
	if h.cfg.PingInterval <= 0 {
		return
	}
	// Each shard's timer fires slots times per interval and pings the connections whose
	// id falls in that slot: 64 × slots evenly spaced rounds per interval. One round per
	// shard per interval pinged ~160 of 10,000 connections at once, ~5 ms of writes and
	// pong reads on one core, which showed in the delivery p99. The period stays at least
	// 64 ms, so a short test ping-interval does not turn into thousands of timers a second.
	slots := pingSlots(h.cfg.PingInterval)
	period := h.cfg.PingInterval / time.Duration(slots)
	for i := range h.shards {
		sh := &h.shards[i]
		first := period * time.Duration(i+1) / numShards
		round := 0
		var t *time.Timer
		t = time.AfterFunc(time.Hour, func() {
			if h.draining.Load() {
				return // Shutdown closes every connection; no more pings
			}
			h.pingShard(sh, round, slots)
			round = (round + 1) % slots
			if !h.draining.Load() {
				t.Reset(period)
			}
		})
		t.Reset(first) // after t and round are set: the callback uses them
		h.pingers[i] = t
	}
}
