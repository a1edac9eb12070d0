// Package ws is the client side of the gateway: the /ws upgrade with its refusals (handler.go),
// one Conn per WebSocket (conn.go; its reading in conn_read.go, its writing in conn_write.go)
// and the Hub, a sharded registry of user → connections on this node (hub.go, registry.go).
//
// An idle connection costs no goroutine: on Linux it waits in one epoll set per hub
// (poll_linux.go) and a short-lived goroutine reads when its socket turns readable; writers
// exist only while something is queued; pings come from one timer per hub shard (ping.go).
//
// Every message pushed to a user is numbered in the user's inbox. A connection starts by
// reading the inbox after its position and continues with what arrives live, and it catches
// up from the inbox whenever the live numbers jump or the bus reports an outage (fill.go).
// What clients received is recorded in batches (acks.go).
//
// The hub does not know where fan-out, the inbox and presence live: it declares what it needs
// (deps.go) and the wiring in internal/server passes the in-memory or the Redis
// implementations. The bus calls back into Hub.Deliver, Broadcast, Kick and Resync.
package ws
