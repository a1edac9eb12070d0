// Package client is a Go client for the wsgateway WebSocket push gateway.
//
// It speaks the gateway's wsgateway.v1 subprotocol, in which every stored message carries a
// per-user number (seq), so that nothing accepted for the user is lost across breaks:
//
//   - It remembers the seq of the last message delivered ([Client.Last]) and resumes after
//     it, with "?since=", on every reconnect. Messages the replay carries twice are dropped.
//   - It acknowledges what the application received, cumulatively ("ack <seq>") and in
//     batches: AckDelay after a message, or at once when AckEvery are waiting, and never
//     more than five acks a second, since the gateway counts them against its inbound rate
//     limit. A message is acknowledged only after it was received from [Client.Messages]; a
//     final ack goes out on [Client.Close].
//   - Messages the gateway no longer keeps are reported as an [EventGap] and skipped; a
//     position above the user's latest seq (the gateway's state for the user expired)
//     produces an [EventReset], after which numbering starts again.
//   - It sends "auth <jwt>" with a fresh token from Options.Token shortly before the
//     current token's exp (a quarter of its remaining lifetime, at most a minute, before),
//     so a long-lived connection is not closed with 4002.
//
// # Liveness
//
// A connection on which nothing at all arrives for SilenceTimeout (35 s by default, the
// gateway's ping-interval + pong-timeout) is dead, even if TCP never says so: the client
// drops it and reconnects. To tell a quiet connection from a dead one it sends the text frame
// "ping" after a third of SilenceTimeout without traffic; the gateway answers "pong", which
// is never delivered as a message.
//
// # Reconnecting and close codes
//
// Every break is followed by a new attempt, after a random wait in [0, min(ReconnectMax,
// ReconnectMin·2ⁿ)) for the n-th failure in a row ("full jitter"; the count starts again
// once a connection stayed open for StableAfter). The gateway's close codes decide:
//
//   - 1001 (node shutting down), 1013 (slow consumer; the backlog waits) and 4002 (token
//     expired): reconnect at once, within a random [0, ReconnectMin), with a new token.
//   - 4001 (disconnected by the API), 1007, 1008 and 1009 (this client sent something the
//     gateway refuses: invalid UTF-8, a refused token refresh, too many frames, a frame too
//     big): the client stops. Messages is closed and [Client.Err] returns the
//     *websocket.CloseError. Trying again would only repeat the refusal; a kicked user
//     should not come straight back.
//   - Anything else, 1006 (no close frame) and 1011 included, and every failed attempt:
//     back off and retry.
//
// Handshake refusals arrive as a [HandshakeError]: 400, 403 (origin not allowed) and 404
// stop the client as a wrong configuration would; 401, 429, 503 and the rest are retried
// (Options.Token is asked for a token before every attempt).
//
// # Raw mode
//
// With Options.Raw the client offers no subprotocol: every frame is a [Message] with Seq 0,
// there is no resume, no ack and no in-band refresh, and a message written into a socket
// that turns out to be dead is lost. The client also falls back to raw handling for a
// connection on which the gateway did not select wsgateway.v1 (see [EventConnected]).
//
// # Goroutines
//
// A client runs one goroutine that dials, waits out backoffs and writes to the socket, plus
// one reader per open connection, which that goroutine waits for before it dials again.
// [Client.Close] returns when both have ended.
//
// # Example
//
//	c, err := client.Dial(ctx, client.Options{
//		URL:   "wss://push.example.com/ws",
//		Token: func(ctx context.Context) (string, error) { return myAuth.Token(ctx) },
//		Since: savedSeq, // 0 on the first run
//	})
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//	for m := range c.Messages() {
//		handle(m.Data)
//		savedSeq = c.Last()
//	}
//	return c.Err() // nil after Close; why the gateway ended it otherwise
package client
