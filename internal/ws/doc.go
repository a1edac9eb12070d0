// Package ws is the client side of the gateway: the /ws upgrade with its refusals, one Conn per
// WebSocket (a read loop on the handler goroutine, one writer goroutine, heartbeats, a bounded
// send queue) and the Hub, a sharded map of user → connections on this node.
//
// The hub does not know where fan-out and offline storage live: it declares what it needs
// (Subscriber, Store, Upstream, Observer) and the wiring in cmd/gateway passes the in-memory
// or the Redis implementations. The bus calls back into Hub.Deliver, Broadcast, Kick and
// Resubscribed.
package ws
