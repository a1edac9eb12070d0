//go:build linux

package ws

import (
	"errors"
	"net"
	"os"
	"testing"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(); sv.Close() })
	return sv.(*net.TCPConn), cl.(*net.TCPConn)
}

// Once the write side shut a connection (Conn.closeRead), neither a burst's rearm nor the
// handler's add may arm it again: its socket is about to be closed and would never report an
// event, leaving the connection without an owner.
func TestPollerShutForbidsArming(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	sv, _ := tcpPair(t)
	c := &Conn{id: 7, raw: rawConn(sv)}
	if err := p.add(c); err != nil {
		t.Fatalf("add: %v", err)
	}
	if !p.shut(c) {
		t.Fatal("shut did not take an armed connection")
	}
	if err := p.rearm(c); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("rearm after shut: %v, want net.ErrClosed", err)
	}
	if err := p.add(c); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("add after shut: %v, want net.ErrClosed", err)
	}
	if p.take(c) {
		t.Fatal("a shut connection was armed again")
	}

	// Shut while a burst reads (not armed): shut reports false, the rearm that follows fails.
	sv2, _ := tcpPair(t)
	c2 := &Conn{id: 8, raw: rawConn(sv2)}
	if p.shut(c2) {
		t.Fatal("shut took a connection that was not armed")
	}
	if err := p.rearm(c2); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("rearm after shut of a reading connection: %v, want net.ErrClosed", err)
	}
}

// stop may run more than once (Hub.Shutdown may be called again after a time-out) and must
// not close file descriptors that were reused meanwhile.
func TestPollerStopTwice(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	p.stop()
	// The lowest free descriptors now are the poller's old ones: open files to take them.
	var files []*os.File
	for i := 0; i < 4; i++ {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	p.stop()
	for _, f := range files {
		if _, err := f.Stat(); err != nil {
			t.Fatalf("a descriptor reused after the first stop was closed by the second: %v", err)
		}
	}
}
