// Package events writes the events stream backends read with consumer groups (README,
// "Events"): presence changes (online, offline) and delivery (delivered, undelivered), each
// appended once, by one node.
//
// An event is appended by the script that makes the change it reports, in the same atomic
// step (Lua, emit.lua), so a crash cannot separate the two. In a Redis Cluster the stream lives
// in a slot of its own that a user's script may not touch; there the script returns the events
// and the node appends them right after (Writer.Append): a node that dies between the two loses
// those events.
package events

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lua is the snippet scripts include to emit or return events (emit.lua).
//
//go:embed emit.lua
var Lua string

// Types of events.
const (
	Online      = "online"
	Offline     = "offline"
	Delivered   = "delivered"
	Undelivered = "undelivered"
)

// MaxLen bounds the stream (XADD MAXLEN ~): about this many recent events are kept.
const MaxLen = 1_000_000

// Event is one event as a script returned it.
type Event struct {
	Type, User, Node string
	Seq              int64 // 0: none
}

// NewScript returns the Lua script body with the events snippet it calls (emit, report) in
// front, and EVENTS_MAXLEN in it replaced by MaxLen.
func NewScript(body string) *redis.Script {
	return redis.NewScript(Lua + strings.ReplaceAll(body, "EVENTS_MAXLEN", strconv.Itoa(MaxLen)))
}

// Writer appends events a script returned (Cluster mode).
type Writer struct {
	rdb    redis.UniversalClient
	stream string
}

// NewWriter returns a writer to the stream named stream (prefix + "events").
func NewWriter(rdb redis.UniversalClient, stream string) *Writer {
	return &Writer{rdb: rdb, stream: stream}
}

// Stream is the stream's key.
func (w *Writer) Stream() string { return w.stream }

// Parse reads the flat list a script returned: type, user, node, seq, repeated.
func Parse(vals []any) ([]Event, error) {
	if len(vals)%4 != 0 {
		return nil, fmt.Errorf("events: %d values, not a multiple of 4", len(vals))
	}
	out := make([]Event, 0, len(vals)/4)
	for i := 0; i < len(vals); i += 4 {
		var s [4]string
		for j := range s {
			v, ok := vals[i+j].(string)
			if !ok {
				return nil, fmt.Errorf("events: value %d is %T, not a string", i+j, vals[i+j])
			}
			s[j] = v
		}
		seq, err := strconv.ParseInt(s[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("events: seq %q: %w", s[3], err)
		}
		out = append(out, Event{Type: s[0], User: s[1], Node: s[2], Seq: seq})
	}
	return out, nil
}

// AppendReturned appends the events a script returned as a flat list (Parse), if any.
func (w *Writer) AppendReturned(ctx context.Context, vals []any) error {
	if len(vals) == 0 {
		return nil
	}
	evs, err := Parse(vals)
	if err != nil {
		return err
	}
	return w.Append(ctx, evs)
}

// Append adds evs to the stream in one pipeline.
func (w *Writer) Append(ctx context.Context, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	_, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range evs {
			values := []any{"type", e.Type, "user", e.User, "node", e.Node}
			if e.Seq > 0 {
				values = append(values, "seq", e.Seq)
			}
			p.XAdd(ctx, &redis.XAddArgs{Stream: w.stream, MaxLen: MaxLen, Approx: true, Values: append(values, "ts", ts)})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("events: append %d: %w", len(evs), err)
	}
	return nil
}
