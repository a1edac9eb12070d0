// Package auth decides who a client is and whether a backend may call the API.
//
// Clients of GET /ws present a JWT (docs/protocol.md): [TokenFromRequest] finds it in the
// `token` query parameter or an `Authorization: Bearer` header, and
// [Verifier.Verify] checks it and returns its `sub` as the user id. Backends
// calling /api/* present one of several API keys (README, HTTP API), checked by
// [APIKeys.CheckHeader] in constant time so that response timing says nothing
// about how much of a guess was right.
//
// The package is pure: it reads no configuration, logs nothing and keeps no
// global state. Errors never contain the token, so callers may log them.
//
// Algorithm pinning is the heart of [Verifier]: the key decides the algorithm,
// never the token's `alg` header. The HMAC secret is only ever used for HS256,
// an RSA public key only for RS256 and an EC P-256 public key only for ES256.
// That refuses `alg: none` and the classic HS/RS confusion, where an attacker
// signs an HS256 token using the (public) RSA key bytes as the HMAC secret.
package auth
