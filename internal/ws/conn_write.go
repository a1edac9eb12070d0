package ws

import (
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

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
		code, text, ping, check := c.closeCode, c.closeText, c.pingDue, c.checkDue
		c.pingDue, c.checkDue = false, false
		if code == 0 && !readerGone && len(batch) == 0 && !ping && !check {
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
			c.noteWritten()
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
				if !c.v1 {
					c.markSent(s) // a raw client cannot ack: the gateway records it (delivered.go)
				}
			}
		}
		if !c.v1 {
			c.noteDelivered()
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
	if !c.v1 {
		c.noteDelivered() // while the socket can still tell what its peer acknowledged
	}
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
