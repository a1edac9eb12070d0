package ws

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// Reasons a connection ended, used in logs and the disconnect metric.
const (
	ReasonNormal    = "normal"            // the client closed or went away
	ReasonHeartbeat = "heartbeat_timeout" // nothing arrived for ping-interval + pong-timeout
	ReasonSlow      = "slow_consumer"     // the send queue was full (1013)
	ReasonKicked    = "kicked"            // DELETE /api/v1/users/{id}/connections (4001)
	ReasonShutdown  = "shutdown"          // the node is draining (1001)
	ReasonProtocol  = "protocol"          // 1002, 1007 or 1009 from the client's frames
	ReasonRate      = "rate_limited"      // over max-inbound-rate (1008)
	ReasonError     = "error"             // write failure, internal error (1011)
	ReasonExpired   = "token_expired"     // the token's exp passed without a refresh (4002)
	ReasonAuth      = "auth_refused"      // an in-band "auth <jwt>" was invalid or for another user (1008)
)

// Close codes the server sends (docs/protocol.md) beyond gorilla's named ones.
const (
	CloseKicked  = 4001
	CloseExpired = 4002
	CloseSlow    = websocket.CloseTryAgainLater // 1013
)

// Conn is one client WebSocket. Ownership of the read side: on Linux an idle connection has
// no goroutine; it waits in the hub's epoll set (poller), and a short-lived goroutine reads
// when the socket is readable (readBurst). Elsewhere, or with WSGATEWAY_NO_EPOLL=1, one
// goroutine per connection reads (serve). Either way that goroutine, or whoever takes the
// connection from the poller (its idle timer, closeRead), ends it (end). Writers exist only
// while there is something to write: the first message, ping or close request for an idle
// connection starts one (wakeLocked), and it returns once the queue is empty. At most one
// writer runs at a time (c.writing), which is gorilla's one-writer rule; pings and close
// frames go through WriteControl from that writer too.
//
// Lock order: Hub shard lock → Conn.mu. Conn.mu is held only for slice and field updates.
type Conn struct {
	id     uint64
	user   string
	remote string
	hub    *Hub
	ws     *websocket.Conn // nil until the upgrade; set once before the loops start
	// br is gorilla's read buffer, made by us (ownReader) so that a read burst can tell
	// whether a frame is still buffered before it parks the connection in the poller.
	br     *bufio.Reader
	raw    syscall.RawConn // the socket, for the poller's epoll_ctl calls; nil: no poller
	opened time.Time
	v1     bool // speaks wsgateway.v1: numbered frames, acks (set before the upgrade)

	// Guarded by the hub's shard lock of user (fill.go): pos is the highest number given to
	// this connection; while filling, it is catching up from the inbox and live messages wait
	// in pending; refill asks the catch-up under way to read once more.
	pos     int64
	filling bool
	refill  bool
	pending []Message

	// written is the highest number the writer sent (set by the writer, read by the reader
	// to check acks).
	written atomic.Int64

	mu sync.Mutex
	// queue holds what is waiting for the writer, oldest first. Its head may be a catch-up
	// from the inbox (backlog messages), which does not count against the send-queue limit.
	queue     []Message
	backlog   int
	closeCode int    // non-zero once the server decided to close: the code the writer sends
	closeText string // reason text of that close frame
	reason    string // why the connection ended; the first writer of it wins
	peerClose int    // the code of the client's close frame, answered by the writer
	released  sync.Once
	// started is set once the socket is upgraded and the start read queued: writers may run.
	started bool
	// writing is set while a writer goroutine owns the socket's write side. It stays set for
	// good once a writer took the end of the connection (close frame or write failure), so no
	// other writer starts after that.
	writing bool
	pingDue bool // the hub's ping timer asked for a ping; the next writer round sends it
	// closing mirrors closeCode != 0 without the lock, so the writer can stop in the middle
	// of a batch instead of writing hundreds more messages to a client it is closing.
	closing atomic.Bool

	lim *rate.Limiter // max-inbound-rate; made at the first inbound frame (overRate)
	// While parked in the poller no read is pending, so no read deadline can fire: silence
	// is timed by idle instead, reset by every inbound frame (extendRead); seen is the
	// time of the last one (Hub.clock). pollShut is set, under the poller's lock, once the
	// write side closed the socket: the poller must not arm it again (poller.ctl).
	idle *time.Timer
	seen atomic.Int64
	// expiry closes the connection with 4002 at its token's exp (nil: no expiry). A timer
	// without a goroutine: the runtime runs its function only when it fires.
	expiry    *time.Timer
	pollShut  bool
	readDone  chan struct{} // closed by end when the read loop returned
	writeDone chan struct{} // closed by the writer that took the end of the connection
}

func (h *Hub) newConn(user, remote string) *Conn {
	return &Conn{
		id:        h.nextID.Add(1),
		user:      user,
		remote:    remote,
		hub:       h,
		opened:    h.now(),
		readDone:  make(chan struct{}),
		writeDone: make(chan struct{}),
	}
}

// User returns the connection's user id.
func (c *Conn) User() string { return c.user }

// wakeLocked starts a writer unless one runs (it takes everything queued before it returns)
// or the socket is not upgraded yet (start wakes it then). Called with c.mu held.
func (c *Conn) wakeLocked() {
	if c.writing || !c.started {
		return
	}
	c.writing = true
	go c.writeLoop()
}

// pingLocked asks for a ping; called by the hub's ping timers with c.mu held.
func (c *Conn) pingLocked() {
	if !c.started || c.closeCode != 0 {
		return
	}
	c.pingDue = true
	c.wakeLocked()
}

// enqueue adds m without ever blocking. A full queue turns the connection into a slow consumer:
// it is closed with 1013; what it did not write stays in the inbox, unacknowledged, for its
// next connection. The text "pong" answers count too, so a client that floods "ping" and
// reads nothing is slow.
func (c *Conn) enqueue(m Message) {
	c.mu.Lock()
	if c.closeCode != 0 || c.reason != "" {
		c.mu.Unlock()
		return
	}
	if len(c.queue)-c.backlog >= c.hub.cfg.SendQueue {
		c.closeCode, c.closeText, c.reason = CloseSlow, "slow consumer", ReasonSlow
		c.closing.Store(true)
		c.wakeLocked()
		c.mu.Unlock()
		c.hub.obs.SlowConsumer()
		return
	}
	c.queue = append(c.queue, m)
	depth := len(c.queue)
	c.wakeLocked()
	c.mu.Unlock()
	c.hub.obs.QueueDepth(depth)
}

// enqueueBacklog adds a message of a catch-up from the inbox, outside the send-queue limit:
// the inbox already bounds it (offline-max).
func (c *Conn) enqueueBacklog(m Message) {
	c.mu.Lock()
	if c.closeCode == 0 && c.reason == "" {
		c.queue = append(c.queue, m)
		c.backlog++
		c.wakeLocked()
	}
	c.mu.Unlock()
}

// control queues a wsgateway.v1 control frame (gap, reset); raw clients get none. pos is the
// position the client has once it read the frame (a gap's end), which it may then ack.
func (c *Conn) control(now time.Time, text string, pos int64) {
	if c.v1 {
		c.enqueueBacklog(Message{Data: []byte(text), Seq: pos, Received: now, kind: kindControl})
	}
}

// closeWith asks the writer to send a close frame with code and end the connection.
// The first request wins; it never blocks.
func (c *Conn) closeWith(code int, text, reason string) {
	c.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeText = code, text
		c.closing.Store(true)
	}
	if c.reason == "" {
		c.reason = reason
	}
	c.wakeLocked()
	c.mu.Unlock()
}

func (c *Conn) setReason(reason string) {
	c.mu.Lock()
	if c.reason == "" {
		c.reason = reason
	}
	c.mu.Unlock()
}

// start lets writers run, once the socket is upgraded and the connection's start was queued.
func (c *Conn) start() {
	c.mu.Lock()
	c.started = true
	if len(c.queue) > 0 || c.closeCode != 0 {
		c.wakeLocked()
	}
	c.mu.Unlock()
}

// release takes c out of the hub and records its position, once (Hub.release).
func (c *Conn) release(ctx context.Context) {
	c.released.Do(func() { c.hub.release(ctx, c) })
}

func (c *Conn) peerCloseCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerClose
}

// writeLoop is the connection's writer while it runs: it takes everything queued at once and
// writes it, sends a ping when one is due, and returns when nothing is left. On a close
// request, or once the reader is gone, it takes the end of the connection: records the
// position, sends the close frame and closes writeDone. What it did not write is dropped here:
// it is still in the inbox, unacknowledged.
func (c *Conn) writeLoop() {
	cfg := &c.hub.cfg
	var batch, spare []Message
	for {
		c.mu.Lock()
		// Under c.mu: end closes readDone before it looks at c.writing under c.mu, so
		// either this round sees the reader gone or end sees no writer and runs one.
		readerGone := isDone(c.readDone)
		batch, c.queue = c.queue, spare[:0]
		c.backlog = 0
		code, text, ping := c.closeCode, c.closeText, c.pingDue
		c.pingDue = false
		if code == 0 && !readerGone && len(batch) == 0 && !ping {
			// Idle: hold no buffers. Anything queued from now on starts a new writer; the
			// decision and the checks in wakeLocked and end all happen under c.mu.
			c.queue = nil
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		if code != 0 || readerGone {
			clear(batch)
			// Record the position before the client learns that the connection ended (our
			// close frame, or the answer to its own): it may reconnect to another node at
			// once, and that node must not send again what this one did.
			c.release(context.Background())
			if code != 0 {
				c.writeClose(code, text)
			} else if peer := c.peerCloseCode(); peer != 0 {
				_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(peer, ""),
					c.hub.now().Add(cfg.WriteTimeout))
			}
			close(c.writeDone)
			return
		}
		if ping {
			if err := c.ws.WriteControl(websocket.PingMessage, nil, c.hub.now().Add(cfg.WriteTimeout)); err != nil {
				c.fail(err)
				return
			}
		}
		var sent int64
		for i := range batch {
			if c.closing.Load() {
				break // the next round sees the close request and sends the close frame
			}
			if err := c.write(&batch[i]); err != nil {
				c.fail(err)
				return
			}
			if s := batch[i].Seq; s > sent {
				sent = s
				c.written.Store(s) // per message: the client may ack it before the batch ends
			}
		}
		if sent > 0 && !c.v1 {
			c.hub.acks.note(c.user, sent) // a raw client cannot ack: written counts as received
		}
		clear(batch)
		spare = batch
	}
}

// fail ends the connection after a write error: the socket is closed, which ends the read
// loop; end then stores what is left. c.writing stays set, so no writer starts again.
func (c *Conn) fail(err error) {
	if errors.Is(err, websocket.ErrCloseSent) {
		// gorilla answered a protocol violation (1002, 1009) with its own close frame; the
		// reader ends with that error, and end closes the socket without a reset that could
		// destroy that frame (closeSocket). Closing it here would skip that.
		c.setReason(ReasonProtocol)
		close(c.writeDone)
		return
	}
	c.setReason(ReasonError)
	c.closeRead()
	close(c.writeDone)
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// largeFrame is the payload size from which a frame no longer fits gorilla's 4 KB write
// buffer with its header.
const largeFrame = 4096 - 14

func (c *Conn) write(m *Message) error {
	if err := c.ws.SetWriteDeadline(c.hub.now().Add(c.hub.cfg.WriteTimeout)); err != nil {
		return err
	}
	if c.v1 && m.kind != kindPong {
		err := c.writeV1(m)
		if err == nil && m.kind != kindControl {
			c.hub.obs.Delivered(m.Received)
		}
		return err
	}
	if m.prepared == nil && len(m.Data) > largeFrame {
		// gorilla writes a frame larger than its write buffer as two buffers, which the
		// deadline wrapper around the socket (deadlineConn) turns into two write calls;
		// a prepared frame is one.
		m.prepare()
	}
	var err error
	if m.prepared != nil {
		err = c.ws.WritePreparedMessage(m.prepared)
	} else {
		err = c.ws.WriteMessage(m.frameType(), m.Data)
	}
	if err == nil && m.kind != kindPong {
		c.hub.obs.Delivered(m.Received)
	}
	return err
}

// writeV1 writes m as a wsgateway.v1 frame: "<seq> <payload>" for a numbered message,
// "- <payload>" for an unnumbered one, a control frame as it is. The header is ASCII, so the
// frame is text exactly when the payload is valid UTF-8.
func (c *Conn) writeV1(m *Message) error {
	w, err := c.ws.NextWriter(m.frameType())
	if err != nil {
		return err
	}
	if m.kind != kindControl {
		var hdr [24]byte
		h := hdr[:0]
		if m.Seq > 0 {
			h = strconv.AppendInt(h, m.Seq, 10)
		} else {
			h = append(h, '-')
		}
		if _, err := w.Write(append(h, ' ')); err != nil {
			return err
		}
	}
	if _, err := w.Write(m.Data); err != nil {
		return err
	}
	return w.Close()
}

// writeClose sends the close frame, gives the client a moment to answer it (the read loop
// ends when the answer arrives), then closes the socket: itself when the reader still runs,
// else the handler does it right after the writer returns (closeSocket).
func (c *Conn) writeClose(code int, text string) {
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text),
		c.hub.now().Add(c.hub.cfg.WriteTimeout))
	t := time.NewTimer(c.hub.cfg.CloseGrace)
	defer t.Stop()
	select {
	case <-c.readDone:
		return
	case <-t.C:
	}
	c.closeRead()
}

// closeSocket closes the socket once both loops are done. When the reader stopped because
// the peer's input was refused (1002, 1007, 1008, 1009), the peer may still be sending, and
// closing a socket with unread input makes the kernel answer with a TCP RST, which can
// destroy the close frame before the peer reads it (a ping flood never saw its 1008). So
// then: FIN after the close frame, discard input for at most CloseGrace and 1 MiB, close.
func (c *Conn) closeSocket() {
	c.mu.Lock()
	refused := c.reason == ReasonProtocol || c.reason == ReasonRate
	c.mu.Unlock()
	nc := c.ws.NetConn()
	if hc, ok := nc.(interface{ CloseWrite() error }); refused && ok && hc.CloseWrite() == nil {
		_ = nc.SetReadDeadline(c.hub.now().Add(c.hub.cfg.CloseGrace))
		_, _ = io.CopyN(io.Discard, nc, 1<<20)
	}
	c.ws.Close()
}

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

// end runs once the read loop returned: it makes sure a writer takes the end of the
// connection (stores what is left, answers the close), then closes the socket and releases
// the admission slot.
//
//go:noinline
func (c *Conn) end() {
	h := c.hub
	ctx := context.Background() // the request's context ended when ServeHTTP returned
	if c.idle != nil {
		c.idle.Stop()
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
	close(c.readDone)
	c.mu.Lock()
	idle := !c.writing
	c.writing = true
	c.mu.Unlock()
	if idle {
		c.writeLoop() // sees readDone closed and takes the end
	}
	<-c.writeDone
	c.closeSocket()
	h.finish(ctx, c)
	h.admit.release(&h.cfg, c.remote)

	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	d := h.now().Sub(c.opened)
	h.obs.ConnClosed(reason, d)
	if h.log.Enabled(ctx, slog.LevelInfo) {
		h.log.Info("disconnected", append(c.logAttrs(), "reason", reason, "duration", d.String())...)
	}
}

// logAttrs are the attributes of every log line about c, built only when a line is written.
func (c *Conn) logAttrs() []any {
	return []any{"user_id", c.user, "conn_id", c.id, "remote", c.remote}
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
	if err != nil || (hdr[0] != 0x89 && hdr[0] != 0x8a) || hdr[1]&0x80 == 0 || hdr[1]&0x7f > 125 {
		return false, nil // gorilla reads it (and reports a read error itself)
	}
	n := 2 + 4 + int(hdr[1]&0x7f)
	frame, err := c.br.Peek(n)
	if err != nil {
		return false, nil
	}
	payload := make([]byte, n-6)
	for i := range payload {
		payload[i] = frame[6+i] ^ frame[2+i%4]
	}
	_, _ = c.br.Discard(n)
	if hdr[0] == 0x89 {
		return true, c.onPing(string(payload))
	}
	return true, c.onPong(string(payload))
}

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

func readEndReason(err error) string {
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
