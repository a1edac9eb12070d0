// Package faultproxy is a TCP proxy for tests that need a network that misbehaves on cue.
//
// [Start] listens on a free loopback port and forwards every connection to a target. The
// test then breaks the path in the ways real networks break, without either end being told:
//
//   - [Proxy.Freeze] stops forwarding in both directions and stops reading, so bytes pile
//     up in the kernel buffers and TCP flow control pushes back, as on a link that went
//     dark without a FIN or RST. [Proxy.Thaw] lets everything through again, in order.
//   - [Proxy.Blackhole] swallows what flows in one direction and forwards the other, like a
//     stateful middlebox that lost one half of a flow: a server whose replies vanish, or a
//     client whose acks never arrive.
//   - [Proxy.BlackholeMarked] does the same on chosen connections only: those that carried a
//     [Proxy.Mark], such as a Redis pub/sub connection's SUBSCRIBE. Others, and new ones, flow.
//   - [Proxy.DropNext] discards the next chunk read in a direction. TCP has no message
//     boundaries, so a chunk is one read: for small request/reply exchanges that is usually
//     one message, but a test that needs certainty should check [Proxy.Dropped].
//   - [Proxy.CloseAll] resets every connection (RST, not FIN), as a crashed node or a NAT
//     that forgot its mappings does.
//   - [Proxy.Refuse] makes new connections fail: they are accepted and reset at once, which
//     is what a client sees behind a load balancer whose backend is gone.
//
// [Proxy.Heal] lifts every fault. [Proxy.Conns] counts live connections.
//
// A chunk that was already read when a fault began may still be delivered; every byte read
// after the call returned obeys it.
//
// Every goroutine (one accept loop, two pumps per connection) is owned by the Proxy and
// ended by [Proxy.Close], which Start registers with tb.Cleanup.
package faultproxy
