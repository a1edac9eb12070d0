package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	wsclient "github.com/wsgateway/wsgateway/client"
)

// appFleet is one client of the importable Go client package per user, as an application
// would run it (reconnect with backoff, resume with since, acks, silence detection), each on
// sockets that can freeze. The drops and memory scenarios use it; the other scenarios use the
// lighter readers of dial.go.
type appFleet struct {
	cfg     *config
	base    time.Time
	cnt     *counters
	hist    *histogram
	led     *ledger       // nil: arrivals are only counted (memory)
	last    *atomic.Int64 // ns since base of the latest arrival (the bench's)
	hold    *holder
	clients []*appClient

	connected  atomic.Int64
	dialErrs   atomic.Int64
	reconnects atomic.Int64
	gaps       atomic.Int64 // gap and reset events: none are expected
	fellBack   atomic.Int64 // v1 connections on which the gateway chose no subprotocol
	closing    atomic.Bool
	consumers  sync.WaitGroup

	codeMu sync.Mutex
	codes  map[int]int // how connections ended during the run (closeSilent: silence timeout)
}

// closeSilent stands for "ended by the client's silence timeout" among the close codes.
const closeSilent = -2

// appClient is one user's client and the socket of its current connection.
type appClient struct {
	f     *appFleet
	idx   int
	user  string
	token string
	cl    *wsclient.Client
	conn  atomic.Pointer[freezeConn]
	dials atomic.Int32 // sockets opened, to rotate the source address

	frozenAt atomic.Int64 // ns since base; 0: never frozen
	connects int          // OnEvent only
	lastSeq  int64        // the consumer only: last seq (v1) or push (raw) received
	probed   atomic.Bool
}

func newAppFleet(cfg *config, base time.Time, cnt *counters, hist *histogram, last *atomic.Int64, names, toks []string) *appFleet {
	f := &appFleet{cfg: cfg, base: base, cnt: cnt, hist: hist, last: last, hold: newHolder(cfg.FreezeHold), codes: map[int]int{}}
	f.clients = make([]*appClient, len(names))
	for i, name := range names {
		c := &appClient{f: f, idx: i, user: name}
		if toks != nil {
			c.token = toks[i]
		}
		f.clients[i] = c
	}
	return f
}

// dial opens a socket for c from the next source address and wraps it so it can freeze.
func (c *appClient) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	cfg := c.f.cfg
	nd := &net.Dialer{Timeout: cfg.DialTimeout}
	if n := len(cfg.SourceAddrs); n > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: cfg.SourceAddrs[(c.idx+int(c.dials.Add(1)))%n]}
	}
	nc, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	var sniff func([]byte)
	if c.f.led != nil {
		sniff = (&sniffer{seen: c.f.sniffed}).feed // a new stream: a new sniffer
	}
	fc := newFreezeConn(nc, c.f.hold, sniff)
	c.conn.Store(fc)
	return fc, nil
}

// sniffed counts a message that crossed the wire: "<seq> <payload>" (v1) or the payload.
func (f *appFleet) sniffed(head []byte) {
	if f.cfg.Mode == modeV1 {
		i := 0
		for i < len(head) && head[i] >= '0' && head[i] <= '9' {
			i++
		}
		if i == 0 || i >= len(head) || head[i] != ' ' {
			return // unnumbered, gap, reset, pong
		}
		head = head[i+1:]
	}
	if p, ok := parsePayload(head); ok && p.pub == pubDrops && f.led.valid(int(p.seq)-1) {
		f.led.onWire(int(p.seq) - 1)
	}
}

// Publisher ids in the payloads of the app scenarios (0 is the probe).
const (
	pubDrops   = 1
	pubHistory = 2
	pubStored  = 3
)

func (c *appClient) options() wsclient.Options {
	cfg := c.f.cfg
	u := cfg.Targets[c.idx%len(cfg.Targets)] + "/ws"
	if cfg.Dev {
		u += "?" + url.Values{"user_id": {c.user}}.Encode()
	}
	o := wsclient.Options{
		URL:            u,
		Raw:            cfg.Mode == modeRaw,
		SilenceTimeout: cfg.Silence,
		Dialer: &websocket.Dialer{
			NetDialContext:   c.dial,
			HandshakeTimeout: cfg.DialTimeout,
			ReadBufferSize:   1024,
			WriteBufferSize:  256,
		},
		OnEvent: c.event,
	}
	if c.token != "" {
		tok := c.token
		o.Token = func(context.Context) (string, error) { return tok, nil }
	}
	return o
}

// event runs on the client's own goroutine, one call at a time.
func (c *appClient) event(e wsclient.Event) {
	f := c.f
	switch e.Type {
	case wsclient.EventConnected:
		if e.Raw && f.cfg.Mode == modeV1 {
			f.fellBack.Add(1) // a gateway from before the inbox
		}
		c.connects++
		if c.connects == 1 {
			return
		}
		f.reconnects.Add(1)
		if f.led != nil {
			f.led.reconnected(reconnect{user: c.idx, at: time.Since(f.base), frozenAt: time.Duration(c.frozenAt.Load())})
		}
	case wsclient.EventDisconnected:
		if f.closing.Load() {
			return
		}
		code := e.Code
		if errors.Is(e.Err, wsclient.ErrSilent) {
			code = closeSilent
		}
		f.codeMu.Lock()
		f.codes[code]++
		f.codeMu.Unlock()
		f.cnt.closed.Add(1)
	case wsclient.EventGap, wsclient.EventReset:
		f.gaps.Add(1)
	}
}

// connect starts every client, DialConcurrency handshakes in flight, and returns when all
// are connected or ctx ends.
func (f *appFleet) connect(ctx context.Context) error {
	return dialAll(ctx, len(f.clients), f.cfg.DialConcurrency, &f.dialErrs, "client connects", func(i int) error {
		c := f.clients[i]
		dctx, cancel := context.WithTimeout(ctx, 3*f.cfg.DialTimeout)
		cl, err := wsclient.Dial(dctx, c.options())
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", c.user, err)
		}
		c.cl = cl
		f.connected.Add(1)
		f.consumers.Add(1)
		go c.consume()
		return nil
	})
}

// consume is the application: it takes every message and accounts for it.
func (c *appClient) consume() {
	f := c.f
	defer f.consumers.Done()
	for m := range c.cl.Messages() {
		now := time.Since(f.base)
		p, ok := parsePayload(m.Data)
		switch {
		case !ok:
			f.cnt.badFrames.Add(1)
			continue
		case p.pub == 0:
			if !c.probed.Swap(true) {
				f.cnt.probes.Add(1)
			}
			continue
		}
		f.cnt.received.Add(1)
		f.last.Store(int64(now))
		if p.pub != pubDrops || f.led == nil {
			continue
		}
		k := int(p.seq) - 1
		if !f.led.valid(k) {
			f.cnt.badFrames.Add(1)
			continue
		}
		if !f.led.received(k, m.Seq, now) {
			f.cnt.dup.Add(1)
			continue
		}
		// v1: seqs only increase (the client drops any other); raw: a user's pushes leave in
		// the order of their numbers, one worker per user.
		at := m.Seq
		if f.cfg.Mode == modeRaw {
			at = int64(k) + 1
		}
		if at < c.lastSeq {
			f.cnt.reordered.Add(1)
		}
		c.lastSeq = max(c.lastSeq, at)
		f.hist.Record(now - time.Duration(p.ts)) // push → application, replays included
	}
}

// freeze freezes c's current connection at t; false when it has none open.
func (c *appClient) freeze(t time.Duration) bool {
	fc := c.conn.Load()
	if fc == nil {
		return false
	}
	c.frozenAt.Store(int64(t))
	if !fc.freeze() {
		c.frozenAt.Store(0)
		return false
	}
	return true
}

// open counts the clients whose current socket is open and not frozen.
func (f *appFleet) open() int {
	n := 0
	for _, c := range f.clients {
		if fc := c.conn.Load(); fc != nil && fc.live() {
			n++
		}
	}
	return n
}

// close stops every client (a final ack and a close frame each), waits for the consumers
// at most until ctx ends, and lets go of the frozen sockets still held.
func (f *appFleet) close(ctx context.Context) {
	f.closing.Store(true)
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	for _, c := range f.clients {
		if c.cl == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.cl.Close()
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { f.consumers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	f.hold.closeAll()
}

func (f *appFleet) closeCodes() map[int]int {
	f.codeMu.Lock()
	defer f.codeMu.Unlock()
	out := make(map[int]int, len(f.codes))
	for k, v := range f.codes {
		out[k] = v
	}
	return out
}
