package inbox

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/scripts"
)

// pushRetryFor bounds how long a push is retried after a connection error (a lost reply, a
// restart, a failover). Its id makes a retry safe: a push that did run is answered from the
// id's record and not stored again.
const pushRetryFor = 10 * time.Second

// retry runs call until it succeeds, fails with an error reply, ctx ends, or pushRetryFor
// passed. It retries only after an attempt that may have reached Redis (the reply was lost):
// every call retried here is safe to run twice (a push carries its id, reads and acks are
// idempotent), and a push whose first attempt may have run must find out whether it did
// rather than answer "not accepted". While Redis refuses connections from the start, nothing
// ran: the error comes back at once (the API answers 503).
func retry(ctx context.Context, call func() error) error {
	giveUp := time.Now().Add(pushRetryFor)
	maybeRan := false
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		err := call()
		if err == nil || ctx.Err() != nil || !retryable(err) || time.Now().After(giveUp) {
			return err
		}
		if !notSent(err) {
			maybeRan = true
		}
		if !maybeRan {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// notSent reports whether err says the command never left this process: no connection could
// be made (Redis down, refusing, unreachable).
func notSent(err error) bool {
	var op *net.OpError
	return (errors.As(err, &op) && op.Op == "dial") || errors.Is(err, redis.ErrPoolTimeout)
}

// retryable reports whether err is a connection problem (the command may not have run, or its
// reply was lost), as opposed to an error reply from Redis.
func retryable(err error) bool {
	if errors.Is(err, scripts.ErrClosed) || errors.Is(err, ErrNotReplicated) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var rerr redis.Error
	return !errors.As(err, &rerr) || redis.HasErrorPrefix(err, "LOADING") || redis.HasErrorPrefix(err, "TRYAGAIN") ||
		redis.HasErrorPrefix(err, "READONLY") || redis.HasErrorPrefix(err, "MASTERDOWN")
}
