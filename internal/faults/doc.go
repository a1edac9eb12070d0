// Package faults holds only tests: the acknowledged-delivery guarantee (every push answered
// 200 reaches a wsgateway.v1 client exactly once, in order) proved on real parts while they
// fail — a client network that freezes without a close, a node SIGKILLed behind nginx with
// messages in hand, a pub/sub link that goes silent, Redis killed and restarted from its
// append-only file, a Sentinel failover, the same push sent to two nodes at once, an inbox read
// whose reply is lost while Redis refuses connections — plus the gap and reset frames end to end.
//
// The gateway runs in-process through internal/server on 127.0.0.1:0 (or, to be SIGKILLed, as
// a process built from cmd/gateway) against real redis-server and nginx processes; the client
// is the client package; faults come from internal/testutil/faultproxy. Every condition is
// polled with a deadline. Nothing here is imported by the gateway.
package faults
