package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The client side of the reference peer (bench/centrifuge-peer, Centrifugo's engine), for
// --server centrifuge. Its JSON protocol: after the open the client sends a connect command
// and waits for the reply with the same id; the server subscribes the user to "user:<id>"
// itself. One frame may carry several JSON objects separated by '\n'. A publication is
// {"push":{"channel":…,"pub":{"data":<the pushed JSON>,…}}}; the server's ping is {}, which
// the client answers with {}. The payload inside "data" is wsbench's own, so latency is
// measured the same way for both servers.

const centrifugePath = "/connection/websocket"

var (
	centrifugeConnect = []byte(`{"id":1,"connect":{"name":"wsbench"}}`)
	centrifugePong    = []byte(`{}`)
)

// centrifugeKind is what one JSON object of a frame is.
type centrifugeKind int

const (
	cfOther   centrifugeKind = iota
	cfPing                   // {}: answer {}
	cfReply                  // the reply to the connect command (id 1)
	cfError                  // a reply carrying an error
	cfPublish                // a publication; the data is returned
)

// centrifugeObject classifies one object of a frame; for a publication it returns the pushed
// data (what follows "data":, up to the end of the object: parsePayload reads only its start).
func centrifugeObject(obj []byte) (centrifugeKind, []byte) {
	obj = bytes.TrimSpace(obj)
	switch {
	case len(obj) == 0:
		return cfOther, nil
	case bytes.Equal(obj, centrifugePong):
		return cfPing, nil
	case bytes.HasPrefix(obj, []byte(`{"push":`)):
		i := bytes.Index(obj, []byte(`"pub":`))
		if i < 0 {
			return cfOther, nil
		}
		j := bytes.Index(obj[i:], []byte(`"data":`))
		if j < 0 {
			return cfOther, nil
		}
		return cfPublish, obj[i+j+len(`"data":`):]
	case bytes.HasPrefix(obj, []byte(`{"id":1,`)):
		if bytes.Contains(obj, []byte(`"error":`)) {
			return cfError, nil
		}
		return cfReply, nil
	}
	return cfOther, nil
}

// centrifugeObjects calls fn for every '\n'-separated object of a frame.
func centrifugeObjects(frame []byte, fn func(kind centrifugeKind, data, obj []byte)) {
	for len(frame) > 0 {
		obj, rest, _ := bytes.Cut(frame, []byte("\n"))
		frame = rest
		kind, data := centrifugeObject(obj)
		fn(kind, data, obj)
	}
}

// centrifugeHandshake sends the connect command on a fresh connection and reads until its
// reply arrived (then the user is connected and subscribed). Anything else in those frames
// goes to handle.
func centrifugeHandshake(ws *websocket.Conn, timeout time.Duration, handle func(kind centrifugeKind, data []byte)) error {
	_ = ws.SetWriteDeadline(time.Now().Add(timeout))
	if err := ws.WriteMessage(websocket.TextMessage, centrifugeConnect); err != nil {
		return fmt.Errorf("connect command: %w", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = ws.SetReadDeadline(time.Time{}); _ = ws.SetWriteDeadline(time.Time{}) }()
	for {
		_, frame, err := ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("connect reply: %w", err)
		}
		var replied bool
		var failed []byte
		centrifugeObjects(frame, func(kind centrifugeKind, data, obj []byte) {
			switch kind {
			case cfReply:
				replied = true
			case cfError:
				failed = obj
			default:
				handle(kind, data)
			}
		})
		if failed != nil {
			return fmt.Errorf("connect refused: %s", failed)
		}
		if replied {
			return nil
		}
	}
}

// probeCentrifuge pushes one probe to every user, one request each (the peer has no user_ids
// lists) over a few connections in parallel, and waits until every open connection got it.
func (b *bench) probeCentrifuge(ctx context.Context) error {
	const conns = 16
	data := appendPayload(nil, payload{pub: 0, seq: 0, ts: 0}, b.cfg.Payload)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for w := range conns {
		wg.Go(func() {
			h, err := newHTTPConn(b.cfg.API, "", 30*time.Second)
			if err != nil {
				errs[w] = err
				return
			}
			defer h.Close()
			var body []byte
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(b.fleet.clients) {
					return
				}
				body = append(body[:0], `{"user_id":`...)
				body = strconv.AppendQuote(body, b.fleet.clients[i].user)
				body = append(body, `,"data":`...)
				body = append(body, data...)
				body = append(body, '}')
				status, resp, err := h.do("POST", "/api/v1/push", body)
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("HTTP %d %s", status, resp)
				}
				if err != nil {
					errs[w] = fmt.Errorf("probe push: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	want := int64(b.open())
	if err := waitFor(ctx, 30*time.Second, func() bool { return b.cnt.probes.Load() >= want }); err != nil {
		return fmt.Errorf("probe: %d of %d connections received it: %v", b.cnt.probes.Load(), want, err)
	}
	return nil
}
