package wsclient

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// Kind is what a wsgateway.v1 frame from the server is (docs/protocol.md).
type Kind int

const (
	Numbered   Kind = iota // "<seq> <payload>": a stored message
	Unnumbered             // "- <payload>": a broadcast or a PUBLISH to the user's channel
	Gap                    // "gap <from> <to>": messages no longer kept
	Reset                  // "reset <latest>": since was above the user's latest number
	Pong                   // "pong": the answer to "ping"
)

// Frame is one parsed wsgateway.v1 server frame.
type Frame struct {
	Kind    Kind
	Seq     int64 // Numbered: its number; Gap: from; Reset: latest
	To      int64 // Gap: to
	Payload string
}

// String is the frame as the server writes it.
func (f Frame) String() string {
	switch f.Kind {
	case Numbered:
		return fmt.Sprintf("%d %s", f.Seq, f.Payload)
	case Unnumbered:
		return "- " + f.Payload
	case Gap:
		return fmt.Sprintf("gap %d %d", f.Seq, f.To)
	case Reset:
		return fmt.Sprintf("reset %d", f.Seq)
	default:
		return "pong"
	}
}

// Parse reads one wsgateway.v1 server frame.
func Parse(s string) (Frame, error) {
	head, rest, _ := strings.Cut(s, " ")
	num := func(w string) (int64, error) {
		n, err := strconv.ParseInt(w, 10, 64)
		if err == nil && n < 0 {
			err = fmt.Errorf("negative %d", n)
		}
		return n, err
	}
	switch head {
	case "pong":
		if rest == "" {
			return Frame{Kind: Pong}, nil
		}
	case "-":
		return Frame{Kind: Unnumbered, Payload: rest}, nil
	case "gap":
		a, b, ok := strings.Cut(rest, " ")
		from, err1 := num(a)
		to, err2 := num(b)
		if ok && err1 == nil && err2 == nil && from <= to {
			return Frame{Kind: Gap, Seq: from, To: to}, nil
		}
	case "reset":
		if n, err := num(rest); err == nil {
			return Frame{Kind: Reset, Seq: n}, nil
		}
	default:
		if n, err := num(head); err == nil && n > 0 && strings.Contains(s, " ") {
			return Frame{Kind: Numbered, Seq: n, Payload: rest}, nil
		}
	}
	return Frame{}, fmt.Errorf("not a wsgateway.v1 frame: %.80q", s)
}

// NextV1 reads and parses the next frame, failing tb when it is not a wsgateway.v1 frame.
func (c *Conn) NextV1(tb testing.TB) Frame {
	tb.Helper()
	f, err := Parse(c.NextText(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// ExpectV1 reads the next frame and checks that it is want, written as the server writes it
// ("3 {\"a\":1}", "gap 1 4", …).
func (c *Conn) ExpectV1(tb testing.TB, want string) Frame {
	tb.Helper()
	f := c.NextV1(tb)
	if f.String() != want {
		tb.Fatalf("next frame %q, want %q", f, want)
	}
	return f
}

// Ack acknowledges every message up to seq.
func (c *Conn) Ack(tb testing.TB, seq int64) {
	tb.Helper()
	c.Send(tb, "ack "+strconv.FormatInt(seq, 10))
}

// Counter is a client that only counts what it reads, for benchmarks: its reader discards
// every message so the gateway never sees a slow consumer.
type Counter struct {
	N      atomic.Int64 // messages read
	Closed atomic.Bool  // the connection ended
}

// Count connects like [MustDial] and counts the messages read by a goroutine of its own; the
// test's clean-up closes the connection and waits for that reader.
func Count(tb testing.TB, addr string, o Options) *Counter {
	tb.Helper()
	c, resp, err := Dial(addr, o)
	if err != nil {
		tb.Fatalf("dial %s: %v (%s)", redact(URL(addr, o)), err, Describe(resp))
	}
	cnt := &Counter{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cnt.Closed.Store(true)
		for {
			_, r, err := c.NextReader()
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
			cnt.N.Add(1)
		}
	}()
	tb.Cleanup(func() { c.Close(); <-done })
	return cnt
}
