package ws

import (
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// kind tells what a queued message is, which decides how a wsgateway.v1 frame is built.
type kind uint8

const (
	kindUser      kind = iota // pushed to a user: "<seq> <payload>", or "- <payload>" unnumbered
	kindBroadcast             // broadcast: "- <payload>"
	kindPong                  // answer to the client's text "ping": "pong" in both modes
	kindControl               // wsgateway.v1 "gap …" and "reset …": sent as they are
)

// Message is one payload on its way to sockets. Data is never modified after creation, so
// one Message is shared by every connection of a user and by every receiver of a broadcast.
type Message struct {
	Data     []byte
	Seq      int64     // the number in the user's inbox (0: unnumbered); for a gap, its end
	Binary   bool      // the payload is not valid UTF-8: sent as a binary frame (docs/protocol.md)
	Received time.Time // when this node got it; the latency metric measures from here
	kind     kind
	// prepared is the frame encoded once for many connections (multi-device users and
	// broadcasts); nil for a single receiver, where a plain write is cheaper.
	prepared *websocket.PreparedMessage
}

func newMessage(data []byte, k kind, now time.Time) Message {
	return Message{Data: data, Binary: !utf8.Valid(data), Received: now, kind: k}
}

func (m Message) frameType() int {
	if m.Binary {
		return websocket.BinaryMessage
	}
	return websocket.TextMessage
}

// prepare encodes the frame once; on failure (never for valid input) the plain write is used.
func (m *Message) prepare() {
	if m.prepared != nil {
		return
	}
	if pm, err := websocket.NewPreparedMessage(m.frameType(), m.Data); err == nil {
		m.prepared = pm
	}
}
