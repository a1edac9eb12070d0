package gwtest

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A node without Redis starts, is ready, counts nothing yet, and shuts down once.
func TestStart(t *testing.T) {
	n := Start(t, "gwtest", Options{
		Config:       func(c *config.Config) { c.MaxConnsPerUser = 3 },
		Ready:        20 * time.Second,
		ShutdownWait: 10 * time.Second,
		LogTail:      20,
	})
	if !gwbin.Ready(n.Addr) {
		t.Fatal("not ready after Start")
	}
	if got := n.Metric("wsgateway_connections"); got != 0 {
		t.Fatalf("wsgateway_connections = %v; want 0", got)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v; want the first one's nil", err)
	}
	if gwbin.Ready(n.Addr) {
		t.Fatal("still answering after Shutdown")
	}
}
