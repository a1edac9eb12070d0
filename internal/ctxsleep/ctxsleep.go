// Package ctxsleep waits for a duration or until a context ends, whichever comes first: the
// retry loops in the bus, presence and wsbench all back off this way.
package ctxsleep

import (
	"context"
	"time"
)

// Sleep returns after d or when ctx is done; callers check ctx themselves afterwards.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
