package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrNoToken means the client presented no token at all. Callers answer it
// like [ErrInvalidToken] (HTTP 401) but may log it at a lower level: it is what
// a client that forgot to log in looks like.
var ErrNoToken = errors.New("auth: no token")

// ErrInvalidToken means the token was refused. [Verifier.Verify] wraps it with a
// short fixed reason ("auth: invalid token: expired"); the reason never
// contains the token or any part of it, so the error is safe to log.
var ErrInvalidToken = errors.New("auth: invalid token")

// The reasons Verify gives. They are fixed strings, built once, so that no
// part of an attacker-controlled token (a header, a claim, the alg name) ever
// reaches a log line, and so that refusing a token allocates nothing extra.
var (
	errTooLong      = fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	errMalformed    = fmt.Errorf("%w: malformed", ErrInvalidToken)
	errAlgorithm    = fmt.Errorf("%w: algorithm missing or not allowed for the configured keys", ErrInvalidToken)
	errSignature    = fmt.Errorf("%w: bad signature", ErrInvalidToken)
	errNoExp        = fmt.Errorf("%w: exp missing", ErrInvalidToken)
	errExpired      = fmt.Errorf("%w: expired", ErrInvalidToken)
	errNotYetValid  = fmt.Errorf("%w: not valid yet (nbf)", ErrInvalidToken)
	errClaims       = fmt.Errorf("%w: invalid claims", ErrInvalidToken)
	errNoSubject    = fmt.Errorf("%w: sub missing", ErrInvalidToken)
	errNoAudience   = fmt.Errorf("%w: aud missing", ErrInvalidToken)
	errAudience     = fmt.Errorf("%w: aud is not this gateway's audience", ErrInvalidToken)
	errNoIssuer     = fmt.Errorf("%w: iss missing", ErrInvalidToken)
	errIssuer       = fmt.Errorf("%w: iss is not the configured issuer", ErrInvalidToken)
	errBadSubject   = fmt.Errorf("%w: sub is not a valid user id", ErrInvalidToken)
	errNoKeysConfig = errors.New("auth: no JWT key configured: need an HMAC secret or a public key")
)

const (
	// clockSkew is how far exp and nbf may be off: the token issuer's clock
	// and ours are never quite in step, and a few seconds is what NTP-synced
	// hosts stay well within.
	clockSkew = 5 * time.Second

	// maxTokenLen bounds the work an unauthenticated client can make us do
	// (base64 and JSON decoding happen before the signature check). 8 KiB is
	// the request-line/header limit of common proxies (nginx's
	// large_client_header_buffers), so a longer token could not reach us
	// through one anyway; real tokens are a few hundred bytes.
	maxTokenLen = 8 << 10
)

// Verifier checks client JWTs (docs/protocol.md, connecting) and returns the user id they carry.
// It holds an HMAC secret, a public key, or both; each key accepts exactly one
// algorithm (see the package documentation).
//
// A Verifier is immutable after [NewVerifier] and safe for concurrent use.
type Verifier struct {
	hmacSecret []byte // nil: HS256 is not a valid method at all

	publicKey    crypto.PublicKey  // *rsa.PublicKey, *ecdsa.PublicKey (P-256) or nil
	publicMethod jwt.SigningMethod // RS256 for RSA, ES256 for EC, nil without a key

	parser *jwt.Parser
	// audience and issuer, when not empty, are required claims (see [WithAudience]).
	audience, issuer string
	// keyFunc is v.key bound once, so Verify does not allocate a method
	// value per call.
	keyFunc jwt.Keyfunc
}

// Option adds a claim check to a [Verifier].
type Option func(*Verifier)

// WithAudience makes the `aud` claim required: it must be aud, or a list that
// holds aud. With an identity provider that signs tokens for several apps
// with one key, this is what keeps a token issued for another app out. An
// empty aud adds no check.
func WithAudience(aud string) Option { return func(v *Verifier) { v.audience = aud } }

// WithIssuer makes the `iss` claim required and equal to iss (compared
// exactly, as RFC 7519 section 4.1.1 asks). An empty iss adds no check.
func WithIssuer(iss string) Option { return func(v *Verifier) { v.issuer = iss } }

// NewVerifier returns a Verifier for tokens signed with hmacSecret (HS256)
// and/or the public key in publicKeyPEM: an RSA key enables RS256 only, an EC
// P-256 key enables ES256 only. Either may be nil or empty, not both. opts
// add the audience and issuer checks.
//
// publicKeyPEM may hold a "PUBLIC KEY" (PKIX), an "RSA PUBLIC KEY" (PKCS #1)
// or a "CERTIFICATE" block; the first of these is used and other blocks (such
// as "EC PARAMETERS") are skipped. A private key is refused rather than
// accepted: the gateway never needs one, so its presence means a mistake.
// The error names the problem in one line.
func NewVerifier(hmacSecret []byte, publicKeyPEM []byte, opts ...Option) (*Verifier, error) {
	return newVerifier(hmacSecret, publicKeyPEM, time.Now, opts...)
}

// newVerifier is NewVerifier with an injected clock, for tests of expiry and
// clock skew.
func newVerifier(hmacSecret, publicKeyPEM []byte, now func() time.Time, opts ...Option) (*Verifier, error) {
	if len(hmacSecret) == 0 && len(bytes.TrimSpace(publicKeyPEM)) == 0 {
		return nil, errNoKeysConfig
	}
	v := &Verifier{}
	for _, o := range opts {
		o(v)
	}
	if len(hmacSecret) > 0 {
		// A copy, so a caller reusing its buffer cannot change our key.
		v.hmacSecret = bytes.Clone(hmacSecret)
	}
	if len(bytes.TrimSpace(publicKeyPEM)) > 0 {
		key, method, err := parsePublicKey(publicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("auth: JWT public key: %w", err)
		}
		v.publicKey, v.publicMethod = key, method
	}
	popts := []jwt.ParserOption{
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(clockSkew),
		jwt.WithTimeFunc(now),
		// Non-canonical base64 (stray trailing bits) would let several
		// strings carry one signature; refuse them.
		jwt.WithStrictDecoding(),
	}
	// golang-jwt checks these after the signature, and treats a missing
	// claim as a failure once a value is expected.
	if v.audience != "" {
		popts = append(popts, jwt.WithAudience(v.audience))
	}
	if v.issuer != "" {
		popts = append(popts, jwt.WithIssuer(v.issuer))
	}
	v.parser = jwt.NewParser(popts...)
	v.keyFunc = v.key
	return v, nil
}

// key is the jwt.Keyfunc, and the only place where algorithms are pinned. It
// compares the token's method with the exact method objects we allow (not alg
// names), and hands out each key only for its one method. Everything else —
// "none", HS256 without a secret (so never the public key as an HMAC secret),
// RS256 with an EC key, PS256, … — gets no key at all.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch {
	case v.hmacSecret != nil && t.Method == jwt.SigningMethodHS256:
		return v.hmacSecret, nil
	case v.publicMethod != nil && t.Method == v.publicMethod:
		return v.publicKey, nil
	}
	return nil, errAlgorithm
}

// Verify checks token and returns its `sub` claim as the user id.
//
// It refuses, wrapping [ErrInvalidToken] with the reason: a token over 8 KiB,
// one that does not parse, an algorithm the configured keys do not allow
// (including "none"), a bad signature, a missing or passed `exp`, a future
// `nbf`, an `aud` or `iss` that is missing or wrong when [WithAudience] or
// [WithIssuer] asked for one, and a `sub` that is missing or fails
// [ValidUserID]. exp and nbf are
// checked with 5 s of leeway for clock skew; iat is not checked, since nbf is
// the claim meant for "not before". An empty token gives [ErrNoToken].
func (v *Verifier) Verify(token string) (userID string, err error) {
	userID, _, err = v.VerifyExpiry(token)
	return userID, err
}

// VerifyExpiry is Verify that also returns the token's exp, when the session must end
// (enforce-token-expiry).
func (v *Verifier) VerifyExpiry(token string) (userID string, expires time.Time, err error) {
	if token == "" {
		return "", time.Time{}, ErrNoToken
	}
	if len(token) > maxTokenLen {
		return "", time.Time{}, errTooLong
	}
	var claims jwt.RegisteredClaims
	if _, err := v.parser.ParseWithClaims(token, &claims, v.keyFunc); err != nil {
		return "", time.Time{}, v.reason(err, &claims)
	}
	switch {
	case claims.Subject == "":
		return "", time.Time{}, errNoSubject
	case !ValidUserID(claims.Subject):
		return "", time.Time{}, errBadSubject
	}
	// exp is required by the parser (WithExpirationRequired), so it is set here.
	return claims.Subject, claims.ExpiresAt.Time, nil
}

// reason maps a jwt error to one of our fixed-text errors. The jwt error
// itself is dropped: its text can quote the token's alg or pieces of its
// JSON. The order matters where jwt joins several errors: the most specific
// claim errors come before the generic "invalid claims". claims are what the
// parser decoded, which tells which required claim was missing.
func (v *Verifier) reason(err error, claims *jwt.RegisteredClaims) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// An unknown or missing alg, or our key func refusing the method.
		return errAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errSignature
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// exp always, aud and iss when configured; jwt's error names the
		// claim only in its text, so look at what was decoded.
		switch {
		case claims.ExpiresAt == nil:
			return errNoExp
		case v.audience != "" && (len(claims.Audience) == 0 || len(claims.Audience) == 1 && claims.Audience[0] == ""):
			return errNoAudience
		default:
			return errNoIssuer
		}
	case errors.Is(err, jwt.ErrTokenExpired):
		return errExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errIssuer
	default:
		return errClaims
	}
}

// parsePublicKey finds the first public key or certificate block in data and
// returns its key with the one signing method it may be used for.
func parsePublicKey(data []byte) (crypto.PublicKey, jwt.SigningMethod, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, nil, errors.New(`no "PUBLIC KEY", "RSA PUBLIC KEY" or "CERTIFICATE" PEM block found`)
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				key = cert.PublicKey
			}
		default:
			if strings.Contains(block.Type, "PRIVATE KEY") {
				return nil, nil, fmt.Errorf("found a %q PEM block; give the public key only", block.Type)
			}
			continue // e.g. "EC PARAMETERS" before the key
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%q PEM block: %w", block.Type, err)
		}
		return methodFor(key)
	}
}

// methodFor returns the one signing method allowed with key.
func methodFor(key any) (crypto.PublicKey, jwt.SigningMethod, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k, jwt.SigningMethodRS256, nil
	case *ecdsa.PublicKey:
		// ES256 is ECDSA over P-256 with SHA-256 (RFC 7518 §3.4); a key on
		// another curve would need ES384/ES512, which we do not offer.
		if k.Curve != elliptic.P256() {
			return nil, nil, fmt.Errorf("EC key on curve %s; only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		return k, jwt.SigningMethodES256, nil
	default:
		return nil, nil, fmt.Errorf("unsupported key type %T; want RSA (RS256) or EC P-256 (ES256)", key)
	}
}
