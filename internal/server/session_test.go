package server_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
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

var v1Protocol = http.Header{"Sec-WebSocket-Protocol": {"wsgateway.v1"}}

// With enforce-token-expiry (the default) a connection is closed with 4002 when its token's exp
// passes: at exp, within a second.
func TestTokenExpiryCloses(t *testing.T) {
	g := start(t, prodConfig())
	for _, proto := range []http.Header{nil, v1Protocol} {
		exp := nextWholeSecond(time.Second)
		c, resp, err := g.dialRaw(t, &dialer, "/ws?token="+expiringToken(t, "eve", exp), proto)
		if err != nil {
			t.Fatalf("dial: %v (%s)", err, describe(resp))
		}
		_, code := readUntilClose(t, c)
		closed := time.Now()
		if code != 4002 {
			t.Fatalf("closed with %d, want 4002 (token expired)", code)
		}
		if d := closed.Sub(exp); d < -time.Second || d > time.Second {
			t.Fatalf("closed %v from exp, want within ±1s", d)
		}
	}
	wait.For(t, patience, func() bool { return g.metric(t, "wsgateway_disconnects_total", "reason", "token_expired") == 2 },
		"disconnects_total{reason=token_expired} never reached 2")
}

// A wsgateway.v1 client sends "auth <jwt>" before exp: the connection lives on to the new exp.
// A token for another user, or an invalid one, closes it with 1008.
func TestTokenRefreshInBand(t *testing.T) {
	g := start(t, prodConfig())
	exp := nextWholeSecond(time.Second)
	c, resp, err := g.dialRaw(t, &dialer, "/ws?token="+expiringToken(t, "fay", exp), v1Protocol)
	if err != nil {
		t.Fatalf("dial: %v (%s)", err, describe(resp))
	}
	defer c.Close()
	if err := c.WriteMessage(websocket.TextMessage, []byte("auth "+expiringToken(t, "fay", exp.Add(time.Hour)))); err != nil {
		t.Fatal(err)
	}
	// Past the first exp, the connection still receives.
	for time.Now().Before(exp.Add(1500 * time.Millisecond)) {
		if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		expectNext(t, c, "pong")
		time.Sleep(250 * time.Millisecond) // pacing the pings, not waiting for a condition
	}
	g.push(t, "fay", `"still here"`)
	expectNext(t, c, `1 "still here"`)

	for name, token := range map[string]string{
		"another user": expiringToken(t, "mallory", exp.Add(time.Hour)),
		"invalid":      "not.a.jwt",
		"expired":      expiringToken(t, "fay", time.Now().Add(-time.Minute)),
	} {
		c, resp, err := g.dialRaw(t, &dialer, "/ws?token="+expiringToken(t, "fay", exp.Add(time.Hour)), v1Protocol)
		if err != nil {
			t.Fatalf("%s: dial: %v (%s)", name, err, describe(resp))
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte("auth "+token)); err != nil {
			t.Fatal(err)
		}
		msgs, code := readUntilClose(t, c)
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
	c, resp, err := g.dialRaw(t, &dialer, "/ws?token="+expiringToken(t, "gus", exp), nil)
	if err != nil {
		t.Fatalf("dial: %v (%s)", err, describe(resp))
	}
	defer c.Close()
	for time.Now().Before(exp.Add(1500 * time.Millisecond)) {
		if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		expectNext(t, c, "pong")
		time.Sleep(250 * time.Millisecond) // pacing the pings, not waiting for a condition
	}
	g.push(t, "gus", `"alive"`)
	expectNext(t, c, `"alive"`)
}
