package client

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// session is one WebSocket connection. Two goroutines use it, as gorilla allows: the reader
// (started by serve, waited for by serve) reads, delivers and moves the position; the run
// goroutine is the only writer (acks, pings, token refreshes, the closing handshake).
type session struct {
	c   *Client
	ws  *websocket.Conn
	raw bool      // no subprotocol on this connection
	exp time.Time // expiry of the token in use; zero when unknown

	lastRecv atomic.Int64  // UnixNano of the last frame of any kind
	pings    atomic.Int32  // raw mode: text pings not yet answered, so only that many "pong"s are swallowed
	notify   chan struct{} // capacity 1: the reader moved the position
	readDone chan struct{} // closed by the reader; readErr is set before
	readErr  error
}

// serve runs one open connection until it ends and reports how: the close code (1006 when
// no close frame arrived) and the error that ended it.
func (c *Client) serve(ws *websocket.Conn, exp time.Time) (int, error) {
	s := &session{
		c:        c,
		ws:       ws,
		raw:      c.cfg.Raw || ws.Subprotocol() != Subprotocol,
		exp:      exp,
		notify:   make(chan struct{}, 1),
		readDone: make(chan struct{}),
	}
	c.connOnce.Do(func() { close(c.connected) })
	c.cfg.Logger.Debug("wsgateway client connected", "raw", s.raw)
	c.emit(Event{Type: EventConnected, Raw: s.raw})

	ws.SetReadLimit(c.cfg.ReadLimit)
	ws.SetPingHandler(func(data string) error {
		s.touch()
		// As gorilla's default handler: a pong that cannot be written is not a read error;
		// the next read tells whether the connection is gone.
		_ = ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait))
		return nil
	})
	ws.SetPongHandler(func(string) error { s.touch(); return nil })
	s.touch()
	go s.read()

	werr := s.write()
	ws.Close()
	<-s.readDone

	code, reason, err := websocket.CloseAbnormalClosure, "", s.readErr
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case c.ctx.Err() != nil:
		code, err = websocket.CloseNormalClosure, nil
	case errors.As(err, &ce):
		code, reason = ce.Code, ce.Text
	case errors.As(err, &ne) && ne.Timeout():
		err = ErrSilent
	case werr != nil:
		err = werr // the reader only saw the socket we closed
	}
	c.cfg.Logger.Debug("wsgateway client disconnected", "code", code, "err", err)
	c.emit(Event{Type: EventDisconnected, Code: code, Reason: reason, Err: err})
	return code, err
}

// touch records a frame: the connection is alive for another SilenceTimeout. Called on the
// reader goroutine (the ping and pong handlers run inside its reads), which owns the read
// deadline, and once by serve before the reader starts.
func (s *session) touch() {
	now := time.Now()
	s.lastRecv.Store(now.UnixNano())
	_ = s.ws.SetReadDeadline(now.Add(s.c.cfg.SilenceTimeout))
}

func (s *session) read() {
	defer close(s.readDone)
	for {
		// Silence is counted from here, not from the last frame: the time the application
		// took to receive the previous message says nothing about the connection.
		_ = s.ws.SetReadDeadline(time.Now().Add(s.c.cfg.SilenceTimeout))
		typ, data, err := s.ws.ReadMessage()
		if err != nil {
			s.readErr = err
			return
		}
		s.touch()
		if !s.handle(typ == websocket.BinaryMessage, data) {
			s.readErr = s.c.ctx.Err()
			return
		}
	}
}

// handle acts on one frame; false when the client is closing.
func (s *session) handle(binary bool, data []byte) bool {
	c := s.c
	if s.raw {
		if !binary && string(data) == "pong" && s.pings.Load() > 0 {
			s.pings.Add(-1)
			return true
		}
		return s.deliver(Message{Data: data, Binary: binary})
	}
	f, err := parseFrame(data)
	if err != nil {
		// The payload may be private: log its size only. Skipping loses nothing numbered,
		// since a numbered frame always parses.
		c.cfg.Logger.Warn("wsgateway client: malformed frame skipped", "bytes", len(data))
		return true
	}
	switch f.kind {
	case frameUnnumbered:
		return s.deliver(Message{Data: f.payload, Binary: binary})
	case frameNumbered:
		// Only this goroutine moves the position, so prev is still current when restored.
		c.mu.Lock()
		prev := c.pos
		dup := f.seq <= prev.seq
		if !dup {
			c.pos.seq, c.pos.known = f.seq, true
		}
		c.mu.Unlock()
		if dup {
			return true // the replay after a resume overlapped what had already arrived
		}
		if !s.deliver(Message{Seq: f.seq, Data: f.payload, Binary: binary}) {
			c.mu.Lock()
			c.pos = prev // never received: neither Last nor the final ack may count it
			c.mu.Unlock()
			return false
		}
		s.advance(func(p *position) { p.delivered = f.seq })
	case frameGap:
		c.emit(Event{Type: EventGap, From: f.from, To: f.to})
		s.advance(func(p *position) { p.seq = max(p.seq, f.to); p.delivered = p.seq })
	case frameReset:
		c.emit(Event{Type: EventReset, Latest: f.latest})
		s.advance(func(p *position) { p.seq, p.delivered, p.gen = 0, 0, p.gen+1 })
	}
	return true
}

// deliver hands m to the application, waiting as long as it takes: a slow reader slows the
// connection down (the gateway then counts it as a slow consumer) rather than losing
// messages. Time spent here is not silence: the read deadline is set anew before the next
// read.
func (s *session) deliver(m Message) bool {
	select {
	case s.c.msgs <- m:
		return true
	case <-s.c.ctx.Done():
		return false
	}
}

func (s *session) advance(move func(*position)) {
	s.c.mu.Lock()
	move(&s.c.pos)
	s.c.pos.known = true
	s.c.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default: // the writer has a wake-up pending and will read the newest position
	}
}

// write is the writer loop: it sleeps until an ack, a ping or a token refresh is due, and
// returns when the connection ends (reader gone, a write failed, Close).
func (s *session) write() error {
	c := s.c
	silence := c.cfg.SilenceTimeout
	var refreshAt time.Time
	if !s.raw {
		refreshAt = refreshTime(time.Now(), s.exp)
	}
	var lastPing int64 // UnixNano; 0: none yet
	timer := time.NewTimer(silence)
	defer timer.Stop()
	for {
		now := time.Now()
		next := now.Add(silence)
		if !s.raw {
			due, err := s.ackIfDue(now, false)
			if err != nil {
				return err
			}
			if !due.IsZero() {
				next = minTime(next, due)
			}
		}
		// Ping after a third of SilenceTimeout without traffic, and again each third: a live
		// gateway gets three chances to answer before the connection counts as dead, and a
		// busy connection sends no pings at all.
		pingAt := time.Unix(0, max(s.lastRecv.Load(), lastPing)).Add(silence / 3)
		if !now.Before(pingAt) {
			if s.raw {
				s.pings.Add(1)
			}
			if err := s.send("ping", writeWait); err != nil {
				return err
			}
			lastPing, pingAt = now.UnixNano(), now.Add(silence/3)
		}
		next = minTime(next, pingAt)
		if !refreshAt.IsZero() && !now.Before(refreshAt) {
			var err error
			if refreshAt, err = s.refresh(now); err != nil {
				return err
			}
		}
		if !refreshAt.IsZero() {
			next = minTime(next, refreshAt)
		}

		timer.Reset(time.Until(next))
		select {
		case <-c.ctx.Done():
			s.goodbye()
			return nil
		case <-s.readDone:
			return nil
		case <-s.notify:
		case <-timer.C:
		}
	}
}

// ackIfDue writes "ack <seq>" when one is due, and otherwise returns when it will be (zero:
// nothing to acknowledge). final ignores the batching, for the last ack before closing.
func (s *session) ackIfDue(now time.Time, final bool) (time.Time, error) {
	c, a := s.c, &s.c.ack
	c.mu.Lock()
	pos := c.pos
	c.mu.Unlock()
	pending := pos.delivered - a.seq
	if pos.gen != a.gen {
		pending = pos.delivered // numbering started again after a reset
	}
	if pending <= 0 {
		a.seq, a.gen, a.waiting = pos.delivered, pos.gen, time.Time{}
		return time.Time{}, nil
	}
	if a.waiting.IsZero() {
		a.waiting = now
	}
	due := a.waiting.Add(c.cfg.AckDelay)
	if pending >= int64(c.cfg.AckEvery) {
		due = now
	}
	due = maxTime(due, a.sentAt.Add(minAckGap))
	if !final && now.Before(due) {
		return due, nil
	}
	wait := writeWait
	if final {
		wait = s.closeWait() // Close is waiting
	}
	if err := s.send("ack "+strconv.FormatInt(pos.delivered, 10), wait); err != nil {
		return time.Time{}, err
	}
	a.seq, a.gen, a.sentAt, a.waiting = pos.delivered, pos.gen, now, time.Time{}
	return time.Time{}, nil
}

// refresh replaces the connection's token before it expires with "auth <jwt>" and returns
// when to refresh next. A failed Token call is retried, at most every second, until exp;
// after that the gateway closes with 4002 and the reconnect fetches a token anyway.
func (s *session) refresh(now time.Time) (time.Time, error) {
	c := s.c
	retry := now.Add(max(s.exp.Sub(now)/2, time.Second))
	if !retry.Before(s.exp) {
		retry = time.Time{}
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.SilenceTimeout)
	tok, err := c.cfg.Token(ctx)
	cancel()
	if err != nil {
		c.cfg.Logger.Warn("wsgateway client: token refresh failed", "err", err)
		return retry, nil
	}
	exp, ok := tokenExpiry(tok)
	if ok && !exp.After(s.exp) {
		// The same token again (a cache that has not renewed yet): nothing to gain by
		// sending it, and refreshing at a quarter of what is left would spin towards exp.
		return retry, nil
	}
	if err := s.send("auth "+tok, writeWait); err != nil {
		return time.Time{}, err
	}
	s.exp = exp // zero without exp: no further refreshes
	return refreshTime(now, exp), nil
}

// goodbye ends the connection for Close: the final ack, then the closing handshake, waiting
// briefly for the gateway's answer so that it sees a clean 1000 rather than a reset.
func (s *session) goodbye() {
	if !s.raw {
		_, _ = s.ackIfDue(time.Now(), true)
	}
	wait := s.closeWait()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if s.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wait)) != nil {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-s.readDone:
	case <-t.C:
	}
}

// closeWait bounds each step of Close's goodbye, which a dead link must not stretch.
func (s *session) closeWait() time.Duration { return min(time.Second, s.c.cfg.SilenceTimeout) }

func (s *session) send(text string, wait time.Duration) error {
	_ = s.ws.SetWriteDeadline(time.Now().Add(wait))
	return s.ws.WriteMessage(websocket.TextMessage, []byte(text))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
