package attack

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// A raw WebSocket client: frames are built by hand (RFC 6455 section 5.2) so that a test can
// send what no well-behaved library would: unmasked frames, reserved bits and opcodes,
// fragmented or oversized control frames, lengths that were never followed by a payload.

// Opcodes and the bits of a frame's first byte.
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA

	bitFIN  = 0x80
	bitRSV1 = 0x40
	bitRSV2 = 0x20
	bitRSV3 = 0x10
)

// header returns a frame header: b0 verbatim (FIN, RSV and opcode), the announced length in
// its shortest encoding and, when masked, the mask key. The payload, if any, follows
// separately, so a header may announce more than is ever sent.
func header(b0 byte, masked bool, length uint64, key [4]byte) []byte {
	h := []byte{b0, 0}
	if masked {
		h[1] = 0x80
	}
	switch {
	case length <= 125:
		h[1] |= byte(length)
	case length <= 0xFFFF:
		h[1] |= 126
		h = binary.BigEndian.AppendUint16(h, uint16(length))
	default:
		h[1] |= 127
		h = binary.BigEndian.AppendUint64(h, length)
	}
	if masked {
		h = append(h, key[:]...)
	}
	return h
}

// rawFrame returns a whole frame with first byte b0, masked with a random key when masked.
func rawFrame(b0 byte, masked bool, payload []byte) []byte {
	var key [4]byte
	if masked {
		_, _ = rand.Read(key[:])
	}
	f := header(b0, masked, uint64(len(payload)), key)
	start := len(f)
	f = append(f, payload...)
	if masked {
		for i := range payload {
			f[start+i] ^= key[i%4]
		}
	}
	return f
}

// frame is a final, masked frame: what a correct client sends.
func frame(op byte, payload []byte) []byte { return rawFrame(bitFIN|op, true, payload) }

// closeBody is a close frame's payload: the code, then the reason.
func closeBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// rawConn is a TCP connection that completed the WebSocket handshake.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

// rawDial connects from attackerIP as user (valid token) and completes the handshake.
func (g *gateway) rawDial(t *testing.T, user string) *rawConn {
	t.Helper()
	c := g.tcp(t, attackerIP)
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	k := base64.StdEncoding.EncodeToString(key)
	fmt.Fprintf(c, "GET /ws?token=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", g.sign(user), g.addr, k)
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(patience))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("handshake: HTTP %d, accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	return &rawConn{Conn: c, br: br}
}

// tcp opens a plain TCP connection to the gateway from the loopback address local.
func (g *gateway) tcp(t *testing.T, local string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: patience}
	c, err := d.Dial("tcp", g.addr)
	if err != nil {
		t.Fatalf("tcp dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (r *rawConn) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	_ = r.SetWriteDeadline(time.Now().Add(patience))
	for _, f := range frames {
		if _, err := r.Write(f); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// serverFrame is one frame the gateway sent.
type serverFrame struct {
	op      byte
	payload []byte
}

// readFrame reads one frame from the gateway, which must follow the RFC: unmasked, no RSV
// bits, control frames final and at most 125 bytes.
func (r *rawConn) readFrame() (serverFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return serverFrame{}, err
	}
	op := h[0] & 0x0F
	if h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		return serverFrame{}, fmt.Errorf("server frame with RSV bits or mask: % x", h)
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if op >= opClose && (n > 125 || h[0]&bitFIN == 0) {
		return serverFrame{}, fmt.Errorf("server control frame op %x: %d bytes, first byte %x", op, n, h[0])
	}
	if n > 1<<20 {
		return serverFrame{}, fmt.Errorf("server frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r.br, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{op: op, payload: p}, nil
}

// errNoCloseFrame means the gateway ended the TCP connection without a close frame.
var errNoCloseFrame = errors.New("connection ended without a close frame")

// closeCode reads frames until the gateway's close frame and returns its code (1005 for an
// empty one) and how many pongs came before it. Other frames are skipped.
func (r *rawConn) closeCode(t *testing.T) (code, pongs int, err error) {
	t.Helper()
	_ = r.SetReadDeadline(time.Now().Add(patience))
	for {
		f, err := r.readFrame()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				return 0, pongs, errNoCloseFrame
			}
			return 0, pongs, err
		}
		switch f.op {
		case opPong:
			pongs++
		case opClose:
			if len(f.payload) < 2 {
				return 1005, pongs, nil
			}
			return int(binary.BigEndian.Uint16(f.payload)), pongs, nil
		}
	}
}

// expectClose asserts that the gateway's next close frame carries want, then that it ends
// the TCP connection.
func (r *rawConn) expectClose(t *testing.T, want int) (pongs int) {
	t.Helper()
	code, pongs, err := r.closeCode(t)
	if err != nil {
		t.Fatalf("want close %d: %v", want, err)
	}
	if code != want {
		t.Fatalf("close code %d; want %d", code, want)
	}
	r.expectEOF(t)
	return pongs
}

// expectEOF asserts that the gateway closes the connection: nothing but EOF (or a reset)
// within patience, after at most a few stray frames.
func (r *rawConn) expectEOF(t *testing.T) {
	t.Helper()
	_ = r.SetReadDeadline(time.Now().Add(patience))
	_, err := io.Copy(io.Discard, r.br)
	if err != nil && !isReset(err) {
		t.Fatalf("want the gateway to close the connection: %v", err)
	}
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
