package faults

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(gwbin.After(m, func() {
		transport.CloseIdleConnections() // its keep-alive readers are goroutines too
	}),
		// After dials to a dead Redis failed, go-redis retries in the background once a
		// second (pool.tryDial); that goroutine ends by itself after its sleep, even after Close.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
