package auth

// maxUserIDLen is the longest user id, in bytes (docs/protocol.md). It bounds the Redis
// key and channel names built from an id.
const maxUserIDLen = 128

// ValidUserID reports whether s is a valid user id: 1–128 bytes of
// A–Z a–z 0–9 _ . : @ - (docs/protocol.md).
//
// The set is narrow on purpose: ids go into Redis key names inside a hash tag
// (`ws:user:{<id>}`), into URL paths and into logs, and none of these characters
// needs escaping in any of them. It is checked byte by byte, so any non-ASCII
// byte (and with it every multi-byte UTF-8 sequence) is refused. It runs on
// every connect and API call, hence no regexp and no allocation.
func ValidUserID(s string) bool {
	if len(s) == 0 || len(s) > maxUserIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_', c == '.', c == ':', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}
