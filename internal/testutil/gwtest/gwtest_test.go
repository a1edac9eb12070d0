package gwtest

import (
	"net/http"
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

// Push reads a node's answer: stored for an offline user (numbered, queued), the same id again
// a duplicate with the same number, and a refusal as its status without a result.
func TestPush(t *testing.T) {
	n := Start(t, "gwtest", Options{Ready: 20 * time.Second, ShutdownWait: 10 * time.Second, LogTail: 20})
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	status, first, err := Push(c, n.URL(""), "tess", "p1", `{"a":1}`)
	if err != nil || status != http.StatusOK || first.UserID != "tess" || first.Seq == 0 || !first.Queued || first.Duplicate {
		t.Fatalf("first push: %d %+v %v; want 200, queued with a number", status, first, err)
	}
	status, again, err := Push(c, n.URL(""), "tess", "p1", `{"a":1}`)
	if err != nil || status != http.StatusOK || !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("same id again: %d %+v %v; want 200, duplicate of seq %d", status, again, err, first.Seq)
	}
	if status, res, err := Push(c, n.URL(""), "x", "", `not json`); status != http.StatusBadRequest || res != (PushResult{}) || err != nil {
		t.Fatalf("bad data: %d %+v %v; want 400 and no result", status, res, err)
	}
}
