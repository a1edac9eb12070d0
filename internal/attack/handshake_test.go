package attack

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// TestCrossSiteHijacking: a page on another site opens a WebSocket with the victim's
// credentials (a token it got hold of, or cookies a proxy turns into one). The browser sends
// that page's Origin, and the gateway refuses it with 403 before the upgrade, valid token or
// not. allowed-origins, when set, is the whole list: exact scheme and host.
func TestCrossSiteHijacking(t *testing.T) {
	t.Parallel()
	origin := func(o string) http.Header { return http.Header{"Origin": {o}} }
	for _, tc := range []struct {
		name    string
		allowed []string
		ok      []string // origins that connect
		refused []string // origins refused with 403
	}{
		{
			name: "default: same host only",
			ok:   []string{"", "http://{host}", "https://{host}"},
			refused: []string{"https://evil.example", "http://{host}.evil.example", "http://evil.example/{host}",
				"null", "http://127.0.0.1", "file://", "http://localhost:1"},
		},
		{
			name:    "allowed-origins list",
			allowed: []string{"https://app.example.com", "http://localhost:3000"},
			ok:      []string{"", "https://app.example.com", "http://localhost:3000"},
			refused: []string{"https://evil.example", "http://app.example.com", "https://app.example.com.evil.net",
				"https://evil.app.example.com", "http://localhost:3001", "null", "http://{host}"},
		},
		{
			name:    "*",
			allowed: []string{"*"},
			ok:      []string{"", "https://anything.example", "null"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := start(t, func(c *config.Config) { c.AllowedOrigins = tc.allowed }, server.Options{})
			c := g.startCanary(t)
			expand := func(o string) string { return strings.ReplaceAll(o, "{host}", g.addr) }
			tok := "token=" + g.sign("victim")
			for _, o := range tc.refused {
				if msg := g.expectRefused(t, http.StatusForbidden, attackerIP, tok, origin(expand(o))); !strings.Contains(msg, "origin") {
					t.Errorf("origin %q: error %q does not name the origin", o, msg)
				}
			}
			g.waitMetric(t, float64(len(tc.refused)), "wsgateway_refused_total", "status", "403")
			for _, o := range tc.ok {
				var hdr http.Header
				if o != "" {
					hdr = origin(expand(o))
				}
				conn := g.connect(t, attackerIP, tok, hdr)
				conn.Close()
			}
			g.stillServes(t, c)
		})
	}
}

// TestForgedTokens: against a gateway configured with an RSA public key (RS256 only), tokens
// with alg "none", HS256 tokens whose HMAC secret is the public key (the classic algorithm
// confusion), and other forgeries all get 401 before the upgrade. A genuine RS256 token is
// the control. No forged token ever appears in the logs or the answer.
func TestForgedTokens(t *testing.T) {
	t.Parallel()
	key := jwttest.NewRSA(t)
	other := jwttest.NewRSA(t)
	g := start(t, func(c *config.Config) {
		c.JWTSecret = ""
		c.JWTPublicKeyFile = key.Path
		c.JWTPublicKeyPEM = key.PEM
	}, server.Options{})
	g.sign = func(sub string) string {
		return jwttest.Sign(t, jwt.SigningMethodRS256, key.Private, jwttest.Claims(sub))
	}
	c := g.startCanary(t)

	b64 := base64.RawURLEncoding.EncodeToString
	claims := `{"sub":"victim","exp":` + fmt.Sprint(time.Now().Add(time.Hour).Unix()) + `}`
	none := func(alg, sig string) string {
		return b64([]byte(`{"alg":"`+alg+`","typ":"JWT"}`)) + "." + b64([]byte(claims)) + "." + sig
	}
	valid := jwttest.Claims("victim")
	forged := map[string]string{
		"alg none":                     none("none", ""),
		"alg None":                     none("None", ""),
		"alg NONE with a signature":    none("NONE", b64([]byte("sig"))),
		"alg empty":                    none("", ""),
		"HS256 keyed with the PEM":     jwttest.Sign(t, jwt.SigningMethodHS256, key.PEM, valid),
		"HS256 keyed with the DER":     jwttest.Sign(t, jwt.SigningMethodHS256, key.DER, valid),
		"HS256 keyed with trimmed PEM": jwttest.Sign(t, jwt.SigningMethodHS256, []byte(strings.TrimSpace(string(key.PEM))), valid),
		"HS384 keyed with the PEM":     jwttest.Sign(t, jwt.SigningMethodHS384, key.PEM, valid),
		"RS256 by another key":         jwttest.Sign(t, jwt.SigningMethodRS256, other.Private, valid),
		"PS256 by the right key":       jwttest.Sign(t, jwt.SigningMethodPS256, key.Private, valid),
		"RS256 without exp":            jwttest.Sign(t, jwt.SigningMethodRS256, key.Private, jwt.MapClaims{"sub": "victim"}),
		"RS256 expired":                jwttest.Sign(t, jwt.SigningMethodRS256, key.Private, jwt.MapClaims{"sub": "victim", "exp": time.Now().Add(-time.Hour).Unix()}),
		"RS256 with a bad sub":         jwttest.Sign(t, jwt.SigningMethodRS256, key.Private, jwttest.Claims("victim{x}")),
		"RS256 with the sig stripped":  strings.Join(strings.Split(g.sign("victim"), ".")[:2], ".") + ".",
	}
	n := 0
	for name, tok := range forged {
		for _, via := range []string{"query", "header"} {
			query, hdr := "token="+tok, http.Header(nil)
			if via == "header" {
				query, hdr = "", http.Header{"Authorization": {"Bearer " + tok}}
			}
			msg := g.expectRefused(t, http.StatusUnauthorized, attackerIP, query, hdr)
			n++
			if strings.Contains(msg, tok) || (len(tok) > 20 && strings.Contains(msg, tok[:20])) {
				t.Errorf("%s via %s: the 401 answer quotes the token: %q", name, via, msg)
			}
		}
	}
	g.waitMetric(t, float64(n), "wsgateway_refused_total", "status", "401")

	// The control: a genuine RS256 token connects, so the refusals above are about the forgery.
	conn := g.connect(t, attackerIP, "token="+g.sign("victim"), nil)
	conn.Close()
	g.stillServes(t, c)
	logs := g.logs.String()
	for name, tok := range forged {
		if parts := strings.Split(tok, "."); len(parts) > 1 && strings.Contains(logs, parts[0]+"."+parts[1]) {
			t.Errorf("the log contains the token of %q", name)
		}
	}
}

// TestOtherUsersIDWithoutDev: outside --dev, ?user_id= is no credential. Alone it gets 401;
// next to a valid token it is ignored, so mallory connected "as victim" still receives only
// mallory's messages, and victim's wait offline.
func TestOtherUsersIDWithoutDev(t *testing.T) {
	t.Parallel()
	g := start(t, nil, server.Options{})
	c := g.startCanary(t)

	g.expectRefused(t, http.StatusUnauthorized, attackerIP, "user_id=victim", nil)
	g.expectRefused(t, http.StatusUnauthorized, attackerIP, "user_id=canary", nil)
	g.expectRefused(t, http.StatusUnauthorized, attackerIP, "user_id=victim&token=", nil)
	g.expectRefused(t, http.StatusUnauthorized, attackerIP, "user_id=victim",
		http.Header{"Authorization": {"Basic dmljdGltOg=="}})

	mallory := g.sign("mallory")
	for _, tc := range []struct {
		query string
		hdr   http.Header
	}{
		{"token=" + mallory + "&user_id=victim", nil},
		{"user_id=victim&token=" + mallory, nil},
		{"user_id=victim", http.Header{"Authorization": {"Bearer " + mallory}}},
	} {
		conn := g.connect(t, attackerIP, tc.query, tc.hdr)
		if code, body := g.push(t, "victim", `"for victim"`); code != http.StatusOK || !strings.Contains(body, `"online":false`) {
			t.Fatalf("push to victim: HTTP %d %s; want 200 with victim offline", code, body)
		}
		if code, _ := g.push(t, "mallory", `"for mallory"`); code != http.StatusOK {
			t.Fatalf("push to mallory: HTTP %d", code)
		}
		if got := conn.NextText(t); got != `"for mallory"` {
			t.Fatalf("mallory received %q", got)
		}
		conn.Close()
		wait.For(t, patience, func() bool { return g.srv.ForTest().Hub().Conns() == 1 }, "mallory gone")
	}
	// The dev-only echo endpoint does not exist outside --dev.
	resp, err := g.http.Get("http://" + g.addr + "/ws/echo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/ws/echo without --dev: HTTP %d; want 404", resp.StatusCode)
	}
	g.stillServes(t, c)
}

// TestOversizedHeader: request headers beyond MaxHeaderBytes get 431 from net/http, on /ws
// and on the API. (net/http allows 4 KiB of slack above the configured 16 KiB.)
func TestOversizedHeader(t *testing.T) {
	t.Parallel()
	g := start(t, nil, server.Options{})
	c := g.startCanary(t)
	pad := strings.Repeat("a", 24<<10)
	for _, req := range []string{
		"GET /ws?token=" + g.sign("big") + " HTTP/1.1\r\nHost: " + g.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Pad: " + pad + "\r\n\r\n",
		"POST /api/v1/push HTTP/1.1\r\nHost: " + g.addr + "\r\nAuthorization: Bearer " + apiKey + "\r\nCookie: " + pad +
			"\r\nContent-Length: 2\r\n\r\n{}",
		"GET /ws?token=" + pad + " HTTP/1.1\r\nHost: " + g.addr + "\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: " + g.addr + strings.Repeat("\r\nX-A: b", 4000) + "\r\n\r\n",
	} {
		conn := g.tcp(t, attackerIP)
		_ = conn.SetDeadline(time.Now().Add(patience))
		go func() { _, _ = io.WriteString(conn, req) }() // the gateway may answer before reading all of it
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%.40q…: %v", req, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%.40q…: HTTP %d; want 431", req, resp.StatusCode)
		}
		conn.Close()
	}
	g.stillServes(t, c)
}

// TestDribbledHandshake: a client that sends its upgrade request one byte every 100ms (a
// slowloris) is cut off when handshake-timeout (1s here) has passed, long before its request
// is complete.
func TestDribbledHandshake(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	g := start(t, func(c *config.Config) { c.HandshakeTimeout = timeout }, server.Options{})
	c := g.startCanary(t)

	req := "GET /ws?token=" + g.sign("slow") + " HTTP/1.1\r\nHost: " + g.addr + "\r\nUpgrade: websocket\r\n" +
		"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	conn := g.tcp(t, attackerIP)
	begin := time.Now()
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		i := 0
		defer func() { sent <- i }()
		for ; i < len(req); i++ {
			if _, err := conn.Write([]byte{req[i]}); err != nil {
				return
			}
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	got, err := io.ReadAll(conn) // until the gateway hangs up
	cut := time.Since(begin)
	close(stop)
	n := <-sent
	t.Logf("cut off after %v and %d of %d bytes; answer %q, err %v", cut.Round(time.Millisecond), n, len(req), got, err)
	if strings.Contains(string(got), "101") {
		t.Fatal("the dribbled handshake was upgraded")
	}
	if cut < timeout-100*time.Millisecond || cut > timeout+3*time.Second {
		t.Fatalf("cut off after %v; want about handshake-timeout %v", cut, timeout)
	}
	if n >= len(req) {
		t.Fatal("the whole request was sent before the cut-off")
	}
	g.stillServes(t, c)
}

// TestMaxConns: beyond max-conns the node refuses with 503 (so a load balancer tries another
// node), counts it, and admits again once a slot is free.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	g := start(t, func(c *config.Config) { c.MaxConns = 3 }, server.Options{})
	c := g.startCanary(t) // one of the 3
	a := g.mustDial(t, attackerIP, "attacker-1")
	g.mustDial(t, attackerIP, "attacker-2")
	for i := range 5 {
		g.expectRefused(t, http.StatusServiceUnavailable, attackerIP, "token="+g.sign(fmt.Sprint("attacker-x", i)), nil)
	}
	g.waitMetric(t, 5, "wsgateway_refused_total", "status", "503")
	c.alive(t)
	a.Close()
	wait.For(t, patience, func() bool { return g.srv.ForTest().Hub().Conns() == 2 }, "the closed connection's slot is free")
	g.stillServes(t, c)
}

// TestMaxConnsPerIP: one address may hold max-conns-per-ip connections; the next gets 429,
// counted in wsgateway_refused_total{status="429"}. Other addresses are not affected, and the
// address gets its slot back when a connection ends.
func TestMaxConnsPerIP(t *testing.T) {
	t.Parallel()
	g := start(t, func(c *config.Config) { c.MaxConnsPerIP = 3 }, server.Options{})
	c := g.startCanary(t)
	var held []interface{ Close() error }
	for i := range 3 {
		held = append(held, g.mustDial(t, attackerIP, fmt.Sprint("attacker-", i)))
	}
	for i := range 4 {
		msg := g.expectRefused(t, http.StatusTooManyRequests, attackerIP, "token="+g.sign(fmt.Sprint("attacker-x", i)), nil)
		if !strings.Contains(msg, "address") {
			t.Fatalf("429 for the wrong reason: %q", msg)
		}
	}
	if got := g.metric("wsgateway_refused_total", "status", "429"); got != 4 {
		t.Fatalf("wsgateway_refused_total{status=\"429\"} = %v; want 4", got)
	}
	g.stillServes(t, c) // the canary's and a fresh address are unaffected

	held[0].Close()
	wait.For(t, patience, func() bool {
		conn, _, err := g.dial(attackerIP, "token="+g.sign("attacker-again"), nil)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}, "the address got a slot back")
}
