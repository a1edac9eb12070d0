package bus

import (
	"bytes"
	"errors"
	"strconv"
)

// Handler receives what the bus carries. The bus calls it from its receive loop: every method
// must return at once (hand off, never wait on a client or on Redis).
type Handler interface {
	// Deliver hands a payload published to user to that user's local connections. seq is the
	// message's number in the user's inbox, or 0 for a message with none (a plain PUBLISH).
	Deliver(user string, seq int64, data []byte)
	// Broadcast hands a payload to every local connection.
	Broadcast(data []byte)
	// Kick closes every local connection of user with 4001.
	Kick(user string)
	// Resync reports that messages may have been published while this node did not receive
	// them (its pub/sub connection came back, or users moved to another Cluster shard): every
	// local connection compares its position with its user's inbox and fetches what it missed.
	Resync()
}

// ErrUnavailable means the bus cannot reach Redis right now; the caller answers 503.
var ErrUnavailable = errors.New("bus: redis unavailable")

// ParseNumbered splits a payload published by the inbox's push ("\x00<seq> <data>") into its
// number and data. Anything else is an unnumbered payload: seq 0 and the payload as it is.
func ParseNumbered(payload []byte) (seq int64, data []byte) {
	if len(payload) < 3 || payload[0] != 0 {
		return 0, payload
	}
	sp := bytes.IndexByte(payload[1:min(len(payload), 21)], ' ')
	if sp < 1 {
		return 0, payload
	}
	n, err := strconv.ParseInt(string(payload[1:1+sp]), 10, 64)
	if err != nil || n <= 0 {
		return 0, payload
	}
	return n, payload[2+sp:]
}
