package ws

import "time"

// A raw client cannot acknowledge, so the gateway records its position itself: a numbered
// message counts as received once the client's TCP stack acknowledged its last byte. When a
// write fails (a client that stopped reading, whose write timed out), what still sits in the
// kernel's send buffer stays unacknowledged in the inbox and reaches the client again when it
// reconnects: counting it at write time lost it whenever the kernel dropped that buffer with
// the socket. A connection that ends in order (its close frame, or the client's, written after
// everything else) counts all it wrote: the kernel sends it before the FIN. Where the socket
// cannot tell (no Linux, no file descriptor: counted is nil), written counts as received.

// sentMark is a numbered message written to the socket: its number and how many bytes the
// socket had taken once its last byte was written.
type sentMark struct {
	seq int64
	end int64
}

// Write counts the bytes written to the socket, for noteDelivered. gorilla writes from the
// writer and, for control frames, from other goroutines: hence atomic.
func (d *deadlineConn) Write(p []byte) (int, error) {
	n, err := d.Conn.Write(p)
	d.sent.Add(int64(n))
	return n, err
}

// markSent records that numbered message seq was written whole. Writer only.
func (c *Conn) markSent(seq int64) {
	if c.counted == nil {
		c.noteRaw(seq) // nothing to ask the socket: written counts as received
		return
	}
	if len(c.inKernel) == maxMarks {
		c.inKernel = thin(c.inKernel)
	}
	c.inKernel = append(c.inKernel, sentMark{seq: seq, end: c.counted.sent.Load()})
}

// maxMarks bounds inKernel: a send buffer of megabytes holds tens of thousands of small frames.
const maxMarks = 1024

// thin keeps every second mark, the later of each pair, in place: a message whose own mark went
// counts once the next one's bytes are confirmed, a little late but never early.
func thin(marks []sentMark) []sentMark {
	n := 0
	for i := 1; i < len(marks); i += 2 {
		marks[n] = marks[i]
		n++
	}
	return marks[:n]
}

// noteDelivered records the raw position up to the last message the client's TCP stack
// acknowledged. The writer calls it after each batch (a ping is one) and when a write failed,
// while the socket is still open; nothing else touches inKernel. markSent keeps inKernel empty
// where the socket cannot tell.
func (c *Conn) noteDelivered() {
	if len(c.inKernel) == 0 {
		return
	}
	q, ok := unsentBytes(c.counted.Conn)
	if !ok {
		return // the socket is closed: what it did not confirm stays unacknowledged
	}
	acked := c.counted.sent.Load() - int64(q)
	n := 0
	for n < len(c.inKernel) && c.inKernel[n].end <= acked {
		n++
	}
	if n > 0 {
		c.noteRaw(c.inKernel[n-1].seq)
	}
	if n == len(c.inKernel) {
		c.inKernel = nil // an idle connection holds no buffer
		c.recheckIn = 0
		return
	}
	c.inKernel = append(c.inKernel[:0], c.inKernel[n:]...)
	c.scheduleRecheck()
}

// Rechecks of a connection whose last messages are not confirmed yet: after 10 ms (a
// round trip on most networks), then twice as long each time, up to the ping interval's
// rounds, which check as well.
const (
	recheckFirst = 10 * time.Millisecond
	recheckMax   = 2 * time.Second
)

// scheduleRecheck asks for a writer round a little later, so that the position (and the
// delivered event of a receipt) follows the client's acknowledgement even when nothing more
// is written. Writer only.
func (c *Conn) scheduleRecheck() {
	c.recheckIn = min(max(2*c.recheckIn, recheckFirst), recheckMax)
	if c.recheck == nil {
		c.recheck = time.AfterFunc(c.recheckIn, func() {
			c.mu.Lock()
			if c.started && c.closeCode == 0 {
				c.checkDue = true
				c.wakeLocked()
			}
			c.mu.Unlock()
		})
		return
	}
	c.recheck.Reset(c.recheckIn)
}

// noteWritten records the raw position up to the last message written: the connection ends in
// order. Writer only.
func (c *Conn) noteWritten() {
	if len(c.inKernel) > 0 {
		c.noteRaw(c.inKernel[len(c.inKernel)-1].seq)
		c.inKernel = nil
	}
}

func (c *Conn) noteRaw(seq int64) { c.hub.acks.note(c.user, seq) }
