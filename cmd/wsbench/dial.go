package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	wsclient "github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/ctxsleep"
)

// client is one WebSocket connection of one user. Its reader goroutine is the only one that
// touches ord and buf.
type client struct {
	idx  int
	user string
	node int // index into config.Targets
	ws   *websocket.Conn
	ord  order
	buf  []byte

	probed atomic.Bool
	done   chan struct{} // closed when the reader returned
}

// fleet is every client of the run and what they count.
type fleet struct {
	cfg     *config
	base    time.Time // payload timestamps are nanoseconds since base
	clients []*client
	cnt     *counters
	hist    *histogram
	// perNode holds one histogram per target node, for cross-node.
	perNode []*histogram
	// measuring is set while the scenario runs; latency is recorded only then.
	measuring atomic.Bool
	// closing is set when wsbench closes the connections itself: ends after it are not counted.
	closing      atomic.Bool
	phaseStart   atomic.Int64 // ns since base
	lastDelivery atomic.Int64 // ns since base of the last scenario message received
	dialErrs     atomic.Int64
	connected    atomic.Int64
	wg           sync.WaitGroup // readers

	codeMu     sync.Mutex
	closeCodes map[int]int // close codes (or -1: no close frame) of connections that ended early
}

func newFleet(cfg *config, base time.Time, cnt *counters) *fleet {
	f := &fleet{cfg: cfg, base: base, cnt: cnt, hist: &histogram{}}
	for range cfg.Targets {
		f.perNode = append(f.perNode, &histogram{})
	}
	f.clients = make([]*client, cfg.Conns)
	for i := range f.clients {
		f.clients[i] = &client{
			idx: i, user: cfg.UserPrefix + strconv.Itoa(i), node: i % len(cfg.Targets),
			done: make(chan struct{}),
		}
	}
	return f
}

// dialer spreads the client side over the source addresses: each address has its own
// ephemeral port range, so 49 of them allow far more than one address's ~28k ports.
func (f *fleet) dialer(i int) *websocket.Dialer {
	nd := &net.Dialer{Timeout: f.cfg.DialTimeout}
	if n := len(f.cfg.SourceAddrs); n > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: f.cfg.SourceAddrs[i%n]}
	}
	d := &websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: f.cfg.DialTimeout,
		// The clients only read small messages: small buffers keep 10k of them cheap.
		ReadBufferSize:  1024,
		WriteBufferSize: 256,
	}
	if f.cfg.Mode == modeV1 && f.cfg.Server == srvGateway {
		d.Subprotocols = []string{wsclient.Subprotocol}
	}
	return d
}

// tokens signs one HS256 token per user before the clock starts, so the connect rate measures
// the gateway, not the generator's signing.
func (f *fleet) tokens() ([]string, error) {
	if f.cfg.Dev {
		return nil, nil
	}
	key := []byte(f.cfg.JWTSecret)
	exp := jwt.NewNumericDate(time.Now().Add(24 * time.Hour))
	out := make([]string, len(f.clients))
	for i, c := range f.clients {
		t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: c.user, ExpiresAt: exp})
		s, err := t.SignedString(key)
		if err != nil {
			return nil, fmt.Errorf("sign token: %w", err)
		}
		out[i] = s
	}
	return out, nil
}

// connect opens every connection with DialConcurrency handshakes in flight, each tried up to
// three times. It returns when all are open or ctx ends; a handshake completes only after the
// gateway confirmed the user's subscription (it subscribes before it upgrades).
func (f *fleet) connect(ctx context.Context, toks []string) error {
	return dialAll(ctx, len(f.clients), f.cfg.DialConcurrency, &f.dialErrs, "connections", func(i int) error {
		tok := ""
		if toks != nil {
			tok = toks[i]
		}
		if err := f.dialOne(ctx, f.clients[i], tok); err != nil {
			return err
		}
		f.connected.Add(1)
		return nil
	})
}

// dialAll runs dial(0..n-1) on at most workers goroutines and returns when all are done or ctx
// ends; failures are counted in errs and the first one is reported.
func dialAll(ctx context.Context, n, workers int, errs *atomic.Int64, what string, dial func(i int) error) error {
	next := atomic.Int64{}
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range min(workers, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := dial(i); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if k := errs.Load(); k > 0 {
		return fmt.Errorf("%d %s failed, first: %v", k, what, firstErr.Load())
	}
	return nil
}

func (f *fleet) dialOne(ctx context.Context, c *client, token string) error {
	q := url.Values{}
	if token == "" {
		q.Set("user_id", c.user)
	} else {
		q.Set("token", token)
	}
	path := "/ws?"
	if f.cfg.Server == srvCentrifuge {
		path = centrifugePath + "?"
	}
	u := f.cfg.Targets[c.node] + path + q.Encode()
	var err error
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			ctxsleep.Sleep(ctx, time.Duration(attempt)*200*time.Millisecond)
		}
		var resp *http.Response
		c.ws, resp, err = f.dialer(c.idx+attempt).DialContext(ctx, u, nil)
		if err == nil && f.cfg.Server == srvCentrifuge {
			// Connected means the connect reply arrived: authenticated and subscribed.
			err = centrifugeHandshake(c.ws, f.cfg.DialTimeout, func(kind centrifugeKind, data []byte) {
				if kind == cfPublish {
					f.deliver(c, data, time.Since(f.base))
				}
			})
			if err != nil {
				c.ws.Close()
				c.ws = nil
				err = fmt.Errorf("%s: %w", c.user, err)
				continue
			}
		}
		if err == nil {
			f.wg.Add(1)
			go f.read(c)
			return nil
		}
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			err = fmt.Errorf("%s: HTTP %d %s", c.user, resp.StatusCode, body)
		}
	}
	return err
}

// read is a client's reader: it counts and times every message. It answers pings (the
// gateway's with gorilla's default handler because it keeps reading, the centrifuge peer's {}
// here).
func (f *fleet) read(c *client) {
	defer f.wg.Done()
	defer close(c.done)
	c.buf = make([]byte, 0, f.cfg.Payload+64)
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			f.ended(err)
			return
		}
		c.buf = c.buf[:0]
		for {
			if len(c.buf) == cap(c.buf) {
				c.buf = append(c.buf, 0)[:len(c.buf)]
			}
			n, err := r.Read(c.buf[len(c.buf):cap(c.buf)])
			c.buf = c.buf[:len(c.buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				f.ended(err)
				return
			}
		}
		now := time.Since(f.base)
		if f.cfg.Server != srvCentrifuge {
			f.deliver(c, stripSeq(c.buf), now)
			continue
		}
		var werr error
		centrifugeObjects(c.buf, func(kind centrifugeKind, data, _ []byte) {
			switch kind {
			case cfPing:
				werr = errors.Join(werr, c.ws.WriteMessage(websocket.TextMessage, centrifugePong))
			case cfPublish:
				f.deliver(c, data, now)
			}
		})
		if werr != nil {
			f.ended(werr)
			return
		}
	}
}

// deliver counts and times one message that arrived at now (since base).
func (f *fleet) deliver(c *client, msg []byte, now time.Duration) {
	p, ok := parsePayload(msg)
	switch {
	case !ok:
		f.cnt.badFrames.Add(1)
	case p.pub == 0:
		if !c.probed.Swap(true) {
			f.cnt.probes.Add(1)
		}
	default:
		f.cnt.received.Add(1)
		f.lastDelivery.Store(int64(now))
		dup, re := c.ord.see(p.pub, p.seq)
		if dup {
			f.cnt.dup.Add(1)
		}
		if re {
			f.cnt.reordered.Add(1)
		}
		if f.measuring.Load() {
			lat := now - time.Duration(p.ts)
			f.hist.Record(lat)
			f.perNode[c.node].Record(lat)
		}
	}
}

// stripSeq removes the "<seq> " or "- " a wsgateway.v1 frame starts with; a wsbench payload
// starts with '{', so a raw frame is left as it is.
func stripSeq(b []byte) []byte {
	i := 0
	for i < len(b) && (b[i] >= '0' && b[i] <= '9' || b[i] == '-') {
		i++
	}
	if i > 0 && i < len(b) && b[i] == ' ' {
		return b[i+1:]
	}
	return b
}

// ended counts a connection that ended before wsbench closed it, by close code.
func (f *fleet) ended(err error) {
	if f.closing.Load() {
		return
	}
	f.cnt.closed.Add(1)
	code := -1
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	f.codeMu.Lock()
	if f.closeCodes == nil {
		f.closeCodes = make(map[int]int)
	}
	f.closeCodes[code]++
	f.codeMu.Unlock()
}

// close ends every connection (a close frame, then the socket) and waits for the readers,
// at most until ctx ends.
func (f *fleet) close(ctx context.Context) {
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	for _, c := range f.clients {
		if c.ws == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_ = c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			t := time.NewTimer(time.Second)
			select {
			case <-c.done:
			case <-t.C:
			}
			t.Stop()
			c.ws.Close()
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// open counts connections whose reader still runs.
func (f *fleet) open() int {
	n := 0
	for _, c := range f.clients {
		if c.ws != nil {
			select {
			case <-c.done:
			default:
				n++
			}
		}
	}
	return n
}

var errStopped = errors.New("stopped before the end")
