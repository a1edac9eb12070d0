package ws

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Subscriber is what the hub needs from the fan-out layer (internal/bus). Both calls return
// once the subscription change is confirmed: after Subscribe returns, every message published
// to the user reaches Hub.Deliver; after Unsubscribe returns, none does any more.
type Subscriber interface {
	Subscribe(ctx context.Context, user string) error
	Unsubscribe(ctx context.Context, user string) error
}

// Inbox is what the hub needs from the user's message store (internal/inbox).
type Inbox interface {
	// Read returns the user's numbers and the kept messages after position after (-1: after
	// the acknowledged position).
	Read(ctx context.Context, user string, after int64) (Backlog, error)
	// Ack moves the user's acknowledged position forward to seq.
	Ack(ctx context.Context, user string, seq int64) error
}

// Backlog is what Inbox.Read found.
type Backlog struct {
	Latest int64 // the user's latest number; 0 when the user has no state
	First  int64 // the oldest kept number (Latest+1 when none is kept)
	Acked  int64 // the acknowledged position
	Start  int64 // the number of Msgs[0]
	Msgs   [][]byte
}

// Presence counts connections across the deployment (internal/presence). Without it (nil, the
// in-memory mode) max-conns-per-user is per node.
type Presence interface {
	// Connect counts connection conn of user; false: the user is at max-conns-per-user.
	Connect(ctx context.Context, user string, conn uint64) (bool, error)
	// Disconnect uncounts it.
	Disconnect(ctx context.Context, user string, conn uint64) error
}

// Upstream receives what clients send (the README's ws:upstream). Nil drops it after the checks.
// Append runs on the connection's read path: it must not block (upstream.Queue only queues).
type Upstream interface {
	Append(ctx context.Context, user string, data []byte) error
}

// Observer is told what happens, for metrics. Every method must be cheap and non-blocking.
type Observer interface {
	ConnOpened()
	ConnClosed(reason string, d time.Duration)
	Refused(status int)
	Delivered(received time.Time)
	Dropped(reason string, n int)
	SlowConsumer()
	QueueDepth(n int)
	FlushedOffline(n int)
	Inbound(bytes int)
}

// Config holds the hub's settings; see the README's settings table for their meaning.
type Config struct {
	PingInterval    time.Duration
	PongTimeout     time.Duration
	WriteTimeout    time.Duration
	MaxMessageBytes int64
	SendQueue       int
	MaxConnsPerUser int
	OfflineMax      int
	AllowedOrigins  []string // "*" allows any; empty allows the request's own host only
	// MaxInboundRate is the inbound messages per second per connection (bursts of twice
	// that); over it the connection is closed with 1008. 0 = no limit.
	MaxInboundRate float64
	MaxConns       int // connections per node, 0 = no cap; beyond → 503
	// EnforceTokenExpiry closes a connection with 4002 when its token's exp passes, unless
	// a wsgateway.v1 client refreshed it in-band ("auth <jwt>").
	EnforceTokenExpiry bool
	MaxConnsPerIP      int // connections per remote address, 0 = no cap; beyond → 429
	// CloseGrace is how long the writer waits for the client's answer to a close frame
	// before it closes the socket. Default 1s.
	CloseGrace time.Duration
	// SubscribeTimeout bounds the subscription of a user's first connection. Default 5s.
	SubscribeTimeout time.Duration
}

// Errors of Register, each mapped to its HTTP status by the handler.
var (
	ErrTooManyConns = errors.New("ws: too many connections for this user") // 429
	ErrDraining     = errors.New("ws: node is draining")                   // 503
	ErrUnavailable  = errors.New("ws: fan-out unavailable")                // 503
)

// Deps are the hub's collaborators. Bus and Inbox are required.
type Deps struct {
	Bus      Subscriber
	Inbox    Inbox
	Presence Presence
	Upstream Upstream
	Observer Observer
	Logger   *slog.Logger
	Now      func() time.Time
}

type nopObserver struct{}

func (nopObserver) ConnOpened() {}

func (nopObserver) ConnClosed(string, time.Duration) {}

func (nopObserver) Refused(int) {}

func (nopObserver) Delivered(time.Time) {}

func (nopObserver) Dropped(string, int) {}

func (nopObserver) SlowConsumer() {}

func (nopObserver) QueueDepth(int) {}

func (nopObserver) FlushedOffline(int) {}

func (nopObserver) Inbound(int) {}
