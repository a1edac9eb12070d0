package server_test

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// expiringToken is a token for user that expires at exp (JWT exp has whole seconds).
func expiringToken(t *testing.T, user string, exp time.Time) string {
	return hsToken(t, jwt.MapClaims{"sub": user, "exp": exp.Unix()})
}

// nextWholeSecond is a moment at least min from now, on a whole second, so that a token's exp
// (whole seconds) is exactly it.
func nextWholeSecond(min time.Duration) time.Time {
	return time.Now().Add(min + time.Second).Truncate(time.Second)
}

// With enforce-token-expiry (the default) a connection is closed with 4002 when its token's exp
// passes: at exp, within a second.
func TestTokenExpiryCloses(t *testing.T) {
	g := start(t, prodConfig())
	for _, v1 := range []bool{false, true} {
		exp := nextWholeSecond(time.Second)
		c := g.connect(t, wsclient.Options{Token: expiringToken(t, "eve", exp), V1: v1})
		_, code := c.ReadUntilClose(t)
		closed := time.Now()
		if code != 4002 {
			t.Fatalf("closed with %d, want 4002 (token expired)", code)
		}
		if d := closed.Sub(exp); d < -time.Second || d > time.Second {
			t.Fatalf("closed %v from exp, want within ±1s", d)
		}
	}
	wait.For(t, patience, func() bool { return g.Metric("wsgateway_disconnects_total", "reason", "token_expired") == 2 },
		"disconnects_total{reason=token_expired} never reached 2")
}

// A wsgateway.v1 client sends "auth <jwt>" before exp: the connection lives on to the new exp.
// A token for another user, or an invalid one, closes it with 1008.
func TestTokenRefreshInBand(t *testing.T) {
	g := start(t, prodConfig())
	exp := nextWholeSecond(time.Second)
	c := g.connect(t, wsclient.Options{Token: expiringToken(t, "fay", exp), V1: true})
	defer c.Close()
	c.Send(t, "auth "+expiringToken(t, "fay", exp.Add(time.Hour)))
	// Past the first exp, the connection still receives.
	for time.Now().Before(exp.Add(1500 * time.Millisecond)) {
		c.Send(t, "ping")
		c.Expect(t, "pong")
		time.Sleep(250 * time.Millisecond) // pacing the pings, not waiting for a condition
	}
	g.push(t, "fay", `"still here"`)
	c.Expect(t, `1 "still here"`)

	for name, token := range map[string]string{
		"another user": expiringToken(t, "mallory", exp.Add(time.Hour)),
		"invalid":      "not.a.jwt",
		"expired":      expiringToken(t, "fay", time.Now().Add(-time.Minute)),
	} {
		c := g.connect(t, wsclient.Options{Token: expiringToken(t, "fay", exp.Add(time.Hour)), V1: true})
		c.Send(t, "auth "+token)
		msgs, code := c.ReadUntilClose(t)
		if code != websocket.ClosePolicyViolation {
			t.Fatalf("%s: closed with %d after %q, want 1008", name, code, msgs)
		}
	}
}

// Without enforce-token-expiry, and for --dev sessions without a token, nothing expires.
func TestTokenExpiryOff(t *testing.T) {
	cfg := prodConfig()
	cfg.EnforceTokenExpiry = false
	g := start(t, cfg)
	exp := nextWholeSecond(0)
	c := g.connect(t, wsclient.Options{Token: expiringToken(t, "gus", exp)})
	defer c.Close()
	for time.Now().Before(exp.Add(1500 * time.Millisecond)) {
		c.Send(t, "ping")
		c.Expect(t, "pong")
		time.Sleep(250 * time.Millisecond) // pacing the pings, not waiting for a condition
	}
	g.push(t, "gus", `"alive"`)
	c.Expect(t, `"alive"`)
}
