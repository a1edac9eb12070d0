package web_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests. chromedp passes: once a test's
// clean-up has closed the browser (chromedp.Cancel, then the allocator's cancel, which waits
// for the process), none of its goroutines are left; nor are the gateways' or the fake
// WebSocket server's. Leftover chromium processes are checked separately (processesUsing).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
