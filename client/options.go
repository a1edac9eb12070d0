package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
)

// Subprotocol is the WebSocket subprotocol the client offers unless Options.Raw is set.
const Subprotocol = "wsgateway.v1"

// Defaults of the Options fields left zero.
const (
	DefaultAckDelay       = 50 * time.Millisecond
	DefaultAckEvery       = 64
	DefaultReconnectMin   = 500 * time.Millisecond
	DefaultReconnectMax   = 30 * time.Second
	DefaultStableAfter    = 10 * time.Second
	DefaultSilenceTimeout = 35 * time.Second // the gateway's ping-interval + pong-timeout
	DefaultReadLimit      = 16 << 20
)

// minAckGap spaces acknowledgements whatever the message rate. The gateway counts every
// inbound frame against a per-connection rate limit (50 a second by default) and closes with
// 1008 beyond it, so acks stay at five a second at most, leaving that budget to the
// application. A cumulative ack loses nothing by waiting.
const minAckGap = 200 * time.Millisecond

// writeWait bounds every write; a peer that takes longer to accept a few bytes is gone.
const writeWait = 10 * time.Second

// Options configure a Client. Only URL is required; every other field has the default
// documented on it.
type Options struct {
	// URL is the gateway's WebSocket endpoint, e.g. "wss://push.example.com/ws" (http and
	// https are turned into ws and wss). Query parameters in it are kept, such as
	// "?user_id=alice" for a gateway in development mode; the client sets "since" itself.
	URL string

	// Token returns the JWT to connect with, sent as "Authorization: Bearer". It is called
	// before every connection attempt, and again shortly before the current token's exp to
	// refresh the open connection in-band, so it should hand out a token that is valid for a
	// while. A failure counts as a failed attempt (the client backs off and tries again).
	// Nil: no token.
	Token func(ctx context.Context) (string, error)

	// Since is the highest seq the application has already processed, typically saved from
	// Client.Last by an earlier run. The first connection asks for every kept message above
	// it. Zero asks instead for every message not yet acknowledged by any connection of the
	// user. Later connections always resume from the last message delivered.
	Since int64

	// Raw connects without the wsgateway.v1 subprotocol: every frame is a message with Seq
	// 0, nothing is acknowledged or resumed and the token is not refreshed in-band. A frame
	// written into a socket that turns out to be dead is lost in this mode.
	Raw bool

	// AckDelay is the longest a received message waits before it is acknowledged when
	// messages are sparse. Default 50ms.
	AckDelay time.Duration
	// AckEvery acknowledges at once when this many messages are waiting. Default 64. Acks
	// are cumulative and never more than five a second, whatever these two say.
	AckEvery int

	// ReconnectMin and ReconnectMax bound the wait between attempts: the n-th failure in a
	// row (n from 0) waits a random time in [0, min(ReconnectMax, ReconnectMin*2^n)), "full
	// jitter", so that clients dropped together do not come back together. Defaults 500ms
	// and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// StableAfter is how long a connection must have stayed open for the backoff to start
	// again from ReconnectMin. Default 10s.
	StableAfter time.Duration

	// SilenceTimeout declares a connection dead when nothing at all (message, pong, ping)
	// arrived for this long, and bounds each connection attempt. The client sends a text
	// "ping" after a third of it without traffic, so a live gateway always has something to
	// answer. Default 35s, the gateway's default ping-interval + pong-timeout.
	SilenceTimeout time.Duration

	// ReadLimit is the largest frame accepted from the gateway; a larger one ends the
	// connection with 1009. Default 16 MiB.
	ReadLimit int64

	// Dialer opens the connections (TLS settings, proxy, buffer sizes). Its Subprotocols are
	// ignored. Default: websocket.DefaultDialer.
	Dialer *websocket.Dialer
	// Header is sent with every handshake, e.g. an Origin the gateway allows.
	Header http.Header

	// OnEvent, when set, is told about connections, retries, gaps and resets. It runs on one
	// of the client's goroutines, never two calls at once, in order with the messages: a Gap
	// event is seen before the message that follows the gap is sent on Messages. It must
	// return quickly and must not call Close (Close waits for the goroutine running it).
	OnEvent func(Event)

	// Logger receives the client's diagnostics (debug: connections; warn: malformed frames,
	// failed refreshes). Tokens are never logged. Default: discard.
	Logger *slog.Logger
}

// config is Options with the defaults applied and the URL parsed, fixed at New.
type config struct {
	Options
	url    *url.URL
	dialer websocket.Dialer
}

func newConfig(o Options) (*config, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("client: bad URL: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("client: bad URL %q: scheme must be ws, wss, http or https", o.URL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("client: bad URL %q: no host", o.URL)
	}
	if o.Since < 0 || o.AckDelay < 0 || o.AckEvery < 0 || o.ReconnectMin < 0 || o.ReconnectMax < 0 ||
		o.StableAfter < 0 || o.SilenceTimeout < 0 || o.ReadLimit < 0 {
		return nil, errors.New("client: Since and the durations and limits in Options must not be negative")
	}
	c := &config{Options: o, url: u}
	setDefault(&c.AckDelay, DefaultAckDelay)
	setDefault(&c.AckEvery, DefaultAckEvery)
	setDefault(&c.ReconnectMin, DefaultReconnectMin)
	setDefault(&c.ReconnectMax, DefaultReconnectMax)
	setDefault(&c.StableAfter, DefaultStableAfter)
	setDefault(&c.SilenceTimeout, DefaultSilenceTimeout)
	setDefault(&c.ReadLimit, DefaultReadLimit)
	if c.ReconnectMax < c.ReconnectMin {
		return nil, fmt.Errorf("client: ReconnectMax %v is below ReconnectMin %v", c.ReconnectMax, c.ReconnectMin)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	// A copy, so that setting Subprotocols never touches the caller's (or the shared default)
	// Dialer.
	if o.Dialer != nil {
		c.dialer = *o.Dialer
	} else {
		c.dialer = *websocket.DefaultDialer
	}
	c.dialer.Subprotocols = nil
	if !o.Raw {
		c.dialer.Subprotocols = []string{Subprotocol}
	}
	return c, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
