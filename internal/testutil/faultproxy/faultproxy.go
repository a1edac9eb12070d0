package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// Direction is a direction of flow through the proxy; Both combines the two.
type Direction int

const (
	Upstream   Direction = 1 << iota // from the client that dialed the proxy to the target
	Downstream                       // from the target back to the client
	Both       = Upstream | Downstream
)

// dialTimeout bounds the dial to the target; Close cancels it sooner.
const dialTimeout = 10 * time.Second

// Proxy forwards TCP connections from Addr to a target, with faults injected on demand.
// Its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // canceled by Close: ends dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection's pumps

	mu        sync.Mutex
	changed   *sync.Cond // on mu; broadcast whenever a fault is lifted or a link goes
	closed    bool
	frozen    bool
	refusing  bool
	blackhole [2]bool // indexed by dirIndex
	dropNext  [2]int
	dropMin   [2]int // DropNextAtLeast: only a chunk of at least this many bytes is dropped
	dropped   [2]int64
	mark      [2][]byte // Mark: lower case, nil when unset
	links     map[*link]struct{}
}

// link is one proxied connection: the client's side and the target's.
type link struct {
	client, server *net.TCPConn
	// Guarded by Proxy.mu.
	dead      bool    // reset by CloseAll or Close
	marked    bool    // a chunk carried the mark (Mark)
	blackhole [2]bool // BlackholeMarked, indexed by dirIndex
}

// Start listens on 127.0.0.1:0 and forwards every connection to target (host:port). The
// proxy is closed when the test ends.
func Start(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{target: target, ln: ln, ctx: ctx, cancel: cancel, links: map[*link]struct{}{}}
	p.changed = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port, to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Freeze stops forwarding both ways without closing anything: the proxy stops reading, so
// the peers' writes fill the kernel buffers and then block. New connections are accepted
// but frozen too.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
	// A read deadline in the past wakes the pumps blocked in Read; they then wait for Thaw
	// instead of reading. Set under mu, where a pump clears it before reading, so that no
	// read can start after Freeze and miss it.
	past := time.Unix(1, 0)
	for l := range p.links {
		_ = l.client.SetReadDeadline(past)
		_ = l.server.SetReadDeadline(past)
	}
}

// Thaw resumes forwarding after Freeze; what waited is delivered in order.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = false
	p.changed.Broadcast()
}

// Blackhole starts (on) or stops discarding what flows in dir, on every connection, present
// and future. Nothing is closed; the other direction flows on.
func (p *Proxy) Blackhole(dir Direction, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, i := range dirIndexes(dir) {
		p.blackhole[i] = on
	}
}

// Mark has the proxy note, from now on, each connection on which a chunk flowing in dir
// contains mark, ASCII case ignored, for [Proxy.BlackholeMarked]. A Redis pub/sub connection,
// for one, is the one whose client sent "subscribe" (SUBSCRIBE or SSUBSCRIBE). A mark split
// across two reads is missed.
func (p *Proxy) Mark(dir Direction, mark string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, i := range dirIndexes(dir) {
		p.mark[i] = bytes.ToLower([]byte(mark))
	}
}

// BlackholeMarked starts discarding what flows in dir on the open connections that Mark
// noted, and returns how many they are. Unlike Blackhole it leaves every other connection
// alone, those opened later included: a client that notices the silence can open a healthy
// one. Dropped counts what it discards.
func (p *Proxy) BlackholeMarked(dir Direction) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.links {
		if l.marked {
			for _, i := range dirIndexes(dir) {
				l.blackhole[i] = true
			}
			n++
		}
	}
	return n
}

// BlackholedOpen returns how many connections BlackholeMarked discards on are still open.
func (p *Proxy) BlackholedOpen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.links {
		if l.blackhole != [2]bool{} {
			n++
		}
	}
	return n
}

// DropNext discards the next chunk (one read's worth of bytes) flowing in dir, on whichever
// connection carries one first. Calls add up.
func (p *Proxy) DropNext(dir Direction) { p.DropNextAtLeast(dir, 0) }

// DropNextAtLeast is DropNext for the next chunk of at least n bytes: smaller ones (other
// replies on the same connections) pass.
func (p *Proxy) DropNextAtLeast(dir Direction, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, i := range dirIndexes(dir) {
		p.dropNext[i]++
		p.dropMin[i] = n
	}
}

// Dropped returns how many bytes Blackhole and DropNext have discarded in dir so far.
func (p *Proxy) Dropped(dir Direction) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for _, i := range dirIndexes(dir) {
		n += p.dropped[i]
	}
	return n
}

// Refuse makes new connections fail (on) or succeed again. A refused connection is
// accepted and reset at once; connections already open are not touched.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = on
}

// Heal lifts every fault: thaws, ends blackholes, forgets pending drops, accepts again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen, p.refusing = false, false
	p.blackhole, p.dropNext = [2]bool{}, [2]int{}
	for l := range p.links {
		l.blackhole = [2]bool{}
	}
	p.changed.Broadcast()
}

// CloseAll resets every open connection, both sides, with an RST. It returns once they are
// gone; new connections are accepted as before.
func (p *Proxy) CloseAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resetAllLocked()
	for len(p.links) > 0 {
		p.changed.Wait()
	}
}

// Conns returns the number of open connections: accepted, connected to the target and not
// yet closed on both sides.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops listening, resets every connection and waits for all the proxy's goroutines.
// It may be called more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.resetAllLocked()
	p.changed.Broadcast()
	p.mu.Unlock()
	p.cancel()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) resetAllLocked() {
	for l := range p.links {
		p.killLocked(l)
	}
}

// kill resets both sides of a link whose one side failed, so that the other pump ends too,
// even one waiting for Thaw.
func (p *Proxy) kill(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.killLocked(l)
}

func (p *Proxy) killLocked(l *link) {
	l.dead = true
	reset(l.client)
	reset(l.server)
	p.changed.Broadcast()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		conn, err := p.ln.Accept()
		if err != nil {
			return // Close closed the listener
		}
		p.mu.Lock()
		refusing, closed := p.refusing, p.closed
		if !closed && !refusing {
			p.wg.Add(1) // under mu, so that Close, which sets closed first, waits for it
		}
		p.mu.Unlock()
		if closed || refusing {
			reset(conn.(*net.TCPConn))
			continue
		}
		go p.serve(conn.(*net.TCPConn))
	}
}

// serve connects one client to the target and runs the two pumps until both directions
// have ended.
func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		reset(client) // as the client would see a backend that is down
		return
	}
	l := &link{client: client, server: conn.(*net.TCPConn)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		reset(l.client)
		reset(l.server)
		return
	}
	p.links[l] = struct{}{}
	if p.frozen {
		past := time.Unix(1, 0)
		_ = l.client.SetReadDeadline(past)
		_ = l.server.SetReadDeadline(past)
	}
	p.mu.Unlock()

	var pumps sync.WaitGroup
	pumps.Add(1)
	go func() {
		defer pumps.Done()
		p.pump(l, 0, l.client, l.server)
	}()
	p.pump(l, 1, l.server, l.client)
	pumps.Wait()

	l.client.Close()
	l.server.Close()
	p.mu.Lock()
	delete(p.links, l)
	p.changed.Broadcast()
	p.mu.Unlock()
}

// pump copies src to dst, direction index i, obeying the faults. At EOF it passes the
// half-close on, so that a peer that shuts down its writing side is seen to do so; any other
// error ends the whole link.
func (p *Proxy) pump(l *link, i int, src, dst *net.TCPConn) {
	buf := make([]byte, 32<<10)
	for {
		if !p.waitThawed(l, src) {
			return
		}
		n, err := src.Read(buf)
		if n > 0 && !p.forward(l, i, dst, buf[:n]) {
			return
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Freeze woke the read; waitThawed decides what comes next.
		case errors.Is(err, io.EOF):
			_ = dst.CloseWrite()
			return
		default:
			p.kill(l)
			return
		}
	}
}

// waitThawed blocks while the proxy is frozen and clears src's read deadline before the next
// read; false when the link is gone.
func (p *Proxy) waitThawed(l *link, src *net.TCPConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.frozen && !p.closed && !l.dead {
		p.changed.Wait()
	}
	if p.closed || l.dead {
		return false
	}
	_ = src.SetReadDeadline(time.Time{})
	return true
}

// forward writes a chunk to dst unless a fault says otherwise; false when the link is gone.
func (p *Proxy) forward(l *link, i int, dst *net.TCPConn, chunk []byte) bool {
	p.mu.Lock()
	for p.frozen && !p.closed && !l.dead {
		p.changed.Wait() // read just before Freeze: hold it until Thaw
	}
	if p.closed || l.dead {
		p.mu.Unlock()
		return false
	}
	if m := p.mark[i]; m != nil && !l.marked && bytes.Contains(bytes.ToLower(chunk), m) {
		l.marked = true
	}
	hole := p.blackhole[i] || l.blackhole[i]
	if hole || (p.dropNext[i] > 0 && len(chunk) >= p.dropMin[i]) {
		if !hole {
			p.dropNext[i]--
		}
		p.dropped[i] += int64(len(chunk))
		p.mu.Unlock()
		return true
	}
	p.mu.Unlock()
	if _, err := dst.Write(chunk); err != nil {
		p.kill(l)
		return false
	}
	return true
}

// reset closes conn with an RST rather than a FIN: the peer's next read or write fails with
// "connection reset", as when a host or middlebox forgets the connection.
func reset(conn *net.TCPConn) {
	_ = conn.SetLinger(0)
	_ = conn.Close()
}

func dirIndexes(dir Direction) []int {
	var out []int
	if dir&Upstream != 0 {
		out = append(out, 0)
	}
	if dir&Downstream != 0 {
		out = append(out, 1)
	}
	return out
}
