package client

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"time"
)

// maxRefreshLead caps how long before exp a token is replaced. A quarter of the remaining
// lifetime, up to a minute, leaves room for a slow Token function and for clock skew between
// this machine and the gateway, without refreshing short test tokens the moment they arrive.
const maxRefreshLead = time.Minute

// tokenExpiry returns the exp claim of a JWT. The signature is not checked: the client has no
// key, and it only wants to know when the gateway will stop honouring the token. ok is false
// for anything that is not a JWT with a numeric exp (an opaque token is simply never
// refreshed in-band; the gateway closes with 4002 and the client reconnects with a new one).
func tokenExpiry(token string) (exp time.Time, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.Exp == "" {
		return time.Time{}, false
	}
	// NumericDate may carry a fraction of a second (RFC 7519 section 2).
	secs, err := claims.Exp.Float64()
	if err != nil || secs <= 0 || secs > math.MaxInt64/1e9 || math.IsNaN(secs) {
		return time.Time{}, false
	}
	whole, frac := math.Modf(secs)
	return time.Unix(int64(whole), int64(frac*1e9)), true
}

// refreshTime is when a token expiring at exp should be replaced, judged at now. Zero means
// never: the token carries no exp, or it has already expired and the gateway will close the
// connection with 4002 whatever the client does.
func refreshTime(now, exp time.Time) time.Time {
	left := exp.Sub(now)
	if exp.IsZero() || left <= 0 {
		return time.Time{}
	}
	return exp.Add(-min(left/4, maxRefreshLead))
}
