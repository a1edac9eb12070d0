package main

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/testutil/freeport"
	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// A raw client that stops reading is closed when a write times out. What the node had written
// into the socket by then but the client's TCP stack had not acknowledged is not counted as
// received: it stays in the inbox, so nothing is lost when the kernel drops it with the socket.
func TestRawWriteTimeoutLosesNothing(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	prefix := redistest.Prefix(t)
	addr := freeport.Addr(t)
	cmd := exec.Command(gwbin.Path(t), "--dev", "--addr", addr, "--redis-url", rs.URL(), "--key-prefix", prefix,
		"--write-timeout", "1s", "--send-queue", "5000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := "http://" + addr
	wait.For(t, 20*time.Second, func() bool { return status(base+"/readyz") == 200 }, "gateway never ready")

	stuck := dialStuck(t, addr)
	const n = 300
	for i := range n {
		if code, _, err := gwtest.Push(http.DefaultClient, base, "stuck", "", padded(i)); err != nil || code != 200 {
			t.Fatalf("push %d: %d %v", i, code, err)
		}
	}
	wait.For(t, 20*time.Second, func() bool {
		return metricLine(base, `wsgateway_disconnects_total{reason="error"} `) != "" &&
			metricLine(base, `wsgateway_disconnects_total{reason="error"} `) != "0"
	}, "the stuck client was never closed for a timed-out write")
	checkReadAndStored(t, stuck, rdb, prefix, n)
}

// metricLine returns the value of the /metrics line that starts with prefix, "" without one.
func metricLine(base, prefix string) string {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return v
		}
	}
	return ""
}
