package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Message is one message pushed to the user.
type Message struct {
	// Seq is the message's number for the user, 1, 2, 3, …; 0 for a message without one
	// (a broadcast, a raw PUBLISH to the user's channel) and for every message in raw mode.
	Seq int64
	// Data is the pushed payload, byte for byte. It belongs to the receiver.
	Data []byte
	// Binary is true when the gateway sent a binary frame: the payload is not valid UTF-8.
	Binary bool
}

// EventType says what an Event reports.
type EventType int

const (
	// EventConnected: a connection is open. Raw says whether it speaks no subprotocol
	// (Options.Raw, or a gateway that did not select wsgateway.v1).
	EventConnected EventType = iota + 1
	// EventDisconnected: a connection ended. Code is the close code the gateway sent, or
	// 1006 when none arrived; Reason its text; Err what the client saw (ErrSilent when the
	// connection went quiet). After Close the event carries Code 1000 and no Err.
	EventDisconnected
	// EventRetry: the next attempt starts after Delay. Err is why the last one failed or
	// ended. Attempt is n, the failures in a row before this one: Delay was drawn from
	// [0, min(ReconnectMax, ReconnectMin·2ⁿ)), or from [0, ReconnectMin) after a close code
	// that asks for a quick return.
	EventRetry
	// EventGap: the messages From..To were asked for but the gateway no longer keeps them
	// (its cap or TTL dropped them). They will never arrive; the position moves past them.
	EventGap
	// EventReset: the gateway's numbering for the user started again (its state expired)
	// and Latest is its newest seq. The client forgot its position; what follows starts from
	// the beginning, so Seq values lower than before are new messages.
	EventReset
)

func (t EventType) String() string {
	switch t {
	case EventConnected:
		return "connected"
	case EventDisconnected:
		return "disconnected"
	case EventRetry:
		return "retry"
	case EventGap:
		return "gap"
	case EventReset:
		return "reset"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is something that happened to the client's connection or position; which fields are
// set depends on Type (see the EventType constants).
type Event struct {
	Type    EventType
	Raw     bool
	Code    int
	Reason  string
	Err     error
	Delay   time.Duration
	Attempt int
	From    int64
	To      int64
	Latest  int64
}

// ErrSilent is the Err of an EventDisconnected when nothing arrived for SilenceTimeout.
var ErrSilent = errors.New("client: nothing received within the silence timeout")

// HandshakeError is a refusal of the WebSocket handshake with a plain HTTP status, such as
// 401 (bad or expired token), 429 (too many connections) or 503 (node draining).
type HandshakeError struct {
	StatusCode int
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("client: handshake refused with HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// Close codes the gateway sends that end the client rather than a connection: retrying
// would only repeat what the gateway refused.
var stopCodes = map[int]bool{
	4001:                                   true, // disconnected by the API on purpose
	websocket.CloseInvalidFramePayloadData: true, // 1007: this client sent invalid UTF-8
	websocket.ClosePolicyViolation:         true, // 1008: a refused token refresh, a rate limit
	websocket.CloseMessageTooBig:           true, // 1009: this client sent a frame too large
}

// Close codes after which the gateway wants the client back at once: 1001 a node shutting
// down, 1013 a slow consumer whose backlog waits, 4002 an expired token (a new one is fetched).
var quickCodes = map[int]bool{
	websocket.CloseGoingAway:     true,
	websocket.CloseTryAgainLater: true,
	4002:                         true,
}

// HTTP refusals that no retry can fix: a URL that is not the endpoint, an Origin the gateway
// does not allow, a request it cannot parse. Every other status is retried.
var stopStatuses = map[int]bool{
	http.StatusBadRequest: true,
	http.StatusForbidden:  true,
	http.StatusNotFound:   true,
}

// Client holds one logical connection to the gateway and keeps it alive across breaks. Its
// methods are safe for concurrent use.
type Client struct {
	cfg    *config
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	msgs      chan Message  // unbuffered: a message counts as delivered once received
	done      chan struct{} // closed when run has returned and msgs is closed
	connected chan struct{} // closed at the first open connection
	connOnce  sync.Once

	mu      sync.Mutex
	pos     position
	err     error // why the client stopped on its own
	lastErr error // the latest failed attempt, for Dial's answer

	// ack is owned by the run goroutine, the only writer to the sockets.
	ack ackState
}

// position is how far delivery has got, shared by the reader of the current connection
// (which moves it) and the run goroutine (which acks it and resumes from it).
type position struct {
	// seq is the highest seq handed to the application, or skipped past by a gap. It moves
	// as a message is offered on Messages, so that Last read right after a receive includes
	// that message; a hand-over that Close interrupts moves it back.
	seq int64
	// delivered is seq once the application has taken the message: what acks cover.
	delivered int64
	gen       uint64 // bumps at every reset, so that a lower seq reads as news to the acker
	known     bool   // there is something to resume from: send "since"
}

type ackState struct {
	seq     int64
	gen     uint64
	sentAt  time.Time // the last ack written
	waiting time.Time // when the writer first saw something to ack; zero: nothing
}

// New checks the options and starts connecting in the background. Messages arrive on
// Messages; Close stops the client.
func New(opts Options) (*Client, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:       cfg,
		ctx:       ctx,
		cancel:    cancel,
		msgs:      make(chan Message),
		done:      make(chan struct{}),
		connected: make(chan struct{}),
		pos:       position{seq: opts.Since, delivered: opts.Since, known: opts.Since > 0},
	}
	c.ack.seq = opts.Since
	go c.run()
	return c, nil
}

// Dial is New followed by a wait for the first connection. It fails when ctx ends first
// (the client is closed then, and the error names the last attempt's failure) or when the
// gateway refuses for good (see Err).
func Dial(ctx context.Context, opts Options) (*Client, error) {
	c, err := New(opts)
	if err != nil {
		return nil, err
	}
	select {
	case <-c.connected:
		return c, nil
	case <-c.done:
		return nil, c.Err()
	case <-ctx.Done():
		c.Close()
		c.mu.Lock()
		last := c.lastErr
		c.mu.Unlock()
		if last == nil {
			return nil, fmt.Errorf("client: dial: %w", ctx.Err())
		}
		return nil, fmt.Errorf("client: dial: %w (last attempt: %w)", ctx.Err(), last)
	}
}

// Messages returns the channel messages arrive on, in order. It is unbuffered: a message is
// acknowledged to the gateway only after it was received from here, so whatever the
// application had not taken when the process died is sent again. It is closed when the
// client stops (Close, or the gateway ending it for good; Err tells which).
func (c *Client) Messages() <-chan Message { return c.msgs }

// Last returns the seq of the last numbered message received from Messages (or skipped
// past by a gap): save it after handling a message, and a later run resumes after it with
// Options.Since. Options.Since before any; zero after a reset.
func (c *Client) Last() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pos.seq
}

// Err tells why the client stopped by itself: a *websocket.CloseError when the gateway
// closed with 4001 (disconnected by the API), 1007, 1008 or 1009, or a *HandshakeError for
// an HTTP 400, 403 or 404. Nil while running and after Close.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close stops the client: it acknowledges what was delivered, closes the connection with
// 1000 and returns once every goroutine of the client has ended and Messages is closed.
// It may be called more than once, but not from OnEvent.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// run is the client's owner goroutine: it dials, serves each connection as its writer and
// waits out the backoff in between, until Close or a close code that says to stop.
func (c *Client) run() {
	defer close(c.done)
	defer close(c.msgs)
	attempt := 0
	for {
		var code int
		ws, exp, err := c.connect()
		if err == nil {
			opened := time.Now()
			code, err = c.serve(ws, exp)
			if time.Since(opened) >= c.cfg.StableAfter {
				attempt = 0
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		var ce *websocket.CloseError
		var he *HandshakeError
		switch {
		case errors.As(err, &ce) && stopCodes[ce.Code]:
			c.stop(ce)
			return
		case errors.As(err, &he) && stopStatuses[he.StatusCode]:
			c.stop(he)
			return
		}
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()

		retry := Event{Type: EventRetry, Attempt: attempt, Err: err}
		if quickCodes[code] {
			// Spread a drained node's clients over ReconnectMin instead of all at once.
			retry.Delay = rand.N(c.cfg.ReconnectMin)
		} else {
			retry.Delay = backoff(attempt, c.cfg.ReconnectMin, c.cfg.ReconnectMax)
			if attempt < 63 && c.cfg.ReconnectMin<<attempt < c.cfg.ReconnectMax {
				attempt++ // stop counting at the cap, so the shift cannot overflow
			}
		}
		c.emit(retry)
		t := time.NewTimer(retry.Delay)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return
		}
	}
}

// backoff is full jitter: a random wait in [0, min(hi, lo*2^attempt)).
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	ceiling := hi
	if attempt < 63 && lo <= hi>>attempt {
		ceiling = lo << attempt
	}
	return rand.N(ceiling)
}

func (c *Client) stop(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	c.cfg.Logger.Debug("wsgateway client stopped", "err", err) // the caller learns it from Err
}

// connect fetches a token and opens one connection. exp is the token's expiry, zero when
// unknown. The attempt as a whole gets SilenceTimeout, so a gateway that accepts TCP and
// then says nothing cannot hold it forever.
func (c *Client) connect() (ws *websocket.Conn, exp time.Time, err error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.SilenceTimeout)
	defer cancel()
	header := c.cfg.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if c.cfg.Token != nil {
		tok, err := c.cfg.Token(ctx)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("client: token: %w", err)
		}
		header.Set("Authorization", "Bearer "+tok)
		exp, _ = tokenExpiry(tok)
	}
	ws, resp, err := c.dial(ctx, header)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
			return nil, time.Time{}, &HandshakeError{StatusCode: resp.StatusCode}
		}
		return nil, time.Time{}, fmt.Errorf("client: dial: %w", err)
	}
	return ws, exp, nil
}

// dial runs the handshake. Gorilla watches only the context's deadline during a handshake,
// not its cancellation, so Close would wait out a gateway that accepted TCP and then said
// nothing. Instead every connection the dialer opens is tracked and closed when the client's
// context ends, which fails the handshake at once.
func (c *Client) dial(ctx context.Context, header http.Header) (*websocket.Conn, *http.Response, error) {
	var mu sync.Mutex
	var conns []net.Conn
	closing := false
	track := func(conn net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		if closing {
			conn.Close()
		}
		conns = append(conns, conn)
	}
	stop := context.AfterFunc(c.ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		closing = true
		for _, conn := range conns {
			conn.Close()
		}
	})
	defer stop()

	type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)
	wrap := func(dial dialFunc) dialFunc {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err == nil {
				track(conn)
			}
			return conn, err
		}
	}
	d := c.cfg.dialer // a copy: the wrappers are this attempt's
	base := d.NetDialContext
	if base == nil && d.NetDial != nil {
		netDial := d.NetDial
		base = func(_ context.Context, network, addr string) (net.Conn, error) { return netDial(network, addr) }
	}
	if base == nil {
		base = (&net.Dialer{}).DialContext
	}
	d.NetDial, d.NetDialContext = nil, wrap(base)
	if d.NetDialTLSContext != nil {
		d.NetDialTLSContext = wrap(d.NetDialTLSContext)
	}
	return d.DialContext(ctx, c.endpoint(), header)
}

// endpoint is the URL with the resume position. Raw mode never resumes.
func (c *Client) endpoint() string {
	u := *c.cfg.url
	c.mu.Lock()
	pos := c.pos
	c.mu.Unlock()
	if !c.cfg.Raw && pos.known {
		q := u.Query()
		q.Set("since", strconv.FormatInt(pos.seq, 10))
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func (c *Client) emit(e Event) {
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(e)
	}
}
