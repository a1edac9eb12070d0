package server_test

import (
	"net/http"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// With --jwt-audience and --jwt-issuer set, a token opens /ws only when it names this
// gateway as (one of) its audience(s) and comes from the configured issuer: a token that
// the same identity provider signed for another app, or one without these claims, gets
// 401 before the upgrade.
func TestClientAuthAudienceIssuer(t *testing.T) {
	const aud, iss = "wsgateway", "https://id.example"
	cfg := prodConfig()
	cfg.JWTAudience, cfg.JWTIssuer = aud, iss
	g := start(t, cfg)
	with := func(kv ...any) jwt.MapClaims {
		c := jwttest.Claims("alice")
		for i := 0; i < len(kv); i += 2 {
			c[kv[i].(string)] = kv[i+1]
		}
		return c
	}
	cases := []struct {
		name   string
		claims jwt.MapClaims
		ok     bool
	}{
		{"right aud and iss", with("aud", aud, "iss", iss), true},
		{"aud list holding ours", with("aud", []string{"other-app", aud}, "iss", iss), true},
		{"wrong aud", with("aud", "other-app", "iss", iss), false},
		{"aud list without ours", with("aud", []string{"other-app", "third-app"}, "iss", iss), false},
		{"empty aud", with("aud", "", "iss", iss), false},
		{"no aud", with("iss", iss), false},
		{"wrong iss", with("aud", aud, "iss", "https://evil.example"), false},
		{"iss differing in case", with("aud", aud, "iss", "https://ID.example"), false},
		{"no iss", with("aud", aud), false},
		{"neither", jwttest.Claims("alice"), false},
	}
	accepted := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := "/ws?token=" + hsToken(t, tc.claims)
			if !tc.ok {
				g.expectRefused(t, path, nil, http.StatusUnauthorized)
				return
			}
			accepted++
			c := g.connect(t, wsclient.Options{Path: path})
			c.Close()
			wait.For(t, patience, func() bool { return !g.presence(t, "alice") }, "alice still online")
		})
	}
	if n := g.Metric("wsgateway_connects_total"); n != float64(accepted) {
		t.Fatalf("connects_total = %v, want %d (only the tokens with the right aud and iss)", n, accepted)
	}

	// Without the settings, aud and iss are not looked at (as before them).
	open := start(t, prodConfig())
	c := open.connect(t, wsclient.Options{Token: hsToken(t, with("aud", "other-app", "iss", "https://evil.example"))})
	c.Close()
}
