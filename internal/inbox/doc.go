// Package inbox keeps every message pushed to a user, numbered, until it is acknowledged: the
// source of truth behind delivery, of which pub/sub is only the fast path.
//
// A push numbers the message (per user 1, 2, 3, …), appends it to the user's inbox and
// publishes it, in one atomic step, so that no message is lost or stuck between "nobody was
// subscribed" and "the user just connected". A connection starts by reading the inbox after
// its position (Read) and acknowledges what it got (Ack); a node that sees a number jump, or
// whose pub/sub link was down, reads what it missed. The inbox keeps the unacknowledged
// messages (at most offline-max, for offline-ttl after the last push) and the acknowledged ones
// for resume-ttl, so a client can resume from its last number after any break.
//
// Redis keeps each user's inbox in three kinds of keys under one hash tag (lua/push.lua); Memory
// is the single-node twin with the same semantics.
package inbox

// Result is the outcome of one push to one user.
type Result struct {
	Seq       int64 // the message's number for the user
	Receivers int64 // nodes that took it live; 0: it waits in the inbox
	Duplicate bool  // the push id was seen before: nothing was stored or sent, Seq is the first push's
	Err       error // PushBatch only: this message's push failed (the others may have succeeded)
	deadline  int64 // when it counts as undelivered (ms, Redis time); 0: never
}

// Range is what Read found: the user's numbers and the kept messages after the position read.
type Range struct {
	Latest int64 // the user's latest number; 0: nothing was ever pushed (or the state expired)
	First  int64 // the oldest kept number; Latest+1 when nothing is kept
	Acked  int64 // the acknowledged position
	Start  int64 // the number of Msgs[0]
	Msgs   [][]byte
}

// startAfter is the first number a read after position after returns (lua/read.lua): after -1
// reads after the acknowledged position; a position above the latest number (the state expired
// and numbering started again) reads from the start.
func (r Range) startAfter(after int64) int64 {
	switch {
	case after < 0:
		after = r.Acked
	case after > r.Latest:
		after = 0
	}
	return max(after+1, r.First)
}
