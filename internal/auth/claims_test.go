package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
)

// With WithAudience and WithIssuer, aud and iss are required and must match; a token that
// one identity provider signed with the same key for another app is refused. Each refusal
// gives its own fixed reason.
func TestVerifyAudienceIssuer(t *testing.T) {
	const aud, iss = "wsgateway", "https://id.example"
	k := testKeys()
	secret := []byte(testSecret)
	opts := []Option{WithAudience(aud), WithIssuer(iss)}
	hs, err := newVerifier(secret, nil, func() time.Time { return testNow }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := newVerifier(nil, k.rsaPEM, func() time.Time { return testNow }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	audOnly, err := newVerifier(secret, nil, func() time.Time { return testNow }, WithAudience(aud))
	if err != nil {
		t.Fatal(err)
	}
	good := with(with(claims("alice"), "aud", aud), "iss", iss)
	tests := []struct {
		name    string
		claims  jwt.MapClaims
		wantErr error // nil: accepted as alice
	}{
		{"right aud and iss", good, nil},
		{"aud as a list holding ours", with(good, "aud", []string{"other-app", aud}), nil},
		{"wrong aud", with(good, "aud", "other-app"), errAudience},
		{"aud list without ours", with(good, "aud", []string{"a", "b"}), errAudience},
		{"aud differing in case", with(good, "aud", "WSGateway"), errAudience},
		{"no aud", with(good, "aud", nil), errNoAudience},
		{"empty aud", with(good, "aud", ""), errNoAudience},
		{"empty aud list", with(good, "aud", []string{}), errNoAudience},
		{"wrong iss", with(good, "iss", "https://evil.example"), errIssuer},
		{"iss with a trailing slash", with(good, "iss", iss+"/"), errIssuer},
		{"no iss", with(good, "iss", nil), errNoIssuer},
		{"no exp still reported as such", with(good, "exp", nil), errNoExp},
		{"expired with the right aud and iss", with(good, "exp", testNow.Add(-time.Hour).Unix()), errExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, tok := range map[string]string{
				"HS256": jwttest.Sign(t, jwt.SigningMethodHS256, secret, tt.claims),
				"RS256": jwttest.Sign(t, jwt.SigningMethodRS256, k.rsa, tt.claims),
			} {
				v := hs
				if name == "RS256" {
					v = rs
				}
				sub, err := v.Verify(tok)
				if tt.wantErr == nil {
					if err != nil || sub != "alice" {
						t.Errorf("%s: Verify = %q, %v; want alice", name, sub, err)
					}
					continue
				}
				if err != tt.wantErr {
					t.Errorf("%s: Verify = %q, %v; want %v", name, sub, err, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalidToken) || !isKnownReason(err) {
					t.Errorf("%s: %v is not one of the fixed ErrInvalidToken reasons", name, err)
				}
			}
		})
	}
	// A missing iss is fine when only the audience is configured, and the other way round
	// is checked by the verifier without options below.
	if sub, err := audOnly.Verify(jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(good, "iss", nil))); err != nil || sub != "alice" {
		t.Errorf("audience only, no iss: %q, %v; want alice", sub, err)
	}
	if _, err := audOnly.Verify(jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(good, "aud", nil))); err != errNoAudience {
		t.Errorf("audience only, no aud: %v; want %v", err, errNoAudience)
	}
	// Without the options aud and iss are not looked at, and empty options add no check.
	plain := mustVerifier(t, secret, nil)
	empty, err := newVerifier(secret, nil, func() time.Time { return testNow }, WithAudience(""), WithIssuer(""))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []jwt.MapClaims{claims("alice"), with(with(claims("alice"), "aud", "x"), "iss", "y")} {
		for _, v := range []*Verifier{plain, empty} {
			if sub, err := v.Verify(jwttest.Sign(t, jwt.SigningMethodHS256, secret, c)); err != nil || sub != "alice" {
				t.Errorf("no audience/issuer configured, claims %v: %q, %v; want alice", c, sub, err)
			}
		}
	}
}
