package auth

import (
	"net/http"
	"strings"
)

// TokenFromRequest returns the client token of r: the `token` query parameter
// when it is non-empty, else the credentials of an `Authorization: Bearer
// <token>` header (scheme matched case-insensitively, RFC 7235 §2.1), else "".
//
// The query parameter comes first because browsers cannot set headers on a
// WebSocket handshake, so for them it is the only way; a non-browser client
// that sends both meant the one in the URL it built.
func TokenFromRequest(r *http.Request) string {
	if r == nil {
		return ""
	}
	if r.URL != nil {
		if t := r.URL.Query().Get("token"); t != "" {
			return t
		}
	}
	t, _ := bearer(r.Header.Get("Authorization"))
	return t
}

// bearer returns the credentials of an Authorization header value using the
// Bearer scheme, and whether there were any. The scheme is case-insensitive and
// may be followed by several spaces or tabs (RFC 7235 §2.1, RFC 6750 §2.1);
// surrounding whitespace is not part of the credentials.
func bearer(authorization string) (string, bool) {
	const scheme = "Bearer"
	if len(authorization) <= len(scheme) ||
		!strings.EqualFold(authorization[:len(scheme)], scheme) {
		return "", false
	}
	rest := authorization[len(scheme):]
	if rest[0] != ' ' && rest[0] != '\t' {
		// "Bearerxyz" is another scheme, not Bearer with credentials "xyz".
		return "", false
	}
	rest = strings.Trim(rest, " \t")
	return rest, rest != ""
}
