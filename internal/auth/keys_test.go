package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testNow is the fixed clock of the verifiers under test, so expiry cases do
// not depend on when the tests run.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const testSecret = "test-hmac-secret-of-at-least-32-bytes!"

// testKeyMaterial is generated once per test binary: RSA key generation takes
// a noticeable fraction of a second, more under -race.
type testKeyMaterial struct {
	rsa, otherRSA   *rsa.PrivateKey
	ec, otherEC     *ecdsa.PrivateKey
	rsaPEM          []byte // "PUBLIC KEY" (PKIX)
	rsaPKCS1PEM     []byte // "RSA PUBLIC KEY"
	rsaCertPEM      []byte // self-signed "CERTIFICATE"
	ecPEM           []byte // "PUBLIC KEY" (PKIX), P-256
	ecP384PEM       []byte
	ed25519PEM      []byte
	rsaPrivatePEM   []byte // "PRIVATE KEY" (PKCS #8), must be refused
	ecWithParamsPEM []byte // "EC PARAMETERS" block, then the "PUBLIC KEY"
}

var testKeys = sync.OnceValue(func() *testKeyMaterial {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	pkixPEM := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		must(err)
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	var k testKeyMaterial
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.otherRSA, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.otherEC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	must(err)

	k.rsaPEM = pkixPEM(&k.rsa.PublicKey)
	k.rsaPKCS1PEM = pem.EncodeToMemory(&pem.Block{
		Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey),
	})
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "wsgateway test issuer"},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.rsa.PublicKey, k.rsa)
	must(err)
	k.rsaCertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	k.ecPEM = pkixPEM(&k.ec.PublicKey)
	k.ecP384PEM = pkixPEM(&p384.PublicKey)
	k.ed25519PEM = pkixPEM(edPub)
	der, err = x509.MarshalPKCS8PrivateKey(k.rsa)
	must(err)
	k.rsaPrivatePEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	k.ecWithParamsPEM = append(params, k.ecPEM...)
	return &k
})

// claims returns the claims of a token for sub that expires an hour after testNow.
func claims(sub string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": testNow.Add(time.Hour).Unix()}
}

// with returns a copy of c with the given claim set, or removed when value is nil.
func with(c jwt.MapClaims, name string, value any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	if value == nil {
		delete(out, name)
	} else {
		out[name] = value
	}
	return out
}

// rawToken assembles a token by hand from a JSON header, JSON claims and a
// raw signature, for the tokens no honest library would produce.
func rawToken(header, claims string, sig []byte) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims)) + "." + enc.EncodeToString(sig)
}

// truncateSig drops the last n bytes of tok's signature, keeping the base64
// canonical so that only the signature check can refuse it.
func truncateSig(tb testing.TB, tok string, n int) string {
	tb.Helper()
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil {
		tb.Fatal(err)
	}
	return tok[:i+1] + base64.RawURLEncoding.EncodeToString(sig[:len(sig)-n])
}

func jsonOf(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func mustVerifier(tb testing.TB, secret, pemBytes []byte) *Verifier {
	tb.Helper()
	v, err := newVerifier(secret, pemBytes, func() time.Time { return testNow })
	if err != nil {
		tb.Fatalf("newVerifier: %v", err)
	}
	return v
}

// knownReasons are all the errors Verify may return; anything else would be a
// jwt error leaking through, possibly with pieces of the token in its text.
var knownReasons = []error{
	ErrNoToken, errTooLong, errMalformed, errAlgorithm, errSignature, errNoExp,
	errExpired, errNotYetValid, errClaims, errNoSubject, errBadSubject,
	errNoAudience, errAudience, errNoIssuer, errIssuer,
}

func isKnownReason(err error) bool {
	for _, r := range knownReasons {
		if err == r {
			return true
		}
	}
	return false
}
