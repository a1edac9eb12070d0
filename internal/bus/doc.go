// Package bus carries messages between gateway nodes: to a user's connections wherever they
// are, to everyone (broadcast) and between nodes (control: kick). Redis is the real one —
// one pub/sub connection per node for all its users — and Memory is its in-process twin for
// a single node without Redis.
//
// The bus never imports the hub: it delivers through the Handler it is started with, from its
// receive loop, so Handler methods must never block.
package bus
