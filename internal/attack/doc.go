// Package attack holds only tests: hostile clients against the real gateway, booted
// in-process on 127.0.0.1:0 without --dev (tokens and API keys required).
//
// Every test plays one attack — cross-site WebSocket hijacking, forged tokens (alg none,
// HS256 signed with the RSA public key), another user's id in ?user_id=, RFC 6455 violations
// written by hand on a raw TCP socket (fragmented or oversized control frames, invalid close
// codes, unmasked frames, reserved opcodes and RSV bits), ping and data floods, a 1 GiB
// announced frame, a request body that never ends, oversized headers, a handshake dribbled
// byte by byte, connection floods past max-conns and max-conns-per-ip, and malformed user
// ids in every place one is accepted — and asserts two things: the answer docs/protocol.md and the README give
// (the close code or the HTTP status, and the metric that counts it), and that a
// well-behaved client connected throughout (the canary, from another loopback address)
// went on receiving every push, in order, while and after the attack ran.
package attack
