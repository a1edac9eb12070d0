package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
)

// APIKeys is the set of bearer keys that may call /api/* (README, HTTP API). Several
// keys are allowed at once so that a key can be rotated without downtime: add
// the new one, move the backends over, then drop the old one.
//
// An APIKeys is immutable after [NewAPIKeys] and safe for concurrent use. A nil
// *APIKeys holds no keys and accepts nothing.
type APIKeys struct {
	// digests holds the SHA-256 of each distinct key. Comparing digests
	// rather than keys gives every comparison the same length, so
	// subtle.ConstantTimeCompare never returns early on a length mismatch
	// and the timing reveals neither a key's length nor its content.
	digests [][sha256.Size]byte
}

// NewAPIKeys returns the set of keys. Whitespace around each key is dropped
// (it could never arrive in a Bearer header anyway); empty keys and duplicates
// are ignored.
func NewAPIKeys(keys []string) *APIKeys {
	k := &APIKeys{digests: make([][sha256.Size]byte, 0, len(keys))}
	seen := make(map[[sha256.Size]byte]bool, len(keys))
	for _, key := range keys {
		key = strings.TrimSpace(key)
		if key == "" {
			continue
		}
		d := sha256.Sum256([]byte(key))
		if seen[d] {
			continue
		}
		seen[d] = true
		k.digests = append(k.digests, d)
	}
	return k
}

// Len returns the number of distinct non-empty keys; 0 means no backend can
// call the API (start-up refuses that outside --dev).
func (k *APIKeys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.digests)
}

// CheckHeader reports whether authorization, the raw value of an Authorization
// header, is `Bearer <key>` with one of the keys.
//
// The key is compared against every configured key, without stopping at the
// first match, so the time taken does not tell which key (or whether an early
// or a late one) matched. Only the scheme check may return early: "Bearer" is
// no secret.
func (k *APIKeys) CheckHeader(authorization string) bool {
	key, ok := bearer(authorization)
	if !ok || k == nil {
		return false
	}
	d := sha256.Sum256([]byte(key))
	match := 0
	for i := range k.digests {
		match |= subtle.ConstantTimeCompare(k.digests[i][:], d[:])
	}
	return match == 1
}
