package auth

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
)

func TestVerify(t *testing.T) {
	k := testKeys()
	secret := []byte(testSecret)
	hsOnly := mustVerifier(t, secret, nil)
	rsaOnly := mustVerifier(t, nil, k.rsaPEM)
	ecOnly := mustVerifier(t, nil, k.ecPEM)
	hsAndRSA := mustVerifier(t, secret, k.rsaPEM)
	all := []*Verifier{hsOnly, rsaOnly, ecOnly, hsAndRSA}

	c := claims("alice")
	hs := jwttest.Sign(t, jwt.SigningMethodHS256, secret, c)
	rs := jwttest.Sign(t, jwt.SigningMethodRS256, k.rsa, c)
	es := jwttest.Sign(t, jwt.SigningMethodES256, k.ec, c)
	none := rawToken(`{"alg":"none","typ":"JWT"}`, jsonOf(t, c), nil)
	hsBody := strings.Split(hs, ".")
	otherBody := strings.Split(jwttest.Sign(t, jwt.SigningMethodHS256, secret, claims("mallory")), ".")
	long128 := strings.Repeat("a", 128)

	tests := []struct {
		name    string
		v       []*Verifier
		token   string
		wantSub string // "" when an error is expected
		wantErr error
	}{
		{name: "HS256", v: []*Verifier{hsOnly, hsAndRSA}, token: hs, wantSub: "alice"},
		{name: "RS256", v: []*Verifier{rsaOnly, hsAndRSA}, token: rs, wantSub: "alice"},
		{name: "ES256", v: []*Verifier{ecOnly}, token: es, wantSub: "alice"},
		{name: "sub of 128 bytes", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, claims(long128)), wantSub: long128},
		{name: "sub with every allowed punctuation", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, claims("a_b.c:d@e-F9")), wantSub: "a_b.c:d@e-F9"},
		{name: "expired within leeway", v: []*Verifier{hsOnly},
			token:   jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "exp", testNow.Add(-3*time.Second).Unix())),
			wantSub: "alice"},
		{name: "nbf within leeway", v: []*Verifier{hsOnly},
			token:   jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "nbf", testNow.Add(3*time.Second).Unix())),
			wantSub: "alice"},
		{name: "iat in the future is not checked", v: []*Verifier{hsOnly},
			token:   jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "iat", testNow.Add(time.Minute).Unix())),
			wantSub: "alice"},
		{name: "extra claims ignored", v: []*Verifier{hsOnly},
			token:   jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(with(c, "aud", "x"), "custom", map[string]any{"a": 1})),
			wantSub: "alice"},

		// Bad signatures.
		{name: "HS256 other secret", v: []*Verifier{hsOnly, hsAndRSA},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, []byte("another secret"), c), wantErr: errSignature},
		{name: "RS256 other key", v: []*Verifier{rsaOnly, hsAndRSA},
			token: jwttest.Sign(t, jwt.SigningMethodRS256, k.otherRSA, c), wantErr: errSignature},
		{name: "ES256 other key", v: []*Verifier{ecOnly},
			token: jwttest.Sign(t, jwt.SigningMethodES256, k.otherEC, c), wantErr: errSignature},
		{name: "claims swapped under a valid signature", v: []*Verifier{hsOnly},
			token: hsBody[0] + "." + otherBody[1] + "." + hsBody[2], wantErr: errSignature},
		{name: "signature removed", v: []*Verifier{hsOnly},
			token: hsBody[0] + "." + hsBody[1] + ".", wantErr: errSignature},
		{name: "RS256 signature truncated", v: []*Verifier{rsaOnly},
			token: truncateSig(t, rs, 1), wantErr: errSignature},
		{name: "ES256 signature truncated", v: []*Verifier{ecOnly},
			token: truncateSig(t, es, 1), wantErr: errSignature},

		// alg: none and unknown algorithms.
		{name: "alg none", v: all, token: none, wantErr: errAlgorithm},
		{name: "alg none with a signature", v: all,
			token: none + "c2ln", wantErr: errAlgorithm},
		{name: "alg None", v: all,
			token: rawToken(`{"alg":"None","typ":"JWT"}`, jsonOf(t, c), nil), wantErr: errAlgorithm},
		{name: "alg missing", v: all,
			token: rawToken(`{"typ":"JWT"}`, jsonOf(t, c), []byte("x")), wantErr: errAlgorithm},
		{name: "alg not a string", v: all,
			token: rawToken(`{"alg":256}`, jsonOf(t, c), []byte("x")), wantErr: errAlgorithm},
		{name: "alg unknown", v: all,
			token: rawToken(`{"alg":"XX999"}`, jsonOf(t, c), []byte("x")), wantErr: errAlgorithm},

		// Wrong algorithm family for the configured keys.
		{name: "RS256 with only an HMAC secret", v: []*Verifier{hsOnly}, token: rs, wantErr: errAlgorithm},
		{name: "ES256 with only an HMAC secret", v: []*Verifier{hsOnly}, token: es, wantErr: errAlgorithm},
		{name: "HS256 with only a public key", v: []*Verifier{rsaOnly, ecOnly}, token: hs, wantErr: errAlgorithm},
		{name: "HS256 signed with the RSA public key PEM", v: []*Verifier{rsaOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, k.rsaPEM, c), wantErr: errAlgorithm},
		{name: "HS256 signed with the RSA public key PEM, HMAC secret also set", v: []*Verifier{hsAndRSA},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, k.rsaPEM, c), wantErr: errSignature},
		{name: "HS256 signed with the EC public key PEM", v: []*Verifier{ecOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, k.ecPEM, c), wantErr: errAlgorithm},
		{name: "ES256 with an RSA key", v: []*Verifier{rsaOnly, hsAndRSA}, token: es, wantErr: errAlgorithm},
		{name: "RS256 with an EC key", v: []*Verifier{ecOnly}, token: rs, wantErr: errAlgorithm},
		{name: "HS384", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS384, secret, c), wantErr: errAlgorithm},
		{name: "HS512", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS512, secret, c), wantErr: errAlgorithm},
		{name: "RS512", v: []*Verifier{rsaOnly},
			token: jwttest.Sign(t, jwt.SigningMethodRS512, k.rsa, c), wantErr: errAlgorithm},
		{name: "PS256", v: []*Verifier{rsaOnly},
			token: jwttest.Sign(t, jwt.SigningMethodPS256, k.rsa, c), wantErr: errAlgorithm},

		// Time claims.
		{name: "expired", v: []*Verifier{hsOnly},
			token:   jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "exp", testNow.Add(-time.Minute).Unix())),
			wantErr: errExpired},
		{name: "expired just past leeway", v: []*Verifier{hsOnly},
			token:   jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "exp", testNow.Add(-clockSkew-time.Second).Unix())),
			wantErr: errExpired},
		{name: "no exp", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "exp", nil)), wantErr: errNoExp},
		{name: "exp null", v: []*Verifier{hsOnly},
			token:   jwttest.Sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": json.RawMessage("null")}),
			wantErr: errNoExp},
		{name: "exp not a number", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "exp", "tomorrow")), wantErr: errMalformed},
		{name: "nbf in the future", v: []*Verifier{hsOnly},
			token:   jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "nbf", testNow.Add(time.Minute).Unix())),
			wantErr: errNotYetValid},

		// Subjects.
		{name: "no sub", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "sub", nil)), wantErr: errNoSubject},
		{name: "empty sub", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, claims("")), wantErr: errNoSubject},
		{name: "sub of 129 bytes", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, claims(long128+"a")), wantErr: errBadSubject},
		{name: "sub with a space", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, claims("al ice")), wantErr: errBadSubject},
		{name: "sub with a slash", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, claims("alice/1")), wantErr: errBadSubject},
		{name: "sub with a hash tag brace", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, claims("a}b")), wantErr: errBadSubject},
		{name: "sub in unicode", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, claims("zoë")), wantErr: errBadSubject},
		{name: "sub not a string", v: []*Verifier{hsOnly},
			token: jwttest.Sign(t, jwt.SigningMethodHS256, secret, with(c, "sub", 42)), wantErr: errMalformed},

		// Garbage.
		{name: "empty", v: all, token: "", wantErr: ErrNoToken},
		{name: "one segment", v: all, token: "garbage", wantErr: errMalformed},
		{name: "two segments", v: all, token: "a.b", wantErr: errMalformed},
		{name: "four segments", v: all, token: hs + ".x", wantErr: errMalformed},
		{name: "dots only", v: all, token: "..", wantErr: errMalformed},
		{name: "not base64", v: all, token: "!!!.???.***", wantErr: errMalformed},
		{name: "padded base64", v: []*Verifier{hsOnly}, token: hsBody[0] + "=." + hsBody[1] + "." + hsBody[2], wantErr: errMalformed},
		{name: "header not JSON", v: all, token: rawToken(`alg=HS256`, jsonOf(t, c), []byte("x")), wantErr: errMalformed},
		{name: "claims not JSON", v: all, token: rawToken(`{"alg":"HS256"}`, `{"sub":`, []byte("x")), wantErr: errMalformed},
		{name: "claims an array", v: all, token: rawToken(`{"alg":"HS256"}`, `[1,2]`, []byte("x")), wantErr: errMalformed},
		{name: "Bearer prefix left on", v: []*Verifier{hsOnly}, token: "Bearer " + hs, wantErr: errMalformed},
		{name: "too long", v: all, token: strings.Repeat("a", maxTokenLen+1), wantErr: errTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, v := range tt.v {
				sub, err := v.Verify(tt.token)
				if tt.wantErr == nil {
					if err != nil || sub != tt.wantSub {
						t.Fatalf("verifier %d: Verify = %q, %v; want %q, nil", i, sub, err, tt.wantSub)
					}
					continue
				}
				if err != tt.wantErr || sub != "" {
					t.Fatalf("verifier %d: Verify = %q, %v; want \"\", %v", i, sub, err, tt.wantErr)
				}
				if tt.wantErr != ErrNoToken && !errors.Is(err, ErrInvalidToken) {
					t.Errorf("verifier %d: %v does not wrap ErrInvalidToken", i, err)
				}
				for _, part := range strings.Split(tt.token, ".") {
					if len(part) >= 8 && strings.Contains(err.Error(), part) {
						t.Errorf("verifier %d: error %q quotes the token", i, err)
					}
				}
			}
		})
	}
}

// TestVerifyRealClock checks that NewVerifier uses the wall clock.
func TestVerifyRealClock(t *testing.T) {
	v, err := NewVerifier([]byte(testSecret), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name    string
		exp     time.Time
		wantErr error
	}{
		{name: "valid", exp: now.Add(time.Minute)},
		{name: "expired", exp: now.Add(-time.Minute), wantErr: errExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := jwttest.Sign(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "bob", "exp": tt.exp.Unix()})
			sub, err := v.Verify(tok)
			if err != tt.wantErr || (err == nil && sub != "bob") {
				t.Fatalf("Verify = %q, %v; want bob, %v", sub, err, tt.wantErr)
			}
		})
	}
}

// TestVerifyConcurrent lets -race check that a Verifier is safe to share.
func TestVerifyConcurrent(t *testing.T) {
	k := testKeys()
	v := mustVerifier(t, []byte(testSecret), k.rsaPEM)
	toks := []string{
		jwttest.Sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("alice")),
		jwttest.Sign(t, jwt.SigningMethodRS256, k.rsa, claims("alice")),
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				if sub, err := v.Verify(toks[(g+i)%len(toks)]); err != nil || sub != "alice" {
					t.Errorf("Verify = %q, %v", sub, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func FuzzVerify(f *testing.F) {
	k := testKeys()
	secret := []byte(testSecret)
	verifiers := []*Verifier{
		mustVerifier(f, secret, k.rsaPEM),
		mustVerifier(f, nil, k.ecPEM),
	}
	c := claims("alice")
	hs := jwttest.Sign(f, jwt.SigningMethodHS256, secret, c)
	seeds := []string{
		hs,
		jwttest.Sign(f, jwt.SigningMethodRS256, k.rsa, c),
		jwttest.Sign(f, jwt.SigningMethodES256, k.ec, c),
		jwttest.Sign(f, jwt.SigningMethodHS256, k.rsaPEM, c),
		jwttest.Sign(f, jwt.SigningMethodHS256, secret, with(c, "exp", nil)),
		jwttest.Sign(f, jwt.SigningMethodHS256, secret, with(c, "exp", testNow.Add(-time.Hour).Unix())),
		jwttest.Sign(f, jwt.SigningMethodHS256, secret, claims(strings.Repeat("x", 129))),
		jwttest.Sign(f, jwt.SigningMethodHS256, secret, with(c, "sub", 7)),
		rawToken(`{"alg":"none","typ":"JWT"}`, jsonOf(f, c), nil),
		rawToken(`{"alg":"HS256"}`, `{"sub":"a","exp":1e400}`, []byte("x")),
		rawToken(`{"alg":"ES256"}`, jsonOf(f, c), make([]byte, 64)),
		rawToken(`{"alg":"RS256"}`, jsonOf(f, c), make([]byte, 256)),
		hs[:len(hs)-1],
		"", ".", "..", "...", "a.b.c", "Bearer x", "\x00.\xff.\x80",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		for i, v := range verifiers {
			sub, err := v.Verify(token)
			if err != nil {
				if sub != "" {
					t.Fatalf("verifier %d: Verify = %q with error %v", i, sub, err)
				}
				if !isKnownReason(err) {
					t.Fatalf("verifier %d: unexpected error %v", i, err)
				}
				continue
			}
			if !ValidUserID(sub) {
				t.Fatalf("verifier %d: accepted token with invalid sub %q", i, sub)
			}
		}
	})
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := mustVerifier(b, []byte(testSecret), nil)
	tok := jwttest.Sign(b, jwt.SigningMethodHS256, []byte(testSecret), claims("user-1234@example.com"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
