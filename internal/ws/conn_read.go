package ws

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// serve is the connection's reader goroutine where there is no poller (Hub.park): it reads
// until the peer goes away, then ends the connection. An idle connection is then this
// goroutine parked in a read. serve and readLoop keep their frames small (frame handling and
// clean-up are separate calls), since the parked stack is most of such a connection's cost.
func (c *Conn) serve() {
	c.readLoop()
	c.end()
}

// readLoop reads until the peer goes away. Every frame, pong included, proves liveness and
// moves the read deadline (docs/protocol.md).
func (c *Conn) readLoop() {
	c.extendRead()
	for {
		typ, data, err := c.ws.ReadMessage()
		if !c.onFrame(typ, data, err) {
			return
		}
	}
}

// readBurst runs when the poller saw the socket readable: it reads every frame there is,
// then parks the connection again. A frame that has begun must complete within
// ping-interval + pong-timeout (the read deadline). The connection ends here when the read
// fails (peer gone, protocol error, socket closed by the writer).
func (c *Conn) readBurst() {
	wait := c.hub.cfg.PingInterval + c.hub.cfg.PongTimeout
	_ = c.ws.SetReadDeadline(c.hub.now().Add(wait))
	for {
		if handled, err := c.readControl(); handled {
			if err != nil {
				c.onFrame(0, nil, err) // records why; the frame ended the connection
				c.end()
				return
			}
		} else if typ, data, err := c.ws.ReadMessage(); !c.onFrame(typ, data, err) {
			c.end()
			return
		}
		if c.br.Buffered() > 0 {
			continue // the next frame is already read in; the socket may have nothing more
		}
		err := c.hub.poll.rearm(c)
		switch {
		case err == nil:
			return
		case errors.Is(err, errPollStopped):
			c.serve() // the poller is gone: read on this goroutine from now on
			return
		default: // the socket was closed meanwhile (closeRead found us reading)
			c.setReason(ReasonError)
			c.end()
			return
		}
	}
}

// expire is the idle timer's callback: a parked connection silent for ping-interval +
// pong-timeout is dropped, as a read deadline would drop a reading one. It never returns
// without either ending the connection or re-arming the timer.
func (c *Conn) expire() {
	wait := c.hub.cfg.PingInterval + c.hub.cfg.PongTimeout
	if left := wait - c.silence(); left > 0 {
		c.idle.Reset(left) // a frame came in as the timer fired
		return
	}
	p := c.hub.poll
	if !p.take(c) {
		return // a burst is reading: its read deadline applies, and its frames reset the timer
	}
	if left := wait - c.silence(); left > 0 {
		// A burst read a frame and re-armed between the check above and take: keep it.
		if err := p.add(c); err == nil {
			c.idle.Reset(left)
			return
		}
	}
	c.setReason(ReasonHeartbeat)
	c.end()
}

// silence is how long ago the last inbound frame arrived (monotonic clock).
func (c *Conn) silence() time.Duration {
	return time.Duration(c.hub.clock() - c.seen.Load())
}

// closeRead closes the socket from the write side (write failure, close grace over) and makes
// sure the read side ends: a reading goroutine sees the closed socket; a parked connection is
// taken from the poller and ended here.
func (c *Conn) closeRead() {
	took := c.idle != nil && c.hub.poll.shut(c)
	c.ws.Close()
	if took {
		go c.end() // it waits for the writer calling closeRead
	}
}

//go:noinline
func (c *Conn) setupRead() {
	c.ws.SetReadLimit(c.hub.cfg.MaxMessageBytes)
	// Unlike gorilla's default, the close frame is not answered here but by the writer, after
	// the hub stored what this connection had not sent (writeLoop).
	c.ws.SetCloseHandler(func(code int, _ string) error {
		c.mu.Lock()
		c.peerClose = code
		c.mu.Unlock()
		return nil
	})
	c.ws.SetPongHandler(c.onPong)
	c.ws.SetPingHandler(c.onPing)
}

func (c *Conn) onPong(string) error {
	if c.overRate() {
		return errRateLimited
	}
	c.extendRead()
	return nil
}

func (c *Conn) onPing(data string) error {
	if c.overRate() {
		return errRateLimited
	}
	c.extendRead()
	err := c.ws.WriteControl(websocket.PongMessage, []byte(data), c.hub.now().Add(c.hub.cfg.WriteTimeout))
	if err == nil || errors.Is(err, websocket.ErrCloseSent) || isTimeout(err) {
		return nil // like gorilla's default handler: a failed pong is not a read error
	}
	return err
}

// readControl handles a client ping or pong that is next in the read buffer, complete and
// well-formed (FIN, no RSV bits, masked, at most 125 bytes), and reports whether it did.
// gorilla handles control frames inside ReadMessage and then goes on to wait for a data
// frame, which would keep a read burst's goroutine blocked for as long as the client is
// idle; taking the common ones first lets the burst end. Anything else is left to gorilla,
// which also validates it (1002). Only the reading goroutine calls it, at a message boundary.
func (c *Conn) readControl() (handled bool, err error) {
	hdr, err := c.br.Peek(2)
	if err != nil || (hdr[0] != finPing && hdr[0] != finPong) || hdr[1]&maskBit == 0 || hdr[1]&lenBits > maxControlLen {
		return false, nil // gorilla reads it (and reports a read error itself)
	}
	const maskKeyLen = 4
	n := 2 + maskKeyLen + int(hdr[1]&lenBits)
	frame, err := c.br.Peek(n)
	if err != nil {
		return false, nil
	}
	payload := make([]byte, n-2-maskKeyLen)
	for i := range payload {
		payload[i] = frame[2+maskKeyLen+i] ^ frame[2+i%maskKeyLen]
	}
	_, _ = c.br.Discard(n)
	if hdr[0] == finPing {
		return true, c.onPing(string(payload))
	}
	return true, c.onPong(string(payload))
}

// The bits of a frame's first two bytes that readControl looks at (RFC 6455 section 5.2).
const (
	finBit        = 0x80         // FIN, no RSV bits set
	finPing       = finBit | 0x9 // a whole ping frame
	finPong       = finBit | 0xa // a whole pong frame
	maskBit       = 0x80         // second byte: the payload is masked (every client frame)
	lenBits       = 0x7f         // second byte: the payload length, or 126/127 for longer
	maxControlLen = 125          // the longest control frame payload
)

// extendRead records an inbound frame: the peer is alive for another ping-interval +
// pong-timeout.
func (c *Conn) extendRead() {
	cfg := &c.hub.cfg
	wait := cfg.PingInterval + cfg.PongTimeout
	now := c.hub.now()
	_ = c.ws.SetReadDeadline(now.Add(wait))
	if c.idle != nil {
		c.seen.Store(c.hub.clock())
		c.idle.Reset(wait)
	}
}

// overRate counts an inbound frame against max-inbound-rate and closes with 1008 when over.
// Every inbound frame, pings and pongs included, counts: a flood of pings costs a pong write
// each, and unsolicited pongs are legal but no less work. The limiter is made at the first
// inbound frame: most push clients never send one. Only the reader goroutine calls it.
func (c *Conn) overRate() bool {
	r := c.hub.cfg.MaxInboundRate
	if r <= 0 {
		return false
	}
	if c.lim == nil {
		c.lim = rate.NewLimiter(rate.Limit(r), max(1, int(2*r)))
	}
	if c.lim.Allow() {
		return false
	}
	c.closeWith(websocket.ClosePolicyViolation, "inbound rate limit exceeded", ReasonRate)
	return true
}

// onFrame handles one ReadMessage result; false ends the read loop.
//
//go:noinline
func (c *Conn) onFrame(typ int, data []byte, err error) bool {
	if err != nil {
		c.setReason(readEndReason(err))
		return false
	}
	if c.overRate() {
		return false
	}
	c.extendRead()
	if typ == websocket.TextMessage {
		if !utf8.Valid(data) {
			c.closeWith(websocket.CloseInvalidFramePayloadData, "invalid UTF-8", ReasonProtocol)
			return false
		}
		if string(data) == "ping" {
			c.enqueue(Message{Data: pongPayload, kind: kindPong})
			return true
		}
		if token, ok := bytes.CutPrefix(data, []byte("auth ")); ok && c.v1 {
			return c.refresh(string(token))
		}
		if seq, ok := parseAck(data); ok && c.v1 {
			// Above what was sent, the client cannot have it; the inbox ignores an ack above
			// the latest number anyway.
			if seq <= c.written.Load() {
				c.hub.acks.note(c.user, seq)
			}
			return true
		}
	}
	c.hub.obs.Inbound(len(data))
	if c.hub.upstream != nil {
		if err := c.hub.upstream.Append(context.Background(), c.user, data); err != nil {
			c.hub.obs.Dropped("upstream_error", 1)
		}
	}
	return true
}

var pongPayload = []byte("pong")

// expireAt arms the expiry timer for exp (zero: none), before the connection's loops start.
func (c *Conn) expireAt(exp time.Time) {
	if exp.IsZero() || !c.hub.cfg.EnforceTokenExpiry {
		return
	}
	c.expiry = time.AfterFunc(exp.Sub(c.hub.now()), func() {
		c.closeWith(CloseExpired, "token expired", ReasonExpired)
	})
}

// refresh handles "auth <jwt>": a valid token for the same user moves the expiry to its exp;
// anything else closes with 1008. False ends the read loop.
func (c *Conn) refresh(token string) bool {
	var id Identity
	err := errors.New("no authenticator")
	if c.hub.auth != nil {
		id, err = c.hub.auth.Refresh(token)
	}
	switch {
	case err != nil:
		c.closeWith(websocket.ClosePolicyViolation, "token refresh refused: "+err.Error(), ReasonAuth)
		return false
	case id.User != c.user:
		c.closeWith(websocket.ClosePolicyViolation, "token refresh refused: the token is for another user", ReasonAuth)
		return false
	}
	if c.expiry != nil && !id.Expires.IsZero() {
		c.expiry.Reset(id.Expires.Sub(c.hub.now()))
	}
	return true
}

// parseAck reads a wsgateway.v1 "ack <seq>" frame.
func parseAck(data []byte) (int64, bool) {
	rest, ok := bytes.CutPrefix(data, []byte("ack "))
	if !ok || len(rest) == 0 || len(rest) > 19 {
		return 0, false
	}
	var n int64
	for _, b := range rest {
		if b < '0' || b > '9' {
			return 0, false
		}
		n = n*10 + int64(b-'0')
	}
	return n, n > 0
}

var errRateLimited = errors.New("ws: inbound rate limit exceeded")

func readEndReason(err error) CloseReason {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		switch ce.Code {
		// gorilla reports a peer that hung up without a close frame (EOF) as 1006.
		case websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived,
			websocket.CloseAbnormalClosure:
			return ReasonNormal
		}
		return ReasonProtocol
	case errors.Is(err, websocket.ErrReadLimit):
		return ReasonProtocol // gorilla already sent 1009
	case isTimeout(err):
		return ReasonHeartbeat
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET):
		return ReasonNormal
	}
	return ReasonProtocol
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
