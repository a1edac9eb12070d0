package faults

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// wedgeProxy forwards TCP connections to a target, like faultproxy, with one fault that
// faultproxy (whose faults apply to every connection, present and future) cannot give: the
// connections that have sent a SUBSCRIBE or SSUBSCRIBE — a Redis pub/sub connection — can be
// wedged, one by one, so that what Redis sends on them is swallowed while the connection stays
// open and the commands still go through. Connections opened afterwards are not touched, so a
// node that notices can build a new pub/sub connection through the same proxy.
type wedgeProxy struct {
	target    string
	ln        net.Listener
	wg        sync.WaitGroup
	swallowed atomic.Int64 // bytes discarded on wedged connections, closed ones included

	mu     sync.Mutex
	closed bool
	links  map[*wedgeLink]struct{}
}

type wedgeLink struct {
	client, server net.Conn
	subscriber     atomic.Bool // it sent a (S)SUBSCRIBE
	wedged         atomic.Bool // what the server sends is discarded
}

// startWedgeProxy listens on 127.0.0.1:0 and forwards to target until the test ends.
func startWedgeProxy(t *testing.T, target string) *wedgeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("wedge proxy: %v", err)
	}
	p := &wedgeProxy{target: target, ln: ln, links: map[*wedgeLink]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *wedgeProxy) addr() string { return p.ln.Addr().String() }

// wedgeSubscribers wedges every open connection that has subscribed and returns how many.
func (p *wedgeProxy) wedgeSubscribers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.links {
		if l.subscriber.Load() {
			l.wedged.Store(true)
			n++
		}
	}
	return n
}

// wedgedOpen returns the wedged connections still open.
func (p *wedgeProxy) wedgedOpen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.links {
		if l.wedged.Load() {
			n++
		}
	}
	return n
}

func (p *wedgeProxy) close() {
	p.mu.Lock()
	p.closed = true
	for l := range p.links {
		l.client.Close()
		l.server.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *wedgeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		l := &wedgeLink{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.links[l] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.up(l)
		go p.down(l)
	}
}

// up forwards client → server and notes a subscribe. go-redis sends command names in lower
// case; a name split across two reads would be missed, which a pub/sub connection's first
// command (sent alone on a fresh connection) never is.
func (p *wedgeProxy) up(l *wedgeLink) {
	defer p.wg.Done()
	defer p.end(l)
	buf := make([]byte, 32<<10)
	for {
		n, err := l.client.Read(buf)
		if n > 0 {
			if bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
				l.subscriber.Store(true)
			}
			if _, werr := l.server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// down forwards server → client unless the link is wedged.
func (p *wedgeProxy) down(l *wedgeLink) {
	defer p.wg.Done()
	defer p.end(l)
	buf := make([]byte, 32<<10)
	for {
		n, err := l.server.Read(buf)
		if n > 0 {
			if l.wedged.Load() {
				p.swallowed.Add(int64(n))
			} else if _, werr := l.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// end closes both sides once either direction ended.
func (p *wedgeProxy) end(l *wedgeLink) {
	l.client.Close()
	l.server.Close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}
