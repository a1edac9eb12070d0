package client

import (
	"bytes"
	"errors"
	"strconv"
)

// frameKind says which of the server's wsgateway.v1 frames a WebSocket message is.
type frameKind int

const (
	frameNumbered   frameKind = iota + 1 // "<seq> <payload>": a stored message
	frameUnnumbered                      // "- <payload>": broadcast or raw PUBLISH
	frameGap                             // "gap <from> <to>": those messages are gone
	frameReset                           // "reset <latest>": the position is above the user's latest seq
	framePong                            // "pong": the answer to our text "ping"
)

// frame is one parsed server frame. payload aliases the WebSocket message it came from.
type frame struct {
	kind     frameKind
	seq      int64 // frameNumbered
	from, to int64 // frameGap
	latest   int64 // frameReset
	payload  []byte
}

var errMalformed = errors.New("malformed wsgateway.v1 frame")

// parseFrame reads one server frame. The payload of a message is everything after the first
// space, byte for byte, so a payload may itself contain spaces, newlines or any binary data.
// A numbered or unnumbered frame without the space carries an empty payload; the gateway
// never sends one (a pushed payload is JSON), but nothing is gained by refusing it.
func parseFrame(data []byte) (frame, error) {
	head, payload, _ := bytes.Cut(data, []byte{' '})
	switch {
	case len(head) > 0 && head[0] >= '0' && head[0] <= '9':
		seq, ok := parseSeq(head)
		if !ok || seq == 0 {
			return frame{}, errMalformed
		}
		return frame{kind: frameNumbered, seq: seq, payload: payload}, nil
	case string(head) == "-":
		return frame{kind: frameUnnumbered, payload: payload}, nil
	case string(head) == "pong" && len(data) == len("pong"):
		return frame{kind: framePong}, nil
	case string(head) == "gap":
		a, b, ok := bytes.Cut(payload, []byte{' '})
		from, ok1 := parseSeq(a)
		to, ok2 := parseSeq(b)
		if !ok || !ok1 || !ok2 || from == 0 || to < from {
			return frame{}, errMalformed
		}
		return frame{kind: frameGap, from: from, to: to}, nil
	case string(head) == "reset":
		latest, ok := parseSeq(payload)
		if !ok {
			return frame{}, errMalformed
		}
		return frame{kind: frameReset, latest: latest}, nil
	}
	return frame{}, errMalformed
}

// parseSeq accepts only plain decimal digits: strconv alone would also take a sign, and a
// "+5" or "-5" from the server is a bug to notice, not a number to use.
func parseSeq(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}
