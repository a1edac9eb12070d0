package auth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/wsgateway/internal/auth"
	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
)

// The internal package already has BenchmarkVerifyHS256; these add the public-key algorithms
// and the parallel case. Every connect verifies one token, so 1/(ns/op) bounds the connect rate
// one core can authenticate.

func token(tb testing.TB, m jwt.SigningMethod, key any) string {
	tb.Helper()
	return jwttest.Sign(tb, m, key, jwt.RegisteredClaims{
		Subject:   "user-1234@example.com",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	})
}

type verifyCase struct {
	name  string
	setup func(b *testing.B) (*auth.Verifier, string)
}

var verifyCases = []verifyCase{
	{"HS256", func(b *testing.B) (*auth.Verifier, string) {
		secret := []byte("bench-hmac-secret-of-at-least-32-bytes")
		v, err := auth.NewVerifier(secret, nil)
		if err != nil {
			b.Fatal(err)
		}
		return v, token(b, jwt.SigningMethodHS256, secret)
	}},
	{"RS256", func(b *testing.B) (*auth.Verifier, string) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		return signedBy(b, jwt.SigningMethodRS256, k, err)
	}},
	{"ES256", func(b *testing.B) (*auth.Verifier, string) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return signedBy(b, jwt.SigningMethodES256, k, err)
	}},
}

// signedBy is a public-key case's set-up: a verifier that knows only k's public key, and a
// token k signed. err is the key generation's.
func signedBy(b *testing.B, m jwt.SigningMethod, k crypto.Signer, err error) (*auth.Verifier, string) {
	if err != nil {
		b.Fatal(err)
	}
	v, err := auth.NewVerifier(nil, jwttest.PublicPEM(b, k.Public()))
	if err != nil {
		b.Fatal(err)
	}
	return v, token(b, m, k)
}

func BenchmarkVerifyRS256(b *testing.B) { benchVerify(b, verifyCases[1]) }
func BenchmarkVerifyES256(b *testing.B) { benchVerify(b, verifyCases[2]) }

func benchVerify(b *testing.B, c verifyCase) {
	v, tok := c.setup(b)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "verifies/s")
}

// BenchmarkVerifyParallel verifies on every core at once, as concurrent connects do.
func BenchmarkVerifyParallel(b *testing.B) {
	for _, c := range verifyCases {
		b.Run(c.name, func(b *testing.B) {
			v, tok := c.setup(b)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := v.Verify(tok); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "verifies/s")
		})
	}
}
