package e2e

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
)

func TestMain(m *testing.M) {
	// goleak checks after every test ran and every node was shut down in its cleanup: a
	// leaked hub, bus or connection goroutine fails the package.
	goleak.VerifyTestMain(gwbin.After(m))
}
