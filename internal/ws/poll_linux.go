//go:build linux

package ws

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller parks idle connections in one epoll set instead of one goroutine each. A goroutine
// blocked in a read holds a 4 KB stack (gorilla's read path is deeper than the runtime's
// 2 KB minimum), which was half of what an idle connection cost; here an idle connection is
// only its heap objects. When a socket becomes readable, the poller starts a short-lived
// goroutine that reads every complete frame there is (Conn.readBurst) and re-arms the socket.
//
// Sockets are registered EPOLLONESHOT: after an event nothing more is reported until the
// burst re-arms, so at most one goroutine reads a connection, which is gorilla's one-reader
// rule. Who owns a connection's read side is decided by the armed map: the poller, the
// idle timer (Conn.expire) and a writer closing the socket (Conn.closeRead) each take
// a connection out of it before acting, and only one of them can.
//
// Go's own netpoller keeps the same sockets in its own epoll set, edge-triggered; the two do
// not interfere. Go's runtime keeps the file descriptors: every epoll_ctl on a connection's
// fd runs inside syscall.RawConn.Control, which keeps the fd from being closed (and reused
// by another connection) meanwhile.
type poller struct {
	epfd int
	wake int // an eventfd in the set: written by stop to end epoll_wait

	mu       sync.Mutex
	armed    map[uint64]*Conn // conn id → connection waiting in the set; nil once stopped
	done     chan struct{}    // closed when run returned
	stopOnce sync.Once
}

// errPollStopped is returned by rearm after stop: the caller ends the connection itself.
var errPollStopped = errors.New("ws: poller stopped")

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // id 0
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	p := &poller{epfd: epfd, wake: wake, armed: make(map[uint64]*Conn), done: make(chan struct{})}
	go p.run()
	return p, nil
}

// run waits for events until stop. The epoll_wait blocks an OS thread, not a P: the
// scheduler hands the P on while it waits.
func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Not expected (stop wakes us through the eventfd): give every armed connection
			// back to a reader goroutine rather than leave it unread.
			p.handBack()
			return
		}
		for i := range events[:n] {
			ev := &events[i]
			if ev.Fd == 0 && ev.Pad == 0 {
				return // the wake eventfd (id 0; connection ids start at 1)
			}
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			c := p.armed[id]
			delete(p.armed, id)
			p.mu.Unlock()
			if c != nil { // nil: taken by the reaper or a closing writer meanwhile
				go c.readBurst()
			}
		}
	}
}

// add registers c, whose socket has been upgraded and whose handlers are set.
func (p *poller) add(c *Conn) error { return p.ctl(c, unix.EPOLL_CTL_ADD) }

// rearm puts c back into the set after a burst. On error c is not in the set.
func (p *poller) rearm(c *Conn) error { return p.ctl(c, unix.EPOLL_CTL_MOD) }

func (p *poller) ctl(c *Conn, op int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.pollShut {
		return net.ErrClosed // the write side closed the socket (shut): nobody arms it again
	}
	if p.armed == nil {
		return errPollStopped
	}
	// Events come back with the connection's id (its low and high 32 bits in Fd and Pad,
	// which the kernel treats as one opaque 64-bit word): an event for a connection that
	// ended meanwhile finds nothing in armed, even when its fd number was reused.
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd:     int32(uint32(c.id)),
		Pad:    int32(uint32(c.id >> 32)),
	}
	var cerr error
	err := c.raw.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.epfd, op, int(fd), &ev) })
	if err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// Armed before the lock is released: the poller looks it up under the same lock.
	p.armed[c.id] = c
	return nil
}

// take removes c from the set if it is armed there and reports whether it was: the caller
// then owns c's read side. False means a burst is reading c, or someone else took it.
func (p *poller) take(c *Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.armed[c.id] != c {
		return false
	}
	delete(p.armed, c.id)
	_ = c.raw.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	return true
}

// shut is take for a socket the write side is about to close (Conn.closeRead): it also
// marks c so that a burst's rearm, or the handler's add, cannot arm it afterwards, when the
// closed socket would never report an event again.
func (p *poller) shut(c *Conn) bool {
	p.mu.Lock()
	c.pollShut = true
	p.mu.Unlock()
	return p.take(c)
}

// stop ends run and closes the set, once. Connections still armed are handed back to their
// own goroutine (Conn.serve), so none is left without a reader.
func (p *poller) stop() {
	p.stopOnce.Do(func() {
		p.handBack()
		var one = [8]byte{1}
		_, _ = unix.Write(p.wake, one[:])
		<-p.done
		unix.Close(p.epfd)
		unix.Close(p.wake)
	})
}

// handBack stops arming and starts a reader goroutine for every armed connection.
func (p *poller) handBack() {
	p.mu.Lock()
	left := p.armed
	p.armed = nil
	p.mu.Unlock()
	for _, c := range left {
		go c.serve()
	}
}

// rawConn returns the socket's RawConn, or nil when it has none (not a TCP or Unix socket).
func rawConn(nc any) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
