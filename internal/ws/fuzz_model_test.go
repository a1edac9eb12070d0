package ws_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// The fuzzers' judge (fuzz_test.go): a parser of what the gateway sent and an RFC 6455 model of
// what it should have sent.

// --- what the gateway sent ---

// fzOutcome is a WebSocket exchange as seen from the client: the control pongs in order, the
// number of text "pong" answers, and the close frame (code 1005 for an empty one, 0 for none).
type fzOutcome struct {
	Pongs     []string
	TextPongs int
	Close     int
}

// fzParseServer parses what the gateway sent, which must be well-formed server frames:
// unmasked, no RSV bits, known opcodes, control frames final and short, valid close codes,
// text only "pong", nothing after the close frame.
func fzParseServer(out []byte) (fzOutcome, error) {
	var o fzOutcome
	for len(out) > 0 {
		if o.Close != 0 {
			return o, fmt.Errorf("%d bytes after the close frame", len(out))
		}
		if len(out) < 2 {
			return o, io.ErrUnexpectedEOF
		}
		b0, b1 := out[0], out[1]
		op, n := b0&0x0F, uint64(b1&0x7F)
		out = out[2:]
		if b0&0x70 != 0 || b1&0x80 != 0 {
			return o, fmt.Errorf("RSV bits or mask in % x", []byte{b0, b1})
		}
		switch n {
		case 126, 127:
			w := 2
			if n == 127 {
				w = 8
			}
			if len(out) < w {
				return o, io.ErrUnexpectedEOF
			}
			if w == 2 {
				n = uint64(binary.BigEndian.Uint16(out))
			} else {
				n = binary.BigEndian.Uint64(out)
			}
			out = out[w:]
		}
		if uint64(len(out)) < n {
			return o, io.ErrUnexpectedEOF
		}
		p := out[:n]
		out = out[n:]
		if op >= 8 && (n > 125 || b0&0x80 == 0) {
			return o, fmt.Errorf("control frame %x: fin %v, %d bytes", op, b0&0x80 != 0, n)
		}
		switch {
		case op == 0x1 && b0&0x80 != 0 && string(p) == "pong":
			o.TextPongs++
		case op == 0xA:
			o.Pongs = append(o.Pongs, string(p))
		case op == 0x8:
			o.Close = 1005
			if len(p) == 1 {
				return o, errors.New("close frame with a 1-byte payload")
			}
			if len(p) >= 2 {
				o.Close = int(binary.BigEndian.Uint16(p))
				if !fzValidCloseCode(o.Close) || !utf8.Valid(p[2:]) {
					return o, fmt.Errorf("close frame %q", p)
				}
			}
		default:
			return o, fmt.Errorf("unexpected frame op %x fin %v: %q", op, b0&0x80 != 0, p)
		}
	}
	return o, nil
}

// matches compares what the gateway sent with the model. A reset may have cut the output
// short, so without exact only a prefix is required. Text pongs may be fewer than asked for:
// a close decided meanwhile takes precedence over queued messages.
func (o fzOutcome) matches(want fzOutcome, exact bool) error {
	if len(o.Pongs) > len(want.Pongs) || (exact && len(o.Pongs) != len(want.Pongs)) {
		return fmt.Errorf("%d pongs; want %d", len(o.Pongs), len(want.Pongs))
	}
	for i := range o.Pongs {
		if o.Pongs[i] != want.Pongs[i] {
			return fmt.Errorf("pong %d is %q; want %q", i, o.Pongs[i], want.Pongs[i])
		}
	}
	if o.TextPongs > want.TextPongs {
		return fmt.Errorf("%d text pongs; want at most %d", o.TextPongs, want.TextPongs)
	}
	if o.Close != want.Close && (exact || o.Close != 0) {
		return fmt.Errorf("close %d; want %d", o.Close, want.Close)
	}
	return nil
}

func fzValidCloseCode(c int) bool {
	return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999)
}

// --- what the gateway should send ---

// fzModel predicts the gateway's answer to the client bytes in, followed by the client's
// FIN, from RFC 6455 as gorilla implements it and docs/protocol.md: 1002 for a protocol
// violation, 1009 for a message over max-message-bytes (decided from the frame header),
// 1007 for a text message that is not UTF-8, the peer's own code echoed for a valid close,
// pongs for pings (control and the text "ping"), and no close frame when the input ends
// mid-frame or announces a length that does not fit in 63 bits.
func fzModel(in []byte) fzOutcome {
	var o fzOutcome
	inMessage, text := false, false
	var msg []byte
	msgLen := int64(0)
	for {
		if len(in) < 2 {
			return o // EOF at or inside a frame header: the read ends, no close frame
		}
		b0, b1 := in[0], in[1]
		in = in[2:]
		fin, op, masked, n7 := b0&0x80 != 0, b0&0x0F, b1&0x80 != 0, int64(b1&0x7F)
		control := op >= 8
		bad := b0&0x70 != 0 || !masked
		switch op {
		case 0x8, 0x9, 0xA:
			bad = bad || n7 > 125 || !fin
		case 0x1, 0x2:
			bad = bad || inMessage
		case 0x0:
			bad = bad || !inMessage
		default:
			bad = true
		}
		if bad {
			o.Close = 1002
			return o
		}
		n := n7
		if n7 == 126 || n7 == 127 {
			w := 2
			if n7 == 127 {
				w = 8
			}
			if len(in) < w {
				return o
			}
			if w == 2 {
				n = int64(binary.BigEndian.Uint16(in))
			} else {
				u := binary.BigEndian.Uint64(in)
				if u>>63 != 0 {
					return o // gorilla: ErrReadLimit, and no close frame
				}
				n = int64(u)
			}
			in = in[w:]
		}
		if len(in) < 4 {
			return o
		}
		key := [4]byte(in[:4])
		in = in[4:]
		if !control {
			if op != 0 {
				msgLen, msg, text = 0, msg[:0], op == 0x1
			}
			if msgLen+n < 0 {
				return o // overflow: ErrReadLimit without a close frame
			}
			msgLen += n
			if msgLen > fzMaxMessage {
				o.Close = 1009
				return o
			}
			inMessage = !fin
		}
		if int64(len(in)) < n {
			return o
		}
		p := bytes.Clone(in[:n])
		in = in[n:]
		for i := range p {
			p[i] ^= key[i%4]
		}
		switch op {
		case 0x9:
			o.Pongs = append(o.Pongs, string(p))
		case 0x8:
			switch {
			case len(p) < 2:
				o.Close = 1005 // answered with an empty close frame
			case !fzValidReceivedCode(int(binary.BigEndian.Uint16(p))) || !utf8.Valid(p[2:]):
				o.Close = 1002
			default:
				o.Close = int(binary.BigEndian.Uint16(p))
			}
			return o
		case 0x0, 0x1, 0x2:
			msg = append(msg, p...)
			if !fin {
				continue
			}
			if text && !utf8.Valid(msg) {
				o.Close = 1007
				return o
			}
			if text && string(msg) == "ping" {
				o.TextPongs++
			}
		}
	}
}

// fzValidReceivedCode is gorilla's set of close codes a peer may send.
func fzValidReceivedCode(c int) bool {
	switch c {
	case 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013:
		return true
	}
	return c >= 3000 && c <= 4999
}

// --- seeds ---

// fzFrame is a masked client frame with first byte b0.
func fzFrame(b0 byte, payload []byte) []byte {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	var f []byte
	switch n := len(payload); {
	case n <= 125:
		f = []byte{b0, 0x80 | byte(n)}
	case n <= 0xFFFF:
		f = binary.BigEndian.AppendUint16([]byte{b0, 0x80 | 126}, uint16(n))
	default:
		f = binary.BigEndian.AppendUint64([]byte{b0, 0x80 | 127}, uint64(n))
	}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i%4])
	}
	return f
}

func fzFrameSeeds() [][]byte {
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	closeBody := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	return [][]byte{
		{},
		fzFrame(0x81, []byte("hello")),
		fzFrame(0x81, []byte("ping")),
		cat(fzFrame(0x81, []byte("ping")), fzFrame(0x81, []byte("ping")), fzFrame(0x88, closeBody(1000, ""))),
		fzFrame(0x82, []byte{0, 1, 2, 0xff}),
		cat(fzFrame(0x89, []byte("are you there")), fzFrame(0x8A, nil)),
		fzFrame(0x88, closeBody(1000, "bye")),
		fzFrame(0x88, closeBody(4001, "")),
		fzFrame(0x88, nil),
		fzFrame(0x88, []byte{3}),
		fzFrame(0x88, closeBody(1005, "")),
		fzFrame(0x88, closeBody(999, "")),
		fzFrame(0x88, closeBody(5000, "")),
		fzFrame(0x88, closeBody(1000, "\xff")),
		fzFrame(0x81, []byte("\xff\xfe")),
		cat(fzFrame(0x01, []byte("h\xc3")), fzFrame(0x89, []byte("x")), fzFrame(0x80, []byte("\xa9llo"))),
		cat(fzFrame(0x01, []byte("a")), fzFrame(0x81, []byte("b"))),
		fzFrame(0x80, []byte("orphan continuation")),
		fzFrame(0x09, []byte("fragmented ping")),
		fzFrame(0x89, bytes.Repeat([]byte("p"), 126)),
		fzFrame(0x83, nil),
		fzFrame(0x8B, nil),
		fzFrame(0xC1, []byte("rsv1")),
		fzFrame(0xA2, []byte("rsv2")),
		{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'},                  // unmasked
		fzFrame(0x82, make([]byte, fzMaxMessage)),              // exactly the limit
		fzFrame(0x82, make([]byte, fzMaxMessage+1)),            // one over
		{0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4},    // 1 GiB announced
		{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},    // top bit set
		{0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}, // non-minimal length, cut short
		fzFrame(0x81, []byte("hello"))[:4],
	}
}
