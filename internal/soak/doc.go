// Package soak holds one long test, TestSoak, that runs only on request: `make soak`
// (WSGATEWAY_SOAK=1 and -run Soak). Two gateway nodes share one redis-server; thousands of
// simulated users connect to a random node, receive, disconnect and reconnect in loops
// while pushers push sequence-numbered messages to every user through both nodes' APIs; Redis
// is restarted in the middle. At the end every accepted message was delivered exactly once,
// in order, per user, and goroutines, heap and file descriptors are back near their baseline.
package soak
