package ws

import (
	"context"
	"testing"
)

// newTestHub is NewHub for the in-package tests, which drive a hub without sockets. Its
// clean-up stops what NewHub and the test started (catch-up fills, the periodic ack flush,
// the ping timers), so the package's goleak check finds nothing left.
func newTestHub(t *testing.T, cfg Config, d Deps) *Hub {
	t.Helper()
	h := NewHub(cfg, d)
	t.Cleanup(func() {
		for _, p := range h.pingers {
			if p != nil {
				p.Stop()
			}
		}
		h.fills.wait()
		h.acks.stop(context.Background())
	})
	return h
}
