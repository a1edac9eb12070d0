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
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/wsgateway/internal/testutil/jwttest"
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
