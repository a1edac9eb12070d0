// Package gwtest starts in-process gateway nodes for the test packages that drive a real
// server over its sockets (attack, e2e, e2ecluster, faults): config, log buffer, listen,
// readiness and shutdown in one place.
package gwtest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
	"github.com/wsgateway/wsgateway/internal/testutil/logbuf"
	"github.com/wsgateway/wsgateway/internal/testutil/metricstest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// Options says how [Start] configures, waits for and stops a node.
type Options struct {
	// Config changes the node's settings after Start's own (config.Default with --dev, so
	// ?user_id= is accepted and the API open; 127.0.0.1:0; the node id; ShutdownWait as
	// shutdown-grace). Nil changes nothing.
	Config func(*config.Config)
	// Server are the node's test hooks. Start sets Logger; a zero ProbeInterval becomes a
	// probe every 200ms that may take 3s, a zero CloseGrace 300ms.
	Server server.Options
	// Ready is how long /readyz has to answer 200; zero does not wait.
	Ready time.Duration
	// ShutdownWait bounds the node's Shutdown, in the clean-up or [Node.Shutdown].
	ShutdownWait time.Duration
	// LogTail is how many lines of the node's log the clean-up shows when the test failed;
	// zero shows none (the caller shows what it wants).
	LogTail int
}

// Node is one in-process gateway.
type Node struct {
	ID   string
	Cfg  config.Config // as validated
	Srv  *server.Server
	Addr string // 127.0.0.1:port
	Logs *logbuf.Buffer

	shutdownWait time.Duration
	stopOnce     sync.Once
	stopErr      error
}

// Start boots the node id and, when o.Ready is set, waits until its /readyz answers 200 (it
// is subscribed to Redis, if it has one). The clean-up shuts it down, unless the test did,
// fails the test when that fails, and shows the tail of its log when the test failed.
func Start(tb testing.TB, id string, o Options) *Node {
	tb.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.Dev = true
	cfg.NodeID = id
	cfg.ShutdownGrace = o.ShutdownWait
	if o.Config != nil {
		o.Config(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatalf("node %s: config: %v", id, err)
	}
	logs := &logbuf.Buffer{}
	opt := o.Server
	opt.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opt.ProbeInterval == 0 {
		// A probe every 200ms keeps /readyz honest within a second; the timeout is wide
		// enough that a -race run on a busy machine does not rebuild healthy connections.
		opt.ProbeInterval, opt.ProbeTimeout = 200*time.Millisecond, 3*time.Second
	}
	if opt.CloseGrace == 0 {
		opt.CloseGrace = 300 * time.Millisecond
	}
	srv, err := server.New(cfg, opt)
	if err != nil {
		tb.Fatalf("node %s: %v", id, err)
	}
	if err := srv.Listen(); err != nil {
		tb.Fatalf("node %s: %v", id, err)
	}
	n := &Node{ID: id, Cfg: cfg, Srv: srv, Addr: srv.Addr(), Logs: logs, shutdownWait: o.ShutdownWait}
	tb.Cleanup(func() {
		if err := n.Shutdown(); err != nil {
			tb.Errorf("node %s: shutdown: %v", id, err)
		}
		if tb.Failed() && o.LogTail > 0 {
			tb.Logf("node %s log (tail):\n%s", id, logs.Tail(o.LogTail))
		}
	})
	if o.Ready > 0 {
		n.WaitReady(tb, o.Ready)
	}
	return n
}

// WaitReady waits up to d until the node's /readyz answers 200, or fails tb.
func (n *Node) WaitReady(tb testing.TB, d time.Duration) {
	tb.Helper()
	wait.For(tb, d, func() bool { return gwbin.Ready(n.Addr) }, "node %s: /readyz never answered 200", n.ID)
}

// Shutdown drains the node like SIGTERM would; it runs at most once (Server.Shutdown must
// not be called twice), later calls return the first one's error.
func (n *Node) Shutdown() error {
	n.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), n.shutdownWait)
		defer cancel()
		n.stopErr = n.Srv.Shutdown(ctx)
	})
	return n.stopErr
}

// URL is http://Addr followed by path.
func (n *Node) URL(path string) string { return "http://" + n.Addr + path }

// Metric sums the counter and gauge samples of name whose labels include labels (pairs of
// label name and value); -1 when the registry fails to gather.
func (n *Node) Metric(name string, labels ...string) float64 {
	return metricstest.Sum(n.Srv.ForTest().Metrics().Registry(), name, labels...)
}
