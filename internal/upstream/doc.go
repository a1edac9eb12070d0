// Package upstream carries what clients send to the backends: every inbound data frame
// becomes an entry of the Redis stream <prefix>upstream, fields user, node and data, for
// backends to read with consumer groups.
//
// Two things make it safe to offer to any authenticated client:
//
//   - It never blocks the connection that sent the frame. [Queue.Append] only enqueues into a
//     queue bounded in frames and in bytes; one goroutine owned by the Queue sends what is
//     queued to Redis in pipelined batches. When the queue is full (Redis slow or away, or
//     clients sending faster than Redis takes it) the frame is dropped and counted as
//     wsgateway_messages_dropped_total{reason="upstream_overflow"}; the connection stays
//     open. Upstream is at-most-once in any case (the stream is trimmed whether or not a
//     backend read an entry), so closing the sender would add reconnect storms during a Redis
//     outage and buy no guarantee.
//   - It cannot fill Redis. Each node keeps its own entries in the stream within a byte
//     budget, by trimming with XADD MINID (see budget), so the stream holds at most about
//     budget × nodes bytes however large the frames.
package upstream
