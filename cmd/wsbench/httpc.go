package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// httpConn is one keep-alive HTTP/1.1 connection with one request in flight: a publisher's own.
// It is much cheaper than net/http's client (no transport goroutines, no per-request maps),
// which matters because the generator shares a core with Redis. Only what the gateway's API
// answers is understood: Content-Length or chunked bodies.
type httpConn struct {
	addr    string // host:port
	host    string
	auth    string // "Authorization: Bearer …\r\n" or ""
	timeout time.Duration

	conn net.Conn
	br   *bufio.Reader
	req  []byte
	body []byte
}

func newHTTPConn(base, apiKey string, timeout time.Duration) (*httpConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("only http:// is supported for the API, got %s", base)
	}
	h := &httpConn{addr: u.Host, host: u.Host, timeout: timeout}
	if apiKey != "" {
		h.auth = "Authorization: Bearer " + apiKey + "\r\n"
	}
	return h, nil
}

// do sends one request and returns the status and the body (valid until the next call). A
// failed request is not retried (a push may have been accepted before the connection broke);
// the next call dials again.
func (h *httpConn) do(method, path string, body []byte) (int, []byte, error) {
	if h.conn == nil {
		c, err := net.DialTimeout("tcp", h.addr, h.timeout)
		if err != nil {
			return 0, nil, err
		}
		h.conn, h.br = c, bufio.NewReaderSize(c, 4096)
	}
	status, resp, err := h.roundTrip(method, path, body)
	if err != nil {
		h.Close()
	}
	return status, resp, err
}

func (h *httpConn) roundTrip(method, path string, body []byte) (int, []byte, error) {
	req := h.req[:0]
	req = append(req, method...)
	req = append(req, ' ')
	req = append(req, path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, h.host...)
	req = append(req, "\r\n"...)
	req = append(req, h.auth...)
	req = append(req, "Content-Type: application/json\r\nContent-Length: "...)
	req = strconv.AppendInt(req, int64(len(body)), 10)
	req = append(req, "\r\n\r\n"...)
	req = append(req, body...)
	h.req = req
	_ = h.conn.SetDeadline(time.Now().Add(h.timeout))
	if _, err := h.conn.Write(req); err != nil {
		return 0, nil, err
	}
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	length, chunked, closeAfter := -1, false, false
	for {
		line, err := h.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil {
				return 0, nil, fmt.Errorf("bad Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			closeAfter = bytes.EqualFold(v, []byte("close"))
		}
	}
	h.body = h.body[:0]
	switch {
	case chunked:
		if err := h.readChunked(); err != nil {
			return 0, nil, err
		}
	case length >= 0:
		if cap(h.body) < length {
			h.body = make([]byte, length)
		}
		h.body = h.body[:length]
		if _, err := io.ReadFull(h.br, h.body); err != nil {
			return 0, nil, err
		}
	default:
		return 0, nil, errors.New("response without length")
	}
	if closeAfter {
		h.Close()
	}
	return status, h.body, nil
}

func (h *httpConn) readChunked() error {
	for {
		line, err := h.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.SplitN(line, []byte(";"), 2)[0])), 16, 64)
		if err != nil || size < 0 || size > 1<<24 {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			// Trailers, then the final empty line.
			for {
				l, err := h.br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(l, "\r\n")) == 0 {
					return nil
				}
			}
		}
		start := len(h.body)
		h.body = append(h.body, make([]byte, size)...)
		if _, err := io.ReadFull(h.br, h.body[start:]); err != nil {
			return err
		}
		if _, err := h.br.Discard(2); err != nil { // CRLF after the chunk
			return err
		}
	}
}

// Close drops the connection; the next do dials again.
func (h *httpConn) Close() {
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
}
