package main

// sniffer follows the WebSocket frames of a server-to-client byte stream (never masked) as the
// client reads it, and hands the first bytes of every data message to seen once the message
// went by whole. wsbench counts what crossed the wire with it: the client package drops a
// seq it already has, so duplicates the gateway sent would not show above it. The stream
// starts with the HTTP answer to the handshake, which it skips.
type sniffer struct {
	seen func(head []byte)

	inFrames bool // past the HTTP answer
	crlf     int  // bytes of "\r\n\r\n" matched at the end of what was read so far

	hdr     [14]byte // the frame header being read
	hn      int      // header bytes read
	need    int      // header length, known once its second byte is
	left    uint64   // payload bytes of the current frame still to come
	inBody  bool     // reading a payload
	fin     bool     // the current frame ends its message
	data    bool     // the current frame belongs to a data message (not a control frame)
	head    [sniffHead]byte
	headLen int
}

// sniffHead is enough for "<seq> " and a wsbench payload up to its timestamp.
const sniffHead = 64

// feed takes the next bytes of the stream.
func (s *sniffer) feed(p []byte) {
	for !s.inFrames && len(p) > 0 {
		switch {
		case p[0] == "\r\n\r\n"[s.crlf]:
			s.crlf++
		case p[0] == '\r':
			s.crlf = 1
		default:
			s.crlf = 0
		}
		p = p[1:]
		s.inFrames = s.crlf == 4
	}
	for len(p) > 0 {
		if s.inBody {
			take := uint64(len(p))
			if take > s.left {
				take = s.left
			}
			if s.data && s.headLen < sniffHead {
				s.headLen += copy(s.head[s.headLen:], p[:take])
			}
			s.left -= take
			p = p[take:]
			if s.left == 0 {
				s.frameEnd()
			}
			continue
		}
		s.hdr[s.hn] = p[0]
		s.hn++
		p = p[1:]
		if s.hn == 2 {
			s.need = 2
			switch s.hdr[1] & 0x7f {
			case 126:
				s.need += 2
			case 127:
				s.need += 8
			}
			if s.hdr[1]&0x80 != 0 {
				s.need += 4 // a masked frame: not from a server, but skip the key all the same
			}
		}
		if s.hn >= 2 && s.hn == s.need {
			s.frameStart()
		}
	}
}

func (s *sniffer) frameStart() {
	op := s.hdr[0] & 0x0f
	s.fin = s.hdr[0]&0x80 != 0
	switch n := uint64(s.hdr[1] & 0x7f); n {
	case 126:
		s.left = uint64(s.hdr[2])<<8 | uint64(s.hdr[3])
	case 127:
		s.left = 0
		for _, b := range s.hdr[2:10] {
			s.left = s.left<<8 | uint64(b)
		}
	default:
		s.left = n
	}
	switch {
	case op == 1 || op == 2: // text or binary: a message starts
		s.data, s.headLen = true, 0
	case op == 0: // continuation of the message under way
		s.data = true
	default: // control frames come between the fragments of a message; they are not one
		s.data = false
	}
	s.hn, s.inBody = 0, true
	if s.left == 0 {
		s.frameEnd()
	}
}

func (s *sniffer) frameEnd() {
	s.inBody = false
	if s.data && s.fin {
		s.seen(s.head[:s.headLen])
		s.headLen = 0
	}
}
