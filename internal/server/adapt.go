package server

import (
	"context"

	"github.com/wsgateway/wsgateway/internal/api"
	"github.com/wsgateway/wsgateway/internal/inbox"
	"github.com/wsgateway/wsgateway/internal/presence"
	"github.com/wsgateway/wsgateway/internal/ws"
)

// store is what the server needs from either inbox (inbox.Redis, inbox.Memory). The hub and
// the API each declare what they need in their own types; the adapters below translate.
type store interface {
	Push(ctx context.Context, user string, data []byte, o inbox.PushOptions) (inbox.Result, error)
	PushBatch(ctx context.Context, msgs []inbox.Message) []inbox.Result
	Read(ctx context.Context, user string, after int64) (inbox.Range, error)
	Ack(ctx context.Context, user string, seq int64) error
}

// hubInbox is a store as the hub sees it.
type hubInbox struct{ s store }

func (h hubInbox) Read(ctx context.Context, user string, after int64) (ws.Backlog, error) {
	r, err := h.s.Read(ctx, user, after)
	return ws.Backlog{Latest: r.Latest, First: r.First, Acked: r.Acked, Start: r.Start, Msgs: r.Msgs}, err
}

func (h hubInbox) Ack(ctx context.Context, user string, seq int64) error {
	return h.s.Ack(ctx, user, seq)
}

// apiPusher is a store as the API sees it.
type apiPusher struct{ s store }

func (p apiPusher) Push(ctx context.Context, user string, data []byte, o api.PushOptions) (api.PushResult, error) {
	r, err := p.s.Push(ctx, user, data, inbox.PushOptions(o))
	return apiResult(r), err
}

func (p apiPusher) PushBatch(ctx context.Context, msgs []api.Message) []api.PushResult {
	in := make([]inbox.Message, len(msgs))
	for i, m := range msgs {
		in[i] = inbox.Message{User: m.User, Data: m.Data, PushOptions: inbox.PushOptions(m.PushOptions)}
	}
	rs := p.s.PushBatch(ctx, in)
	out := make([]api.PushResult, len(rs))
	for i, r := range rs {
		out[i] = apiResult(r)
	}
	return out
}

func apiResult(r inbox.Result) api.PushResult {
	return api.PushResult{Seq: r.Seq, Online: r.Receivers > 0, Duplicate: r.Duplicate, Err: r.Err}
}

// hubPresence is this node's count, the whole deployment's in in-memory mode.
type hubPresence struct{ h *ws.Hub }

func (p hubPresence) Count(_ context.Context, user string) (conns, nodes int, err error) {
	n := p.h.UserConns(user)
	return n, min(n, 1), nil
}

// Compile-time checks that the adapters fit their consumers.
var (
	_ ws.Inbox     = hubInbox{}
	_ api.Pusher   = apiPusher{}
	_ store        = (*inbox.Redis)(nil)
	_ store        = (*inbox.Memory)(nil)
	_ ws.Presence  = (*presence.Redis)(nil)
	_ api.Presence = (*presence.Redis)(nil)
	_ api.Presence = hubPresence{}
)
