// Package freeport finds loopback TCP ports for servers a test (or wsbench)
// starts: redis-server, nginx, a gateway child process.
//
// A port is free only when it is asked for: another process may bind it before
// the server does. Callers that start an external server retry on a new port
// when the bind fails; an in-process server should listen on 127.0.0.1:0
// itself instead.
//
// The package does not import testing, so wsbench can use it too.
package freeport

import (
	"fmt"
	"net"
)

// Port returns a loopback TCP port that was free a moment ago.
func Port() (int, error) {
	ports, err := Ports(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// Ports returns n distinct loopback TCP ports that were free a moment ago;
// all are held open together, so none repeats.
func Ports(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// TB is the part of testing.TB that [Addr] needs.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// Addr returns "127.0.0.1:port" for a port that was free a moment ago, for a
// child process's listen flag; it fails tb when none can be found.
func Addr(tb TB) string {
	tb.Helper()
	port, err := Port()
	if err != nil {
		tb.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
}
