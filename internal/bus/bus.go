package bus

import "errors"

// Handler receives what the bus carries. The bus calls it from its receive loop: every method
// must return at once (hand off, never wait on a client or on Redis).
type Handler interface {
	// Deliver hands a payload published to user to that user's local connections.
	Deliver(user string, data []byte)
	// Broadcast hands a payload to every local connection.
	Broadcast(data []byte)
	// Kick closes every local connection of user with 4001.
	Kick(user string)
	// PubSubLost reports that the pub/sub connection failed, or on a Cluster that users are
	// moving to a new shard: from now on the handler holds live messages back until the
	// offline lists were drained (they hold older ones).
	PubSubLost()
	// PubSubQuiet reports that the failed connection delivers nothing more: what was stored
	// and held so far can be handed over, still holding what comes next.
	PubSubQuiet()
	// Resubscribed reports that the subscriptions came back after an outage; pushes made
	// meanwhile found no subscriber and were stored offline, so they are drained now, and
	// holding ends.
	Resubscribed()
}

// ErrUnavailable means the bus cannot reach Redis right now; the caller answers 503.
var ErrUnavailable = errors.New("bus: redis unavailable")
