package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// The raw WebSocket clients of the tests: dialled with wsclient, read by a goroutine each.

// frame is one message a client received.
type frame struct {
	typ  int // websocket.TextMessage or websocket.BinaryMessage
	data []byte
}

func (f frame) String() string {
	if f.typ == websocket.BinaryMessage {
		return fmt.Sprintf("binary %x", f.data)
	}
	return fmt.Sprintf("text %q", f.data)
}

// client is a real WebSocket client. One goroutine reads everything into frames (so the
// server never sees a slow consumer), answers pings and close frames (gorilla's defaults).
type client struct {
	conn *wsclient.Conn

	wmu sync.Mutex // one writer at a time (gorilla's rule); the reader only uses WriteControl

	mu      sync.Mutex
	frames  []frame
	readErr error
	done    chan struct{} // closed when the reader ended; readErr is set then
}

// as dials /ws as user (?user_id=, accepted under --dev).
func as(user string) wsclient.Options { return wsclient.Options{User: user} }

// tryDial connects without failing the test: for goroutines and for expected refusals.
func tryDial(addr string, o wsclient.Options) (*client, *http.Response, error) {
	conn, resp, err := wsclient.Dial(addr, o)
	if err != nil {
		return nil, resp, err
	}
	c := &client{conn: conn, done: make(chan struct{})}
	go c.read()
	return c, resp, nil
}

// dial connects or fails the test. When it returns, the node has confirmed the user's
// subscription (the gateway upgrades only after that) and flushes the offline backlog first.
func dial(t *testing.T, addr string, o wsclient.Options) *client {
	t.Helper()
	c, resp, err := tryDial(addr, o)
	if err != nil {
		t.Fatalf("dial %s: %v (%s)", wsclient.URL(addr, o), err, wsclient.Describe(resp))
	}
	t.Cleanup(c.abort)
	return c
}

func (c *client) read() {
	defer close(c.done)
	for {
		typ, data, err := c.conn.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.readErr = err
			c.mu.Unlock()
			return
		}
		c.frames = append(c.frames, frame{typ, data})
		c.mu.Unlock()
	}
}

// received returns a copy of every frame so far.
func (c *client) received() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.frames...)
}

func (c *client) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

func (c *client) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitFrames waits until at least n frames arrived and returns them all.
func (c *client) waitFrames(t *testing.T, n int, what string) []frame {
	t.Helper()
	wait.For(t, timeout, func() bool { return c.count() >= n || c.closed() },
		"%s: waiting for %d frames, got %s", what, n, wait.Lazy(func() string { return fmt.Sprint(c.received()) }))
	got := c.received()
	if len(got) < n {
		t.Fatalf("%s: connection ended (%v) after %d frames, want %d: %v", what, c.err(), len(got), n, got)
	}
	return got
}

// expectTexts waits for exactly the text frames want (in order, and nothing else) after the
// first skip frames.
func (c *client) expectTexts(t *testing.T, skip int, what string, want ...string) {
	t.Helper()
	got := c.waitFrames(t, skip+len(want), what)[skip:]
	if len(got) != len(want) {
		t.Fatalf("%s: got %d frames %v, want %q", what, len(got), got, want)
	}
	for i, f := range got {
		if f.typ != websocket.TextMessage || string(f.data) != want[i] {
			t.Fatalf("%s: frame %d is %v, want text %q (all: %v)", what, i, f, want[i], got)
		}
	}
}

func (c *client) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// send writes one data frame.
func (c *client) send(t *testing.T, typ int, data []byte) {
	t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(httpTimeout))
	if err := c.conn.WriteMessage(typ, data); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

// closeCode waits until the server ended the connection and returns the close code it sent
// (-1 if it ended without a close frame).
func (c *client) closeCode(t *testing.T, what string) int {
	t.Helper()
	wait.For(t, timeout, c.closed, "%s: the server did not close the connection", what)
	var ce *websocket.CloseError
	if errors.As(c.err(), &ce) {
		return ce.Code
	}
	return -1
}

// closeClean runs the client side of the closing handshake as a well-behaved client does:
// send a 1000 close frame, keep reading until the server's close frame arrives, then close the
// socket. Every frame the server wrote before its close frame is in frames when it returns.
// It is safe to call from any goroutine.
func (c *client) closeClean() ([]frame, error) {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	werr := c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(httpTimeout))
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.conn.Close()
		<-c.done
		return c.received(), fmt.Errorf("no close frame from the server within %v", timeout)
	}
	c.conn.Close()
	if werr != nil && !errors.Is(werr, websocket.ErrCloseSent) {
		return c.received(), fmt.Errorf("sending close: %w", werr)
	}
	var ce *websocket.CloseError
	if !errors.As(c.err(), &ce) {
		return c.received(), fmt.Errorf("connection ended without a close frame: %v", c.err())
	}
	return c.received(), nil
}

// abort closes the socket (idempotent) and waits for the reader: the cleanup of every client.
func (c *client) abort() {
	c.conn.Close()
	<-c.done
}
