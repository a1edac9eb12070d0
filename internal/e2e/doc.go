// Package e2e holds only tests: multi-node end-to-end tests of the gateway against real
// redis-server (and nginx) processes.
//
// Each test boots two or three real gateway nodes in-process through internal/server on
// 127.0.0.1:0, sharing one redis-server started by redistest, talks to them with real
// gorilla/websocket clients and net/http, and polls every condition with a deadline
// (wait.For). One test runs a node as a separate process, built from cmd/gateway, so that it
// can be SIGKILLed. Nothing here is imported by the gateway.
package e2e
