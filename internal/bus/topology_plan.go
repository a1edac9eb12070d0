package bus

import (
	"cmp"
	"net"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/keys"
)

// The decisions of a topology round, as pure functions of the slot map and of what the Cluster
// holds: no locks, no Redis. Cluster.apply (topology.go) carries them out.

// slotOwner says that the master at addr owns the slots start to end.
type slotOwner struct {
	start, end int
	addr       string
}

// slotMap converts CLUSTER SHARDS into the owner of every slot range, sorted by start, and the
// masters that own a slot. A failed master owns nothing: its slots stay uncovered until a
// replica takes over. A node that announces no endpoint ("?" or "") is reached at its IP.
func slotMap(shards []redis.ClusterShard) ([]slotOwner, map[string]bool) {
	var owners []slotOwner
	masters := map[string]bool{}
	for _, sh := range shards {
		addr := ""
		for _, n := range sh.Nodes {
			if n.Role == "master" && n.Health != "fail" {
				host := n.Endpoint
				if host == "" || host == "?" {
					host = n.IP
				}
				addr = net.JoinHostPort(host, strconv.FormatInt(n.Port, 10))
			}
		}
		if addr == "" || len(sh.Slots) == 0 {
			continue
		}
		masters[addr] = true
		for _, r := range sh.Slots {
			owners = append(owners, slotOwner{start: int(r.Start), end: int(r.End), addr: addr})
		}
	}
	slices.SortFunc(owners, func(a, b slotOwner) int { return a.start - b.start })
	return owners, masters
}

// ownerAt returns the address of the master that owns slot in owners (sorted by start), or ""
// when no master does.
func ownerAt(owners []slotOwner, slot int) string {
	i, found := slices.BinarySearchFunc(owners, slot, func(o slotOwner, slot int) int {
		switch {
		case o.end < slot:
			return -1
		case o.start > slot:
			return 1
		}
		return 0
	})
	if !found {
		return ""
	}
	return owners[i].addr
}

// probeChannelFor returns a probe channel of node whose hash tag lands in a slot addr owns: the
// probe then tests exactly that shard's path.
func probeChannelFor(prefix, node, addr string, owners []slotOwner) string {
	for i := 0; i < 1<<16; i++ {
		ch := keys.Prefix(prefix).Probe(node + "-" + strconv.Itoa(i))
		if ownerAt(owners, Slot(ch)) == addr {
			return ch
		}
	}
	return keys.Prefix(prefix).Probe(node) // the master owns no slot: it will be retired
}

// clusterState is what a round decides against.
type clusterState struct {
	slots  []slotOwner    // the slot map applied last
	probes map[string]int // shard address → the slot of its probe channel
	users  []placedUser
}

// placedUser is a subscribed user, the slot of its channel, and the address of the shard it is
// subscribed on: "" for a shard retired in an earlier round (a master that came back has a new
// shard, which the user is not on).
type placedUser struct {
	user  string
	slot  int
	shard string
}

// topologyPlan is what a round does, each list sorted.
type topologyPlan struct {
	changed bool       // the slot map differs from the one applied last
	start   []string   // masters without a shard
	reprobe []string   // shards whose probe's slot moved to another master
	moves   []userMove // users whose slot's owner is not the shard they are on
	retire  []string   // shards of nodes that own no slot any more
}

type userMove struct{ user, from, to string }

// planTopology decides a round from the new slot map (owners sorted by start; masters, the
// addresses in owners) and st. Moves are planned on every round, not only when the map changed:
// a move fails while the new shard's connection is still being set up, and is retried.
func planTopology(owners []slotOwner, masters map[string]bool, st clusterState) topologyPlan {
	p := topologyPlan{changed: !slices.Equal(owners, st.slots)}
	if p.changed {
		for addr := range masters {
			if _, ok := st.probes[addr]; !ok {
				p.start = append(p.start, addr)
			}
		}
		// A shard whose probe's slot moved away would never hear its probe again.
		for addr, slot := range st.probes {
			if masters[addr] && ownerAt(owners, slot) != addr {
				p.reprobe = append(p.reprobe, addr)
			}
		}
	}
	for _, u := range st.users {
		// No owner (slots uncovered mid-failover): wait for the next round.
		if to := ownerAt(owners, u.slot); to != "" && to != u.shard {
			p.moves = append(p.moves, userMove{u.user, u.shard, to})
		}
	}
	for addr := range st.probes {
		if !masters[addr] {
			p.retire = append(p.retire, addr)
		}
	}
	slices.Sort(p.start)
	slices.Sort(p.reprobe)
	slices.Sort(p.retire)
	slices.SortFunc(p.moves, func(a, b userMove) int { return cmp.Compare(a.user, b.user) })
	return p
}
