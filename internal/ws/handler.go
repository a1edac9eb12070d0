package ws

import (
	"bufio"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Authenticator turns an upgrade request into an identity. Any error means 401; its text is
// shown to the client, so it must never contain the token.
type Authenticator interface {
	Authenticate(r *http.Request) (Identity, error)
	// Refresh checks a token a wsgateway.v1 client sent in-band ("auth <jwt>").
	Refresh(token string) (Identity, error)
}

// Identity is who a connection is, and until when: Expires is the token's exp, zero for a
// session that does not expire (--dev with ?user_id=).
type Identity struct {
	User    string
	Expires time.Time
}

// Handler serves GET /ws: it refuses with plain HTTP before the upgrade, subscribes, upgrades,
// queues where the connection starts (its inbox), then parks the connection in the hub's poller
// (or hands it to a reader goroutine of its own, Conn.serve) and returns.
type Handler struct {
	hub      *Hub
	auth     Authenticator
	upgrader websocket.Upgrader
}

// NewHandler returns the /ws handler of hub.
func NewHandler(hub *Hub, auth Authenticator) *Handler {
	s := &Handler{hub: hub, auth: auth}
	hub.auth = auth // for in-band refreshes
	s.upgrader = websocket.Upgrader{
		// Read buffer size 0: gorilla reads through the bufio.Reader the hijack returns,
		// which /ws makes itself (ownReader): small, since most connections are idle, and a
		// frame larger than it is still read whole. Write buffers come from a pool and are
		// held only while writing (gorilla server.go), which keeps idle connections small.
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{Subprotocol},
		CheckOrigin:     s.originAllowed,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			writeError(w, status, reason.Error())
		},
	}
	return s
}

// ServeHTTP implements GET /ws.
func (s *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := s.hub
	if h.Draining() {
		s.refuse(w, http.StatusServiceUnavailable, "node is draining, reconnect")
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		s.refuse(w, http.StatusBadRequest, "websocket upgrade required")
		return
	}
	if !s.originAllowed(r) {
		s.refuse(w, http.StatusForbidden, "origin not allowed")
		return
	}
	id, err := s.auth.Authenticate(r)
	if err != nil {
		s.refuse(w, http.StatusUnauthorized, err.Error())
		return
	}
	user := id.User
	v1 := slices.Contains(websocket.Subprotocols(r), Subprotocol)
	after := int64(-1) // without since: after the acknowledged position
	if q := r.URL.Query(); v1 && q.Has("since") {
		if after, err = strconv.ParseInt(q.Get("since"), 10, 64); err != nil || after < 0 {
			s.refuse(w, http.StatusBadRequest, "since must be a number of 0 or more")
			return
		}
	}
	remote := remoteHost(r)
	if status, ok := h.admit.acquire(&h.cfg, remote); !ok {
		msg := "too many connections from this address"
		if status == http.StatusServiceUnavailable {
			msg = "node is at its connection limit, retry"
		}
		s.refuse(w, status, msg)
		return
	}
	c := h.newConn(user, remote)
	c.v1 = v1
	ctx := r.Context()
	start, err := h.register(ctx, c, after)
	if err != nil {
		h.admit.release(&h.cfg, remote)
		switch {
		case errors.Is(err, ErrTooManyConns):
			s.refuse(w, http.StatusTooManyRequests, "too many connections for this user")
		case errors.Is(err, ErrDraining):
			s.refuse(w, http.StatusServiceUnavailable, "node is draining, reconnect")
		default:
			s.refuse(w, http.StatusServiceUnavailable, "temporarily unavailable, retry")
		}
		return
	}
	ow := &ownReader{ResponseWriter: w, writeTimeout: h.cfg.WriteTimeout}
	conn, err := s.upgrader.Upgrade(ow, r, nil)
	if err != nil { // the upgrader already answered with an HTTP error
		h.finish(ctx, c)
		h.admit.release(&h.cfg, remote)
		return
	}
	c.ws, c.br = conn, ow.br
	if dc, ok := conn.NetConn().(*deadlineConn); ok && !c.v1 {
		if _, ok := unsentBytes(dc.Conn); ok { // the socket can tell what its peer acknowledged
			c.counted = dc
		}
	}
	h.obs.ConnOpened()
	if h.log.Enabled(ctx, slog.LevelInfo) {
		h.log.Info("connected", c.logAttrs()...)
	}

	// Subscribed and confirmed by register; now read where the connection starts. Whatever
	// arrives live meanwhile waits in c.pending and follows in order (fill.go). Not the
	// request's context: the connection is hijacked and outlives the request.
	h.startFill(c, after, start)
	c.setupRead()
	c.expireAt(id.Expires)
	parked := h.prepark(c)
	c.start()
	// Return from ServeHTTP: net/http then frees its 4 KB reader and writer, the request and
	// gin's context, which it would otherwise hold for the connection's whole life.
	if !parked || !h.park(c) {
		go c.serve()
	}
}

// Subprotocol is the WebSocket subprotocol of numbered messages, resume and acks. A client
// that does not offer it gets raw frames.
const Subprotocol = "wsgateway.v1"

// startFill queues c's start, read by register before the upgrade, and the live messages that
// waited meanwhile; if newer ones arrived than the read saw, c catches up once more.
func (h *Hub) startFill(c *Conn, after int64, b Backlog) {
	if after > 0 {
		// The client had everything up to since, so it may ack up to there (its last acks
		// of the previous connection may have been lost with it).
		c.written.Store(after)
	}
	sh := h.shardOf(c.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if u := sh.users[c.user]; u != nil && h.applyLocked(u, c, b, after) {
		h.fills.add(c) // newer messages arrived meanwhile: catch up again (filling stays set)
		return
	}
	c.filling = false
}

// readBufferSize is the read buffer of a /ws connection: a frame header, a control frame or
// a small message fits; larger payloads are read straight into the message. It must stay
// above 256 bytes, and the upgrader's ReadBufferSize 0: only then does gorilla read through
// this reader (gorilla server.go), which Conn.readControl and readBurst rely on.
const readBufferSize = 512

// ownReader hands gorilla a bufio.Reader of our making at the hijack, instead of net/http's
// 4 KB one: the read burst must see whether a frame is still buffered (Conn.readBurst). It
// also hands over the socket wrapped in a deadlineConn.
type ownReader struct {
	http.ResponseWriter
	writeTimeout time.Duration
	br           *bufio.Reader
}

// Hijack implements http.Hijacker for gorilla's Upgrade.
func (w *ownReader) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("ws: response does not implement http.Hijacker")
	}
	nc, brw, err := hj.Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		return nc, brw, err // gorilla refuses data sent before the handshake completed
	}
	w.br = bufio.NewReaderSize(nc, readBufferSize)
	dc := &deadlineConn{Conn: nc, step: w.writeTimeout / 8, last: unsetDeadline}
	return dc, bufio.NewReadWriter(w.br, brw.Writer), nil
}

// deadlineConn is the socket as gorilla sees it. gorilla sets the write deadline before every
// frame, and every change re-arms a runtime timer: 13 % of the gateway's CPU in a broadcast
// to 10,000 connections. Rounding write deadlines up to a step of write-timeout/8 and skipping
// the call while the rounded value is unchanged makes that one timer update per step instead
// of one per frame; a stuck write still fails, after between 1 and 1.125 × write-timeout.
// gorilla calls SetWriteDeadline only while it holds its write lock, which guards last.
type deadlineConn struct {
	net.Conn
	step time.Duration
	last time.Time
	sent atomic.Int64 // bytes written (delivered.go)
}

// unsetDeadline is no deadline anyone sets, so the first call always reaches the socket.
var unsetDeadline = time.Unix(1, 0)

func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	r := t // the rounded deadline, wall clock only (Truncate drops the monotonic reading)
	if !t.IsZero() && d.step > 0 {
		r = t.Add(d.step - 1).Truncate(d.step)
		t = t.Add(r.Sub(t)) // the same instant, keeping t's monotonic reading for the socket
	}
	if r.Equal(d.last) {
		return nil
	}
	d.last = r
	return d.Conn.SetWriteDeadline(t)
}

func (d *deadlineConn) SetDeadline(t time.Time) error {
	d.last = unsetDeadline // the socket's write deadline is t now; the next call sets its own
	return d.Conn.SetDeadline(t)
}

// SyscallConn and CloseWrite pass through what the poller and closeSocket use.
func (d *deadlineConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := d.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("ws: socket has no file descriptor")
	}
	return sc.SyscallConn()
}

func (d *deadlineConn) CloseWrite() error {
	cw, ok := d.Conn.(interface{ CloseWrite() error })
	if !ok {
		return errors.New("ws: socket cannot half-close")
	}
	return cw.CloseWrite()
}

func (s *Handler) refuse(w http.ResponseWriter, status int, msg string) {
	s.hub.obs.Refused(status)
	writeError(w, status, msg)
}

// originAllowed applies allowed-origins: "*" allows any; an empty list allows only the
// request's own host (and clients that send no Origin, which browsers always do).
func (s *Handler) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	allowed := s.hub.cfg.AllowedOrigins
	if len(allowed) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	return false
}

// Echo serves /ws/echo (--dev only): every frame comes back as it was sent, with the same
// limits as /ws. One goroutine reads and writes, so gorilla's one-writer rule holds.
func (s *Handler) Echo(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	cfg := &s.hub.cfg
	// Echo connections are not in the hub, so Hub.Shutdown cannot reach them: each one
	// watches for it and ends with 1001 like every other client.
	stop, watcher := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watcher)
		select {
		case <-s.hub.stopping:
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseGoingAway, "node shutting down"),
				s.hub.now().Add(cfg.WriteTimeout))
			conn.Close() // ends the read below
		case <-stop:
		}
	}()
	defer func() { close(stop); <-watcher }()
	wait := cfg.PingInterval + cfg.PongTimeout
	conn.SetReadLimit(cfg.MaxMessageBytes)
	for {
		_ = conn.SetReadDeadline(s.hub.now().Add(wait))
		typ, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if typ == websocket.TextMessage && !utf8.Valid(data) {
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseInvalidFramePayloadData, "invalid UTF-8"),
				s.hub.now().Add(cfg.WriteTimeout))
			return
		}
		_ = conn.SetWriteDeadline(s.hub.now().Add(cfg.WriteTimeout))
		if err := conn.WriteMessage(typ, data); err != nil {
			return
		}
	}
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// writeError answers with status and {"error": msg}, the error shape of the whole gateway.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}
