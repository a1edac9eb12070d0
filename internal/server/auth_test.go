package server_test

// End-to-end tests of who may connect: client tokens (HS256, RS256), Origin, the per-user cap.

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

func TestClientAuth(t *testing.T) {
	g := start(t, prodConfig())
	rsaKey := jwttest.NewRSA(t).Private
	ecKey := jwttest.NewEC(t)
	noExp := jwt.MapClaims{"sub": "alice"}
	expired := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()}
	cases := []struct {
		name  string
		path  string
		hdr   http.Header
		token string // checked never to appear in the error body
		ok    bool
	}{
		{name: "token in query", path: "/ws?token=" + hsToken(t, jwttest.Claims("alice")), ok: true},
		{name: "token in header", path: "/ws", hdr: http.Header{"Authorization": {"Bearer " + hsToken(t, jwttest.Claims("alice"))}}, ok: true},
		{name: "no token", path: "/ws"},
		{name: "empty token", path: "/ws?token="},
		{name: "garbage", path: "/ws?token=not.a.jwt", token: "not.a.jwt"},
		{name: "wrong secret", token: jwttest.Sign(t, jwt.SigningMethodHS256, []byte("another-secret"), jwttest.Claims("alice"))},
		{name: "expired", token: hsToken(t, expired)},
		{name: "no exp", token: hsToken(t, noExp)},
		{name: "alg none", token: jwttest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwttest.Claims("alice"))},
		{name: "RS256 on an HS256 server", token: jwttest.Sign(t, jwt.SigningMethodRS256, rsaKey, jwttest.Claims("alice"))},
		{name: "ES256 on an HS256 server", token: jwttest.Sign(t, jwt.SigningMethodES256, ecKey, jwttest.Claims("alice"))},
		{name: "HS512 with the right secret", token: jwttest.Sign(t, jwt.SigningMethodHS512, []byte(testSecret), jwttest.Claims("alice"))},
		{name: "no sub", token: hsToken(t, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()})},
		{name: "invalid sub", token: hsToken(t, jwttest.Claims("al ice"))},
		{name: "user_id without --dev", path: "/ws?user_id=alice"},
		{name: "user_id next to a bad token", path: "/ws?user_id=alice&token=bad", token: "bad"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = "/ws?token=" + tc.token
			}
			if tc.ok {
				c := g.connect(t, wsclient.Options{Path: path, Header: tc.hdr})
				if !g.presence(t, "alice") {
					t.Fatal("connected, but alice (the token's sub) is not online")
				}
				c.Close()
				wait.For(t, patience, func() bool { return !g.presence(t, "alice") }, "alice still online")
				return
			}
			c, resp, err := g.open(t, wsclient.Options{Path: path, Header: tc.hdr})
			if err == nil {
				c.Close()
				t.Fatal("connected, want 401")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%v (%s), want HTTP 401", err, wsclient.Describe(resp))
			}
			body, _ := io.ReadAll(resp.Body)
			if tc.token != "" && strings.Contains(string(body), tc.token) {
				t.Fatalf("the refusal quotes the token: %s", body)
			}
			wsclient.ErrorField(t, body)
		})
	}
	if n := g.Metric("wsgateway_connects_total"); n != 2 {
		t.Fatalf("connects_total = %v, want 2 (only the valid tokens)", n)
	}
}

// A server configured with an RSA public key accepts RS256 only: above all not an HS256
// token whose "secret" is that public key's PEM, the classic algorithm-confusion attack.
func TestClientAuthPublicKey(t *testing.T) {
	rk := jwttest.NewRSA(t)
	key, der, pubPEM := rk.Private, rk.DER, rk.PEM
	cfg, err := config.Parse([]string{"--addr=127.0.0.1:0", "--jwt-public-key=" + rk.Path, "--api-keys=" + testKey1}, nil, nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	g := start(t, cfg)
	other := jwttest.NewRSA(t).Private
	cases := []struct {
		name  string
		token string
		ok    bool
	}{
		{"RS256 with the key", jwttest.Sign(t, jwt.SigningMethodRS256, key, jwttest.Claims("alice")), true},
		{"HS256 signed with the public key PEM", jwttest.Sign(t, jwt.SigningMethodHS256, pubPEM, jwttest.Claims("alice")), false},
		{"HS256 signed with the public key DER", jwttest.Sign(t, jwt.SigningMethodHS256, der, jwttest.Claims("alice")), false},
		{"RS256 with another key", jwttest.Sign(t, jwt.SigningMethodRS256, other, jwttest.Claims("alice")), false},
		{"PS256 with the key", jwttest.Sign(t, jwt.SigningMethodPS256, key, jwttest.Claims("alice")), false},
		{"RS512 with the key", jwttest.Sign(t, jwt.SigningMethodRS512, key, jwttest.Claims("alice")), false},
		{"alg none", jwttest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwttest.Claims("alice")), false},
		{"RS256 expired", jwttest.Sign(t, jwt.SigningMethodRS256, key, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}), false},
		{"RS256 without exp", jwttest.Sign(t, jwt.SigningMethodRS256, key, jwt.MapClaims{"sub": "alice"}), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				g.expectRefused(t, "/ws?token="+tc.token, nil, http.StatusUnauthorized)
				return
			}
			c := g.connect(t, wsclient.Options{Token: tc.token})
			g.push(t, "alice", `"hi"`)
			c.Expect(t, `"hi"`)
		})
	}
}

func TestOrigin(t *testing.T) {
	cases := []struct {
		name    string
		allowed []string
		origin  string // "self" is the server's own http://host:port
		status  int    // 0: connects
	}{
		{"same host, default policy", nil, "self", 0},
		{"no Origin (not a browser), default policy", nil, "", 0},
		{"foreign origin, default policy", nil, "http://evil.example", http.StatusForbidden},
		{"same host name on another port", nil, "http://127.0.0.1:1", http.StatusForbidden},
		{"opaque origin null", nil, "null", http.StatusForbidden},
		{"listed origin", []string{"https://app.example.com", "https://admin.example.com"}, "https://admin.example.com", 0},
		{"listed origin, case differs", []string{"https://app.example.com"}, "https://APP.example.com", 0},
		{"unlisted origin", []string{"https://app.example.com"}, "https://evil.example", http.StatusForbidden},
		{"listed host, other scheme", []string{"https://app.example.com"}, "http://app.example.com", http.StatusForbidden},
		{"listed suffix is not a match", []string{"https://app.example.com"}, "https://app.example.com.evil.example", http.StatusForbidden},
		{"own host is not implied by a list", []string{"https://app.example.com"}, "self", http.StatusForbidden},
		{"wildcard", []string{"*"}, "http://anything.example", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := devConfig()
			cfg.AllowedOrigins = tc.allowed
			g := start(t, cfg)
			hdr := http.Header{}
			switch tc.origin {
			case "":
			case "self":
				hdr.Set("Origin", g.URL(""))
			default:
				hdr.Set("Origin", tc.origin)
			}
			if tc.status != 0 {
				g.expectRefused(t, "/ws?user_id=alice", hdr, tc.status)
				if n := g.Metric("wsgateway_refused_total", "status", itoa(tc.status)); n != 1 {
					t.Fatalf("refused_total{status=%d} = %v, want 1", tc.status, n)
				}
				return
			}
			g.connect(t, wsclient.Options{User: "alice", Header: hdr})
		})
	}
}

// max-conns-per-user: the next connect of that user gets 429, other users are not affected,
// and a freed slot can be taken again.
func TestMaxConnsPerUser(t *testing.T) {
	cfg := devConfig()
	cfg.MaxConnsPerUser = 2
	g := start(t, cfg)
	a1 := g.dial(t, "alice")
	g.dial(t, "alice")
	g.expectRefused(t, "/ws?user_id=alice", nil, http.StatusTooManyRequests)
	g.dial(t, "bob")
	a1.Close()
	wait.For(t, patience, func() bool { return g.Srv.ForTest().Hub().Conns() == 2 }, "closed connection not released")
	c := g.dial(t, "alice")
	g.push(t, "alice", `"still works"`)
	c.Expect(t, `"still works"`)
}
