package main

import (
	"net"
	"os"
	"sync"
	"time"
)

// freezeConn is a client's socket as seen through a network that can freeze: it forwards
// until freeze is called and from then on forwards nothing in either direction, without
// closing — what a proxy that stops reading, or a phone between cells, does to both ends.
// After the freeze, reads wait until the read deadline passes (or Close) and get a timeout,
// writes are swallowed, and Close leaves the real socket open, so the gateway sees no FIN:
// the holder closes it later. It needs no proxy and no extra file descriptor, which matters
// at 10,000 connections under a 20,000-file limit per process.
type freezeConn struct {
	net.Conn
	hold  *holder
	sniff func([]byte) // sees every byte handed to the reader before the freeze; nil: none

	mu       sync.Mutex
	frozen   bool
	closed   bool
	deadline time.Time     // the reader's deadline, kept here once frozen
	wake     chan struct{} // closed and replaced when deadline or closed changes
}

func newFreezeConn(nc net.Conn, hold *holder, sniff func([]byte)) *freezeConn {
	return &freezeConn{Conn: nc, hold: hold, sniff: sniff, wake: make(chan struct{})}
}

// freeze stops the forwarding for good. It reports false when the connection was already
// closed (there is nothing left to freeze) or frozen.
func (c *freezeConn) freeze() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen || c.closed {
		return false
	}
	c.frozen = true
	// A read blocked in the kernel returns now; what it got arrived after the freeze and is
	// dropped (Read), as the network would have held it.
	_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	c.wakeLocked()
	return true
}

func (c *freezeConn) isFrozen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frozen
}

// live reports whether the connection still forwards: neither frozen nor closed.
func (c *freezeConn) live() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.frozen && !c.closed
}

func (c *freezeConn) wakeLocked() {
	close(c.wake)
	c.wake = make(chan struct{})
}

func (c *freezeConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	stuck := c.frozen || c.closed
	c.mu.Unlock()
	if stuck {
		return c.waitFrozen()
	}
	n, err := c.Conn.Read(p)
	if c.isFrozen() {
		return c.waitFrozen()
	}
	if n > 0 && c.sniff != nil {
		c.sniff(p[:n])
	}
	return n, err
}

// waitFrozen is a read on a frozen connection: nothing ever arrives, so it ends when the
// read deadline passes or the connection is closed.
func (c *freezeConn) waitFrozen() (int, error) {
	for {
		c.mu.Lock()
		closed, dl, wake := c.closed, c.deadline, c.wake
		c.mu.Unlock()
		if closed {
			return 0, net.ErrClosed
		}
		var expired <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			expired = t.C
		}
		select {
		case <-wake: // a new deadline, or closed: look again
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		}
		if t != nil {
			t.Stop()
		}
	}
}

func (c *freezeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	frozen, closed := c.frozen, c.closed
	c.mu.Unlock()
	switch {
	case closed:
		return 0, net.ErrClosed
	case frozen:
		return len(p), nil // into the void: the peer never sees it, the writer never knows
	}
	return c.Conn.Write(p)
}

func (c *freezeConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *freezeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	c.wakeLocked()
	if c.frozen || c.closed {
		return nil
	}
	// Under the lock, so a freeze cannot slip in between and have its interruption undone.
	return c.Conn.SetReadDeadline(t)
}

func (c *freezeConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen || c.closed {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// Close ends the connection for its user. A frozen one's real socket stays open, so the
// gateway sees nothing, until the holder lets it go.
func (c *freezeConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	c.wakeLocked()
	frozen := c.frozen
	c.mu.Unlock()
	if frozen {
		c.hold.keep(c.Conn)
		return nil
	}
	return c.Conn.Close()
}

// holder keeps the real sockets of closed frozen connections open, each for hold (longer than
// the gateway's ping-interval + pong-timeout, so the gateway finds the dead peer by its own
// heartbeat), or until the run ends.
type holder struct {
	hold time.Duration

	mu    sync.Mutex
	conns map[net.Conn]*time.Timer
	done  bool
}

func newHolder(hold time.Duration) *holder {
	return &holder{hold: hold, conns: make(map[net.Conn]*time.Timer)}
}

func (h *holder) keep(nc net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		nc.Close()
		return
	}
	h.conns[nc] = time.AfterFunc(h.hold, func() { h.release(nc) })
}

func (h *holder) release(nc net.Conn) {
	h.mu.Lock()
	_, ok := h.conns[nc]
	delete(h.conns, nc)
	h.mu.Unlock()
	if ok {
		nc.Close()
	}
}

// held counts the sockets still held.
func (h *holder) held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// closeAll closes every held socket, and any handed over later at once.
func (h *holder) closeAll() {
	h.mu.Lock()
	h.done = true
	conns := h.conns
	h.conns = make(map[net.Conn]*time.Timer)
	h.mu.Unlock()
	for nc, t := range conns {
		t.Stop()
		nc.Close()
	}
}
