// Package keys names every Redis key and channel of the gateway (docs/protocol.md, "Redis
// layout"), in one place, so that the packages that share a name cannot drift apart. Every name
// of one user carries the hash tag {<id>}, so a Redis Cluster keeps all of a user on one shard
// and a script that touches them runs there atomically. (The Lua of the Redis Function builds
// the user's two names the same way: internal/inbox/lua/function.lua.)
package keys

import "strconv"

// Prefix is the key prefix (the key-prefix setting, "ws:" by default); its methods return the
// names under it.
type Prefix string

// User is the pub/sub channel of user id.
func (p Prefix) User(id string) string { return string(p) + "user:{" + id + "}" }

// Inbox is the list of id's kept messages; its companions share it as a prefix (…:state,
// …:receipts, …:due, …:id:<push id>).
func (p Prefix) Inbox(id string) string { return string(p) + "inbox:{" + id + "}" }

// Presence is presence bucket b, the hash of the live connections of the users that fall in it
// (internal/presence). Not a user's name: many users share it.
func (p Prefix) Presence(b int) string { return string(p) + "presence:" + strconv.Itoa(b) }

// Broadcast is the channel of broadcasts to every connection.
func (p Prefix) Broadcast() string { return string(p) + "broadcast" }

// Control is the channel between nodes (kick).
func (p Prefix) Control() string { return string(p) + "control" }

// Probe is a node's own probe channel; tag picks its slot in a Cluster.
func (p Prefix) Probe(tag string) string { return string(p) + "probe:{" + tag + "}" }

// Events is the stream of presence and delivery events.
func (p Prefix) Events() string { return string(p) + "events" }

// Upstream is the stream of client → backend frames.
func (p Prefix) Upstream() string { return string(p) + "upstream" }

// Nodes is the sorted set of every node's last heartbeat.
func (p Prefix) Nodes() string { return string(p) + "nodes" }

// Procs is the hash of the gateway processes' numbers (internal/presence).
func (p Prefix) Procs() string { return string(p) + "procs" }

// Reap is the lock of the node reaping dead node.
func (p Prefix) Reap(node string) string { return string(p) + "reap:{" + node + "}" }

// Due is the schedule of users with an undelivered-after deadline pending.
func (p Prefix) Due() string { return string(p) + "due" }

// PushBatch records the results of one batch of pushes (id: the gateway's own), so that a batch
// whose reply was lost and that is sent again answers what it did instead of pushing twice.
// Single-node Redis only: a batch names keys of many users.
func (p Prefix) PushBatch(id string) string { return string(p) + "batch:" + id }
