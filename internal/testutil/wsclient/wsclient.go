// Package wsclient is the WebSocket client of the tests that drive a real gateway: dial /ws
// as a user (?user_id=, accepted under --dev) or with a token, raw or with the wsgateway.v1
// subprotocol; read the next frame within a deadline; expect a given message or a close with a
// given code; for wsgateway.v1, parse the server's frames and acknowledge (docs/protocol.md).
package wsclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Subprotocol is the name a client offers to get numbered frames, acks and resume.
const Subprotocol = "wsgateway.v1"

// DefaultTimeout bounds a handshake and each read or write when Options.Timeout is zero. It
// is far above what a healthy gateway needs: tests run with -race on loaded 2-core machines,
// and the bound only matters when something is wrong.
const DefaultTimeout = 20 * time.Second

// Options says how to dial.
type Options struct {
	Path  string // default "/ws"
	User  string // ?user_id=
	Token string // ?token=
	Query string // more of the query, e.g. "since=3"
	// V1 offers wsgateway.v1; the dial fails unless the gateway selects it.
	V1     bool
	Header http.Header
	// Local is the loopback source address (127.0.0.0/8 is all lo on Linux), so that per-IP
	// limits count the clients apart; nil lets the kernel choose.
	Local net.IP
	// ReadBuffer, when positive, shrinks the socket's receive buffer, so that a client that
	// stops reading fills the kernel buffers after a few hundred KiB instead of tens of MiB.
	ReadBuffer int
	// Timeout bounds the handshake and each read and write; zero is DefaultTimeout.
	Timeout time.Duration
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

// URL is the ws:// address of o's path and query on addr ("host:port").
func URL(addr string, o Options) string {
	path := o.Path
	if path == "" {
		path = "/ws"
	}
	var q []string
	if o.User != "" {
		q = append(q, "user_id="+url.QueryEscape(o.User))
	}
	if o.Token != "" {
		q = append(q, "token="+o.Token)
	}
	if o.Query != "" {
		q = append(q, o.Query)
	}
	if len(q) > 0 {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + strings.Join(q, "&")
	}
	return "ws://" + addr + path
}

// Conn is one client connection; the embedded gorilla connection is there for whatever the
// helpers do not cover (raw writes to NetConn, control frames).
type Conn struct {
	*websocket.Conn
	// Timeout bounds each read and write of the helpers.
	Timeout time.Duration
}

// Dial connects without failing a test: for goroutines and for expected refusals. A refused
// handshake returns the HTTP response, whose body is still readable.
func Dial(addr string, o Options) (*Conn, *http.Response, error) {
	nd := &net.Dialer{}
	if o.Local != nil {
		nd.LocalAddr = &net.TCPAddr{IP: o.Local}
	}
	d := websocket.Dialer{
		HandshakeTimeout: o.timeout(),
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err == nil && o.ReadBuffer > 0 {
				if err = c.(*net.TCPConn).SetReadBuffer(o.ReadBuffer); err != nil {
					c.Close()
				}
			}
			return c, err
		},
	}
	if o.V1 {
		d.Subprotocols = []string{Subprotocol}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout())
	defer cancel()
	c, resp, err := d.DialContext(ctx, URL(addr, o), o.Header)
	if err != nil {
		return nil, resp, err
	}
	if o.V1 && c.Subprotocol() != Subprotocol {
		c.Close()
		return nil, resp, fmt.Errorf("subprotocol %q selected, want %s", c.Subprotocol(), Subprotocol)
	}
	return &Conn{Conn: c, Timeout: o.timeout()}, resp, nil
}

// MustDial connects or fails tb; the test's clean-up closes the connection. When it returns,
// the gateway has subscribed the user (it upgrades only after that).
func MustDial(tb testing.TB, addr string, o Options) *Conn {
	tb.Helper()
	c, resp, err := Dial(addr, o)
	if err != nil {
		tb.Fatalf("dial %s: %v (%s)", redact(URL(addr, o)), err, Describe(resp))
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// ExpectRefused dials and fails tb unless the gateway refused the upgrade with HTTP status
// and a JSON body {"error": "…"}; it returns the error text.
func ExpectRefused(tb testing.TB, addr string, o Options, status int) string {
	tb.Helper()
	c, resp, err := Dial(addr, o)
	if err == nil {
		c.Close()
		tb.Fatalf("dial %s: connected, want HTTP %d", redact(URL(addr, o)), status)
	}
	if resp == nil {
		tb.Fatalf("dial %s: %v, want HTTP %d", redact(URL(addr, o)), err, status)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		tb.Fatalf("dial %s: HTTP %d %s, want %d", redact(URL(addr, o)), resp.StatusCode, body, status)
	}
	return ErrorField(tb, body)
}

// ErrorField fails tb unless body is a JSON object with a non-empty "error" string, which it
// returns: the shape of every refusal and API error.
func ErrorField(tb testing.TB, body []byte) string {
	tb.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		tb.Fatalf("error body is not JSON: %v: %q", err, body)
	}
	if e.Error == nil || *e.Error == "" {
		tb.Fatalf(`error body has no "error" field: %s`, body)
	}
	return *e.Error
}

// Describe is a refused handshake's status and body for a failure message.
func Describe(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}

// redact shortens a URL for messages: tokens are long and secret-ish.
func redact(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Next returns the next message and its type, failing tb when none arrives in time.
func (c *Conn) Next(tb testing.TB) (int, []byte) {
	tb.Helper()
	_ = c.SetReadDeadline(time.Now().Add(c.Timeout))
	typ, data, err := c.ReadMessage()
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	return typ, data
}

// NextText returns the next message, which must be a text frame.
func (c *Conn) NextText(tb testing.TB) string {
	tb.Helper()
	typ, data := c.Next(tb)
	if typ != websocket.TextMessage {
		tb.Fatalf("got frame type %d (%q), want text", typ, data)
	}
	return string(data)
}

// Expect reads the next message and checks that it is the text want. Pushing a sentinel and
// expecting it next proves that nothing else (a duplicate, a message meant for someone else)
// came in between, without sleeping.
func (c *Conn) Expect(tb testing.TB, want string) {
	tb.Helper()
	if got := c.NextText(tb); got != want {
		tb.Fatalf("next message %q, want %q", got, want)
	}
}

// ReadUntilClose reads data messages until the connection ends and returns them with the close
// code (-1 when the end was not a close frame). Then it hangs up, as a client does once the
// closing handshake is over (gorilla has answered the close frame by then).
func (c *Conn) ReadUntilClose(tb testing.TB) ([][]byte, int) {
	tb.Helper()
	var msgs [][]byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(c.Timeout))
		_, data, err := c.ReadMessage()
		if err == nil {
			msgs = append(msgs, data)
			continue
		}
		c.Close()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return msgs, ce.Code
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			tb.Fatalf("connection neither closed nor sent anything for %v", c.Timeout)
		}
		return msgs, -1
	}
}

// ExpectClose reads until the connection ends and checks that it ended with code and that no
// data message came first.
func (c *Conn) ExpectClose(tb testing.TB, code int) {
	tb.Helper()
	msgs, got := c.ReadUntilClose(tb)
	if len(msgs) > 0 {
		tb.Fatalf("got %d unexpected messages before the close, first %q", len(msgs), msgs[0])
	}
	if got != code {
		tb.Fatalf("closed with %d, want %d", got, code)
	}
}

// Send writes one text frame.
func (c *Conn) Send(tb testing.TB, text string) {
	tb.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(c.Timeout))
	if err := c.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		tb.Fatalf("write %q: %v", text, err)
	}
}
