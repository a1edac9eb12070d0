package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/wsgateway/wsgateway/internal/keys"
)

// sender sends pushes for one publisher stream (publisher id pub ≥ 1; 0 is the probe). Only
// its publisher goroutine uses it.
type sender struct {
	b    *bench
	pub  int
	seq  uint64
	http *httpConn
	body []byte
	data []byte
}

func (b *bench) newSender(pub int) (*sender, error) {
	s := &sender{b: b, pub: pub}
	if b.cfg.Via == "http" || b.cfg.Scenario != scLatency && b.cfg.Scenario != scCrossNode {
		h, err := newHTTPConn(b.cfg.API, b.cfg.APIKey, 10*time.Second)
		if err != nil {
			return nil, err
		}
		s.http = h
	}
	return s, nil
}

// warm opens the sender's connection before the clock starts (a GET /healthz), so the first
// pushes of the measured phase do not pay for hundreds of TCP handshakes at once.
func (s *sender) warm() error {
	if s.http == nil {
		return nil
	}
	status, _, err := s.http.do("GET", "/healthz", nil)
	// The centrifuge peer has no /healthz: any answer opened the connection.
	if err == nil && status != http.StatusOK && (s.b.cfg.Server == srvGateway || status >= 500) {
		err = fmt.Errorf("GET /healthz: HTTP %d", status)
	}
	return err
}

func (s *sender) close() {
	if s.http != nil {
		s.http.Close()
	}
}

// next returns the payload of this stream's next message, stamped with ts (ns since base).
func (s *sender) next(ts time.Duration) []byte {
	s.seq++
	s.data = appendPayload(s.data[:0], payload{pub: s.pub, seq: s.seq, ts: int64(ts)}, s.b.cfg.Payload)
	return s.data
}

// push sends data to users (one: user_id; several: user_ids) and accounts for the answer,
// which it returns when it was a 200 (valid until the next call), else nil.
func (s *sender) push(users []int, data []byte) []byte {
	b := s.body[:0]
	if len(users) == 1 {
		b = append(b, `{"user_id":"`...)
		b = append(b, s.b.cfg.UserPrefix...)
		b = strconv.AppendInt(b, int64(users[0]), 10)
		b = append(b, `","data":`...)
	} else {
		b = append(b, `{"user_ids":[`...)
		for i, u := range users {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = append(b, s.b.cfg.UserPrefix...)
			b = strconv.AppendInt(b, int64(u), 10)
			b = append(b, '"')
		}
		b = append(b, `],"data":`...)
	}
	b = append(b, data...)
	b = append(b, '}')
	return s.send(b, len(users))
}

// bulk sends one bulk push: a message of its own (the stream's next) to each of users.
func (s *sender) bulk(users []int) []byte {
	b := append(s.body[:0], `{"messages":[`...)
	for i, u := range users {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"user_id":"`...)
		b = append(b, s.b.cfg.UserPrefix...)
		b = strconv.AppendInt(b, int64(u), 10)
		b = append(b, `","data":`...)
		b = append(b, s.next(time.Since(s.b.base))...)
		b = append(b, '}')
	}
	b = append(b, `]}`...)
	return s.send(b, len(users))
}

// send posts a push body for n messages and accounts for the answer, which it returns when it
// was a 200 (valid until the next call), else nil.
func (s *sender) send(b []byte, n int) []byte {
	cnt := s.b.cnt
	s.body = b
	cnt.sent.Add(1)
	status, resp, err := s.http.do("POST", "/api/v1/push", b)
	if err != nil || status != http.StatusOK {
		cnt.sendErrs.Add(1)
		s.b.noteSendError(status, resp, err)
		return nil
	}
	cnt.accepted.Add(1)
	on := bytes.Count(resp, []byte(`"online":true`))
	if s.b.cfg.Server == srvCentrifuge {
		on = n // its answer does not say; every user is connected
	}
	cnt.expected.Add(int64(on))
	if off := n - on; off > 0 {
		cnt.offline.Add(int64(off))
	}
	return resp
}

// answeredSeq reads the seq of a single-user push's answer; 0 when there is none (a gateway
// from before the inbox).
func answeredSeq(resp []byte) int64 {
	i := bytes.Index(resp, []byte(`"seq":`))
	if i < 0 {
		return 0
	}
	n, _, ok := number(resp[i+len(`"seq":`):])
	if !ok {
		return 0
	}
	return int64(n)
}

// broadcast sends data to every connection.
func (s *sender) broadcast(data []byte) {
	cnt := s.b.cnt
	b := append(s.body[:0], `{"data":`...)
	b = append(b, data...)
	b = append(b, '}')
	s.body = b
	// Counted before the send: a delivery may arrive before the answer.
	recipients := int64(s.b.open())
	cnt.expected.Add(recipients)
	cnt.sent.Add(1)
	status, resp, err := s.http.do("POST", "/api/v1/broadcast", b)
	if err != nil || status != http.StatusOK {
		cnt.expected.Add(-recipients)
		cnt.sendErrs.Add(1)
		s.b.noteSendError(status, resp, err)
		return
	}
	cnt.accepted.Add(1)
}

// publish sends data to user straight through Redis: PUBLISH (fire-and-forget, nothing is
// stored) or FCALL wsgateway_push (the gateway's push-or-store Function).
func (s *sender) publish(ctx context.Context, user int, data []byte) {
	cnt := s.b.cnt
	u := s.b.cfg.UserPrefix + strconv.Itoa(user)
	ch := keys.Prefix(s.b.cfg.KeyPrefix).User(u)
	cnt.sent.Add(1)
	var n int64
	var err error
	if s.b.cfg.Via == "redis" {
		n, err = s.b.rdb.Publish(ctx, ch, data).Result()
	} else {
		// The Function answers [seq, receivers] (README, "Redis names").
		var v []int64
		v, err = s.b.rdb.FCall(ctx, "wsgateway_push", []string{ch, keys.Prefix(s.b.cfg.KeyPrefix).Inbox(u)}, data).Int64Slice()
		if err == nil && len(v) == 2 {
			n = v[1]
		} else if err == nil {
			err = fmt.Errorf("wsgateway_push answered %v", v)
		}
	}
	if err != nil {
		cnt.sendErrs.Add(1)
		s.b.noteSendError(0, nil, err)
		return
	}
	cnt.accepted.Add(1)
	if n > 0 {
		cnt.expected.Add(1)
	} else {
		cnt.offline.Add(1)
	}
}

// noteSendError keeps the first few send errors for the summary.
func (b *bench) noteSendError(status int, body []byte, err error) {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	if len(b.sendErrors) >= 5 {
		return
	}
	if err != nil {
		b.sendErrors = append(b.sendErrors, err.Error())
	} else {
		b.sendErrors = append(b.sendErrors, fmt.Sprintf("HTTP %d %s", status, bytes.TrimSpace(body)))
	}
}

// probe pushes one probe message (publisher 0) to every user, 1000 users per request, and
// waits until every open connection received it: then every connection is subscribed end to
// end, on whichever node it is.
func (b *bench) probe(ctx context.Context) error {
	if b.cfg.Server == srvCentrifuge {
		return b.probeCentrifuge(ctx)
	}
	h, err := newHTTPConn(b.cfg.API, b.cfg.APIKey, 30*time.Second)
	if err != nil {
		return err
	}
	defer h.Close()
	data := appendPayload(nil, payload{pub: 0, seq: 0, ts: 0}, b.cfg.Payload)
	var body []byte
	offline := 0
	for start := 0; start < len(b.fleet.clients); start += 1000 {
		body = append(body[:0], `{"user_ids":[`...)
		for i := start; i < min(start+1000, len(b.fleet.clients)); i++ {
			if i > start {
				body = append(body, ',')
			}
			body = strconv.AppendQuote(body, b.fleet.clients[i].user)
		}
		body = append(body, `],"data":`...)
		body = append(body, data...)
		body = append(body, '}')
		status, resp, err := h.do("POST", "/api/v1/push", body)
		if err != nil {
			return fmt.Errorf("probe push: %w", err)
		}
		if status != http.StatusOK {
			return fmt.Errorf("probe push: HTTP %d %s", status, resp)
		}
		offline += bytes.Count(resp, []byte(`"online":false`))
	}
	want := int64(b.open())
	err = waitFor(ctx, 30*time.Second, func() bool { return b.cnt.probes.Load() >= want })
	if err != nil {
		return fmt.Errorf("probe: %d of %d connections received it (%d users reported offline): %v",
			b.cnt.probes.Load(), want, offline, err)
	}
	if offline > 0 {
		return fmt.Errorf("probe: %d users reported offline although connected", offline)
	}
	return nil
}
