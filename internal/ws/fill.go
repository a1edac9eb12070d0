package ws

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// A connection's position (Conn.pos) is the highest number it was given. Live messages
// continue it one by one (offerLocked); anything else — its start, a number that jumped (a
// publish this node never got), a pub/sub outage (Resync) — is a catch-up: the connection reads
// the inbox after its position and takes what it finds, and meanwhile live messages wait in
// Conn.pending. A catch-up is called a fill.

// offerLocked hands a live message to c, keeping c's numbers consecutive. Called with c's
// shard lock held.
func (h *Hub) offerLocked(c *Conn, m Message) {
	switch {
	case m.Seq == 0: // unnumbered: no position to keep
		c.enqueue(m)
	case c.filling:
		h.pendLocked(c, m)
	case m.Seq == c.pos+1:
		c.pos = m.Seq
		c.enqueue(m)
	case m.Seq <= c.pos:
		if m.Seq == 1 && c.pos > 1 {
			// The user's state expired and numbering started again (a reset): the fill
			// finds the position above the latest number and starts over.
			h.pendLocked(c, m)
			h.fillLocked(c)
		}
		// Otherwise a duplicate: the inbox replay already gave it.
	default: // a jump: the missing messages come from the inbox first
		h.pendLocked(c, m)
		h.fillLocked(c)
	}
}

// pendLocked keeps a live message that arrived while c catches up, up to send-queue of them;
// beyond that the catch-up reads the rest from the inbox (maxSeen says it must).
func (h *Hub) pendLocked(c *Conn, m Message) {
	if len(c.pending) < h.cfg.SendQueue {
		c.pending = append(c.pending, m)
	}
}

// fillLocked starts a catch-up of c on one of the hub's fillers. When one is under way, its
// read may predate what this call is about (a second outage during a catch-up: messages that
// were neither in that read nor delivered live), so it reads once more when it is done.
func (h *Hub) fillLocked(c *Conn) {
	if c.filling {
		c.refill = true
		return
	}
	c.filling = true
	h.fills.add(c)
}

// applyLocked gives c what a read of the inbox after position after found (after -1: its first
// read, without since), then the live messages that waited. It returns true when the catch-up
// must read again: messages newer than the read arrived meanwhile and did not all wait in
// pending, or a fill was asked for during the read (fillLocked). The caller then keeps c
// filling, else ends it. Called with c's shard lock held.
func (h *Hub) applyLocked(u *userEntry, c *Conn, b Backlog, after int64) (again bool) {
	now := h.now()
	switch {
	case after < 0:
		c.pos = b.Acked
	case after <= b.Latest:
		c.pos = after // a start with since; a catch-up read after c.pos, which stood still
	default:
		// The position is above the user's latest number: the state expired and numbering
		// started again. The client forgets its position; what follows is what since=0 gives.
		c.control(now, "reset "+strconv.FormatInt(b.Latest, 10), 0)
		c.pos = 0
		c.written.Store(0) // acks of the old numbering must not acknowledge the new one
		u.maxSeen = b.Latest
		c.pending = nil
	}
	if b.Start > c.pos+1 {
		c.control(now, "gap "+strconv.FormatInt(c.pos+1, 10)+" "+strconv.FormatInt(b.Start-1, 10), b.Start-1)
		c.pos = b.Start - 1
	}
	n := 0
	for i, data := range b.Msgs {
		if seq := b.Start + int64(i); seq > c.pos {
			m := newMessage(data, kindUser, now)
			m.Seq = seq
			c.enqueueBacklog(m)
			c.pos = seq
			n++
		}
	}
	for _, m := range c.pending {
		if m.Seq == c.pos+1 {
			c.pos = m.Seq
			c.enqueueBacklog(m)
		}
	}
	c.pending = nil
	h.obs.FlushedOffline(n)
	again = u.maxSeen > c.pos || c.refill
	c.refill = false
	return again
}

// maxFillers bounds the goroutines that run catch-ups at once. After an outage every
// connection catches up: their reads share the inbox's pipelines, so a few callers suffice.
const maxFillers = 8

// filler runs catch-ups on at most maxFillers goroutines, which exist only while there is work.
type filler struct {
	h       *Hub
	mu      sync.Mutex
	queue   []*Conn
	workers int
	wg      sync.WaitGroup
}

func (f *filler) add(c *Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, c)
	if f.workers < maxFillers {
		f.workers++
		f.wg.Add(1)
		go f.work()
	}
}

func (f *filler) work() {
	defer f.wg.Done()
	for {
		f.mu.Lock()
		if len(f.queue) == 0 {
			f.workers--
			f.queue = nil
			f.mu.Unlock()
			return
		}
		c := f.queue[0]
		f.queue[0] = nil
		f.queue = f.queue[1:]
		f.mu.Unlock()
		f.h.fill(c)
	}
}

// wait returns once no catch-up runs (Shutdown, after every connection ended).
func (f *filler) wait() { f.wg.Wait() }

// fillRetryFor bounds how long a catch-up retries a failing read before it gives the
// connection up (1011: the client reconnects and starts from its position again).
const fillRetryFor = 10 * time.Second

// fill catches c up: it reads the inbox after c's position until nothing newer arrived
// meanwhile.
func (h *Hub) fill(c *Conn) {
	sh := h.shardOf(c.user)
	giveUp := time.Now().Add(fillRetryFor)
	for backoff := 50 * time.Millisecond; ; {
		sh.mu.Lock()
		after := c.pos
		sh.mu.Unlock()
		if c.closing.Load() {
			return // ending: its position is recorded, the client resumes from it
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.SubscribeTimeout)
		b, err := h.inbox.Read(ctx, c.user, after)
		cancel()
		if err != nil {
			if time.Now().After(giveUp) || h.draining.Load() {
				h.log.Warn("catching up from the inbox failed", append(c.logAttrs(), "err", err)...)
				c.closeWith(1011, "inbox unavailable, reconnect", ReasonError)
				return
			}
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-h.stopping:
			}
			t.Stop()
			backoff = min(2*backoff, time.Second)
			continue
		}
		sh.mu.Lock()
		u := sh.users[c.user]
		again := u != nil && h.applyLocked(u, c, b, after)
		if !again {
			c.filling = false
		}
		sh.mu.Unlock()
		if !again {
			return
		}
	}
}
