// Package jwttest makes the keys and client tokens of tests that run a
// gateway: an HS256 token for a user, an RSA key pair whose public half is a
// PEM file for --jwt-public-key, and the signing of any claims with any key
// (including the wrong ones an attack test needs).
package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims returns the claims of a valid token for sub, expiring in an hour.
func Claims(sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
}

// Sign signs claims with key using m, or fails tb.
func Sign(tb testing.TB, m jwt.SigningMethod, key any, claims jwt.Claims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// HS256 is a valid client token for sub (see [Claims]) signed with secret.
func HS256(tb testing.TB, secret, sub string) string {
	tb.Helper()
	return Sign(tb, jwt.SigningMethodHS256, []byte(secret), Claims(sub))
}

// PublicPEM encodes pub as a PKIX "PUBLIC KEY" PEM block, the format of
// --jwt-public-key.
func PublicPEM(tb testing.TB, pub crypto.PublicKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// RSAKey is a 2048-bit RSA key pair with its public half as a PEM file, for a
// gateway configured with --jwt-public-key.
type RSAKey struct {
	Private *rsa.PrivateKey
	DER     []byte // the public key, PKIX DER
	PEM     []byte // the same as a "PUBLIC KEY" block: the file's content
	Path    string // the PEM file, in tb.TempDir()
}

// NewRSA generates an RSA key and writes its public PEM file, or fails tb.
func NewRSA(tb testing.TB) RSAKey {
	tb.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	path := filepath.Join(tb.TempDir(), "jwt.pub.pem")
	if err := os.WriteFile(path, p, 0o600); err != nil {
		tb.Fatal(err)
	}
	return RSAKey{Private: priv, DER: der, PEM: p, Path: path}
}

// NewEC generates a P-256 key (for ES256), or fails tb.
func NewEC(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}
