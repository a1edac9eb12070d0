package auth

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
)

func TestNewVerifier(t *testing.T) {
	k := testKeys()
	rs := jwttest.Sign(t, jwt.SigningMethodRS256, k.rsa, claims("alice"))
	es := jwttest.Sign(t, jwt.SigningMethodES256, k.ec, claims("alice"))
	tests := []struct {
		name    string
		secret  []byte
		pem     []byte
		token   string // verified with the new Verifier when non-empty
		wantErr string // a substring of the error; "" for success
	}{
		{name: "HMAC secret only", secret: []byte("s")},
		{name: "RSA PKIX", pem: k.rsaPEM, token: rs},
		{name: "RSA PKCS1", pem: k.rsaPKCS1PEM, token: rs},
		{name: "RSA certificate", pem: k.rsaCertPEM, token: rs},
		{name: "RSA PKIX with surrounding text", pem: append(append([]byte("# issuer key\n"), k.rsaPEM...), "\n\n"...), token: rs},
		{name: "EC P-256", pem: k.ecPEM, token: es},
		{name: "EC parameters block skipped", pem: k.ecWithParamsPEM, token: es},
		{name: "secret and key", secret: []byte("s"), pem: k.rsaPEM, token: rs},
		{name: "nothing", wantErr: "no JWT key configured"},
		{name: "empty slices", secret: []byte{}, pem: []byte{}, wantErr: "no JWT key configured"},
		{name: "whitespace PEM", pem: []byte(" \n\t\n"), wantErr: "no JWT key configured"},
		{name: "not PEM", pem: []byte("not a pem"), wantErr: "no \"PUBLIC KEY\""},
		{name: "not PEM with a secret", secret: []byte("s"), pem: []byte("not a pem"), wantErr: "no \"PUBLIC KEY\""},
		{name: "private key", pem: k.rsaPrivatePEM, wantErr: "give the public key only"},
		{name: "EC P-384", pem: k.ecP384PEM, wantErr: "P-384"},
		{name: "Ed25519", pem: k.ed25519PEM, wantErr: "unsupported key type"},
		{name: "corrupt PUBLIC KEY", pem: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")}), wantErr: `"PUBLIC KEY" PEM block`},
		{name: "corrupt RSA PUBLIC KEY", pem: pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte("junk")}), wantErr: `"RSA PUBLIC KEY" PEM block`},
		{name: "corrupt CERTIFICATE", pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}), wantErr: `"CERTIFICATE" PEM block`},
		{name: "RSA key mislabelled PKCS1", pem: pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: mustPKIX(t, &k.rsa.PublicKey)}), wantErr: "RSA PUBLIC KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := newVerifier(tt.secret, tt.pem, func() time.Time { return testNow })
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("newVerifier succeeded; want an error with %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %q: want one line containing %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "auth: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("newVerifier: %v", err)
			}
			if tt.token != "" {
				if sub, err := v.Verify(tt.token); err != nil || sub != "alice" {
					t.Fatalf("Verify = %q, %v; want alice, nil", sub, err)
				}
			}
		})
	}
}

func mustPKIX(tb testing.TB, pub any) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// TestNewVerifierCopiesSecret checks that a caller reusing its buffer cannot
// change the key under a live Verifier.
func TestNewVerifierCopiesSecret(t *testing.T) {
	secret := []byte(testSecret)
	v := mustVerifier(t, secret, nil)
	tok := jwttest.Sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims("alice"))
	for i := range secret {
		secret[i] = 0
	}
	if sub, err := v.Verify(tok); err != nil || sub != "alice" {
		t.Fatalf("Verify after the caller zeroed its secret = %q, %v", sub, err)
	}
}
