package ws

import (
	"bufio"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// CloseReason is why a connection ended: the label of the disconnect metric and of the
// "disconnected" log line. The first one set for a connection wins.
type CloseReason string

// Reasons a connection ended.
const (
	ReasonNormal    CloseReason = "normal"            // the client closed or went away
	ReasonHeartbeat CloseReason = "heartbeat_timeout" // nothing arrived for ping-interval + pong-timeout
	ReasonSlow      CloseReason = "slow_consumer"     // the send queue was full (1013)
	ReasonKicked    CloseReason = "kicked"            // DELETE /api/v1/users/{id}/connections (4001)
	ReasonShutdown  CloseReason = "shutdown"          // the node is draining (1001)
	ReasonProtocol  CloseReason = "protocol"          // 1002, 1007 or 1009 from the client's frames
	ReasonRate      CloseReason = "rate_limited"      // over max-inbound-rate (1008)
	ReasonError     CloseReason = "error"             // write failure, internal error (1011)
	ReasonExpired   CloseReason = "token_expired"     // the token's exp passed without a refresh (4002)
	ReasonAuth      CloseReason = "auth_refused"      // an in-band "auth <jwt>" was invalid or for another user (1008)
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
	// Static once the connection started (set before its loops run).
	id     uint64
	user   string
	remote string
	hub    *Hub
	ws     *websocket.Conn // nil until the upgrade
	// br is gorilla's read buffer, made by us (ownReader) so that a read burst can tell
	// whether a frame is still buffered before it parks the connection in the poller.
	br        *bufio.Reader
	raw       syscall.RawConn // the socket, for the poller's epoll_ctl calls; nil: no poller
	opened    time.Time
	v1        bool          // speaks wsgateway.v1: numbered frames, acks (set before the upgrade)
	readDone  chan struct{} // closed by end when the read loop returned
	writeDone chan struct{} // closed by the writer that took the end of the connection
	// While parked in the poller no read is pending, so no read deadline can fire: silence
	// is timed by idle instead, reset by every inbound frame (extendRead).
	idle *time.Timer
	// expiry closes the connection with 4002 at its token's exp (nil: no expiry). A timer
	// without a goroutine: the runtime runs its function only when it fires.
	expiry *time.Timer

	// Guarded by the hub's shard lock of user (fill.go): pos is the highest number given to
	// this connection; while filling, it is catching up from the inbox and live messages wait
	// in pending; refill asks the catch-up under way to read once more.
	pos     int64
	filling bool
	refill  bool
	pending []Message

	// Guarded by mu.
	mu sync.Mutex
	// queue holds what is waiting for the writer, oldest first. Its head may be a catch-up
	// from the inbox (backlog messages), which does not count against the send-queue limit.
	queue     []Message
	backlog   int
	closeCode int         // non-zero once the server decided to close: the code the writer sends
	closeText string      // reason text of that close frame
	reason    CloseReason // why the connection ended; the first writer of it wins
	peerClose int         // the code of the client's close frame, answered by the writer
	// started is set once the socket is upgraded and the start read queued: writers may run.
	started bool
	// writing is set while a writer goroutine owns the socket's write side. It stays set for
	// good once a writer took the end of the connection (close frame or write failure), so no
	// other writer starts after that.
	writing bool
	pingDue bool // the hub's ping timer asked for a ping; the next writer round sends it
	// checkDue: recheck (delivered.go) asks a writer round to see what the client's TCP stack
	// acknowledged since.
	checkDue bool

	// Owned by the writer (delivered.go), raw connections only: counted is the socket with its
	// byte count (nil: the socket cannot tell what its peer acknowledged); inKernel the
	// numbered messages written whose bytes the client's TCP stack may not have acknowledged.
	counted   *deadlineConn
	inKernel  []sentMark
	recheck   *time.Timer   // made at the first message still unconfirmed after a round
	recheckIn time.Duration // its next delay, doubling while the client does not confirm

	// Owned by the reading goroutine.
	lim *rate.Limiter // max-inbound-rate; made at the first inbound frame (overRate)

	// Atomic, for readers without a lock.
	written atomic.Int64 // the highest number the writer sent; the reader checks acks against it
	// closing mirrors closeCode != 0, so the writer can stop in the middle of a batch instead
	// of writing hundreds more messages to a client it is closing.
	closing atomic.Bool
	seen    atomic.Int64 // when the last inbound frame arrived (Hub.clock), for idle

	// Guarded by the poller's lock: set once the write side closed the socket, so the poller
	// must not arm it again (poller.ctl).
	pollShut bool

	released sync.Once // Hub.release runs once
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
func (c *Conn) closeWith(code int, text string, reason CloseReason) {
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

func (c *Conn) setReason(reason CloseReason) {
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
	if c.recheck != nil {
		c.recheck.Stop() // the writer is done with it
	}
	c.closeSocket()

	// Counted before finish marks c done: Shutdown returns once every connection is done,
	// and its caller may read the metrics right then.
	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	d := h.now().Sub(c.opened)
	h.obs.ConnClosed(string(reason), d)
	if h.log.Enabled(ctx, slog.LevelInfo) {
		h.log.Info("disconnected", append(c.logAttrs(), "reason", reason, "duration", d.String())...)
	}
	h.finish(ctx, c)
	h.admit.release(&h.cfg, c.remote)
}

// logAttrs are the attributes of every log line about c, built only when a line is written.
func (c *Conn) logAttrs() []any {
	return []any{"user_id", c.user, "conn_id", c.id, "remote", c.remote}
}
