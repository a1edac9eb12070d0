package bus

import (
	"reflect"
	"testing"

	"github.com/redis/go-redis/v9"
)

const (
	nodeA = "10.0.0.1:7000"
	nodeB = "10.0.0.2:7000"
	nodeC = "10.0.0.3:7000"
	nodeD = "10.0.0.4:7000" // A's replica
)

// threeMasters is A, B and C with a third of the slots each.
var threeMasters = []slotOwner{{0, 5460, nodeA}, {5461, 10922, nodeB}, {10923, 16383, nodeC}}

func mastersOf(owners []slotOwner) map[string]bool {
	m := map[string]bool{}
	for _, o := range owners {
		m[o.addr] = true
	}
	return m
}

func TestPlanTopology(t *testing.T) {
	probes := map[string]int{nodeA: 100, nodeB: 6000, nodeC: 11000}
	for _, c := range []struct {
		name   string
		owners []slotOwner
		st     clusterState
		want   topologyPlan
	}{{
		name:   "first round",
		owners: threeMasters,
		st:     clusterState{},
		want:   topologyPlan{changed: true, start: []string{nodeA, nodeB, nodeC}},
	}, {
		name:   "new master takes slots",
		owners: []slotOwner{{0, 5460, nodeA}, {5461, 8191, nodeC}, {8192, 16383, nodeB}},
		st: clusterState{
			slots:  []slotOwner{{0, 8191, nodeA}, {8192, 16383, nodeB}},
			probes: map[string]int{nodeA: 100, nodeB: 9000},
			users:  []placedUser{{"stays", 100, nodeA}, {"goes", 6000, nodeA}, {"other", 9000, nodeB}},
		},
		want: topologyPlan{changed: true, start: []string{nodeC}, moves: []userMove{{"goes", nodeA, nodeC}}},
	}, {
		name:   "master fails over: all its users move to the replica",
		owners: []slotOwner{{0, 5460, nodeD}, {5461, 10922, nodeB}, {10923, 16383, nodeC}},
		st: clusterState{slots: threeMasters, probes: probes, users: []placedUser{
			{"a2", 200, nodeA}, {"a1", 100, nodeA}, {"b", 6000, nodeB},
		}},
		want: topologyPlan{
			changed: true, start: []string{nodeD}, retire: []string{nodeA},
			moves: []userMove{{"a1", nodeA, nodeD}, {"a2", nodeA, nodeD}},
		},
	}, {
		name:   "one slot migrates",
		owners: []slotOwner{{0, 5460, nodeA}, {5461, 5999, nodeB}, {6000, 6000, nodeC}, {6001, 10922, nodeB}, {10923, 16383, nodeC}},
		st: clusterState{slots: threeMasters, probes: probes, users: []placedUser{
			{"mover", 6000, nodeB}, {"stayer", 6001, nodeB},
		}},
		// B's probe was on the migrated slot too.
		want: topologyPlan{changed: true, reprobe: []string{nodeB}, moves: []userMove{{"mover", nodeB, nodeC}}},
	}, {
		name:   "slots uncovered mid-failover: no owner, no move",
		owners: []slotOwner{{5461, 10922, nodeB}, {10923, 16383, nodeC}},
		st: clusterState{slots: threeMasters, probes: probes, users: []placedUser{
			{"waits", 100, nodeA}, {"b", 6000, nodeB},
		}},
		want: topologyPlan{changed: true, retire: []string{nodeA}},
	}, {
		name:   "replica covers them a round later",
		owners: []slotOwner{{0, 5460, nodeD}, {5461, 10922, nodeB}, {10923, 16383, nodeC}},
		st: clusterState{
			slots:  []slotOwner{{5461, 10922, nodeB}, {10923, 16383, nodeC}},
			probes: map[string]int{nodeB: 6000, nodeC: 11000},
			users:  []placedUser{{"waits", 100, ""}},
		},
		want: topologyPlan{changed: true, start: []string{nodeD}, moves: []userMove{{"waits", "", nodeD}}},
	}, {
		name:   "the old master comes back: users of its retired shard move to its new one",
		owners: threeMasters,
		st: clusterState{
			slots: []slotOwner{{5461, 10922, nodeB}, {10923, 16383, nodeC}},
			// A's new shard started in the round that saw it again, whose move failed.
			probes: probes,
			users:  []placedUser{{"waits", 100, ""}},
		},
		want: topologyPlan{changed: true, moves: []userMove{{"waits", "", nodeA}}},
	}, {
		name:   "probe's slot moves away",
		owners: []slotOwner{{0, 99, nodeA}, {100, 100, nodeB}, {101, 5460, nodeA}, {5461, 10922, nodeB}, {10923, 16383, nodeC}},
		st:     clusterState{slots: threeMasters, probes: probes},
		want:   topologyPlan{changed: true, reprobe: []string{nodeA}},
	}, {
		name:   "unchanged map: users whose owner differs are tried again",
		owners: threeMasters,
		st: clusterState{slots: threeMasters, probes: probes, users: []placedUser{
			{"failed earlier", 6000, nodeA}, {"home", 100, nodeA},
		}},
		want: topologyPlan{moves: []userMove{{"failed earlier", nodeA, nodeB}}},
	}, {
		name:   "a master that owns no slot any more is retired",
		owners: []slotOwner{{0, 10922, nodeB}, {10923, 16383, nodeC}},
		st: clusterState{slots: threeMasters, probes: probes, users: []placedUser{
			{"a", 100, nodeA}, {"b", 6000, nodeB},
		}},
		want: topologyPlan{changed: true, retire: []string{nodeA}, moves: []userMove{{"a", nodeA, nodeB}}},
	}} {
		t.Run(c.name, func(t *testing.T) {
			got := planTopology(c.owners, mastersOf(c.owners), c.st)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("plan\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestSlotMap(t *testing.T) {
	master := func(endpoint, ip string, port int64, health string) redis.Node {
		return redis.Node{Endpoint: endpoint, IP: ip, Port: port, Role: "master", Health: health}
	}
	replica := redis.Node{Endpoint: "10.0.0.9", IP: "10.0.0.9", Port: 7009, Role: "replica", Health: "online"}
	shards := []redis.ClusterShard{
		{ // several ranges, listed after a shard with higher slots
			Slots: []redis.SlotRange{{Start: 12000, End: 16383}, {Start: 5461, End: 5999}},
			Nodes: []redis.Node{replica, master("node-b.example", "10.0.0.2", 7000, "online")},
		},
		{ // failed master, replica not promoted yet: its slots are uncovered
			Slots: []redis.SlotRange{{Start: 6000, End: 10922}},
			Nodes: []redis.Node{master("10.0.0.5", "10.0.0.5", 7000, "fail"), replica},
		},
		{ // endpoint unknown: the IP
			Slots: []redis.SlotRange{{Start: 0, End: 5460}},
			Nodes: []redis.Node{master("?", "10.0.0.1", 7000, "online")},
		},
		{ // endpoint empty: the IP
			Slots: []redis.SlotRange{{Start: 10923, End: 11999}},
			Nodes: []redis.Node{master("", "::1", 7003, "online")},
		},
		{ // a master without slots owns nothing
			Nodes: []redis.Node{master("10.0.0.6", "10.0.0.6", 7000, "online")},
		},
	}
	owners, masters := slotMap(shards)
	wantOwners := []slotOwner{
		{0, 5460, "10.0.0.1:7000"},
		{5461, 5999, "node-b.example:7000"},
		{10923, 11999, "[::1]:7003"},
		{12000, 16383, "node-b.example:7000"},
	}
	if !reflect.DeepEqual(owners, wantOwners) {
		t.Errorf("owners\n got %v\nwant %v", owners, wantOwners)
	}
	wantMasters := map[string]bool{"10.0.0.1:7000": true, "node-b.example:7000": true, "[::1]:7003": true}
	if !reflect.DeepEqual(masters, wantMasters) {
		t.Errorf("masters = %v, want %v", masters, wantMasters)
	}
	if a := ownerAt(owners, 6000); a != "" {
		t.Errorf("slot 6000 (uncovered) owned by %q", a)
	}
	if a := ownerAt(owners, 12000); a != "node-b.example:7000" {
		t.Errorf("slot 12000 owned by %q", a)
	}
}

func TestProbeChannelFor(t *testing.T) {
	for _, addr := range []string{nodeA, nodeB, nodeC} {
		ch := probeChannelFor("ws:", "n1", addr, threeMasters)
		if got := ownerAt(threeMasters, Slot(ch)); got != addr {
			t.Errorf("probe %s of %s lands on %s", ch, addr, got)
		}
	}
}
