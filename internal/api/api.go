// Package api is the backend-facing HTTP API (README "HTTP API", docs/protocol.md): push,
// broadcast, kick and presence under /api/v1, behind bearer API keys. It declares what it needs
// from the rest of the gateway (Pusher, Bus) and knows nothing of Redis or WebSockets.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/gin-gonic/gin"
)

// MaxBody is the largest request body accepted; larger → 413.
const MaxBody = 1 << 20

// MaxUsers is the most user ids one push may name, and the most messages of a bulk push.
const MaxUsers = 1000

// Pusher numbers a message for each user, keeps it in the user's inbox and delivers it live
// where the user is connected.
type Pusher interface {
	Push(ctx context.Context, user string, data []byte, o PushOptions) (PushResult, error)
	// PushBatch answers each message on its own, in order: a message whose push failed gets
	// Err. Messages to one user are numbered in their order.
	PushBatch(ctx context.Context, msgs []Message) []PushResult
}

// Message is one push of a batch.
type Message struct {
	User string
	Data []byte
	PushOptions
}

// PushOptions are a push's "id" (idempotent per user when not empty) and "receipt" (a
// delivered event at the first acknowledgement).
type PushOptions struct {
	ID      string
	Receipt bool
}

// PushResult is the outcome of a push to one user.
type PushResult struct {
	Seq       int64 // the message's number for the user
	Online    bool  // a node took it live
	Duplicate bool  // the id was used before: nothing was stored or sent
	Err       error
}

// Bus carries the cluster-wide operations.
type Bus interface {
	Broadcast(ctx context.Context, data []byte) error
	Kick(ctx context.Context, user string) error
}

// Presence counts a user's live connections across the deployment.
type Presence interface {
	Count(ctx context.Context, user string) (conns, nodes int, err error)
}

// Observer counts requests and offline stores, for metrics.
type Observer interface {
	Request(route string, status int)
	StoredOffline(n int)
}

// Options configure the API.
type Options struct {
	Pusher   Pusher
	Bus      Bus
	Presence Presence
	// CheckKey validates the Authorization header; nil leaves the API open (--dev).
	CheckKey func(authorization string) bool
	// ValidUser reports whether a user id is well-formed.
	ValidUser func(string) bool
	Observer  Observer
}

type api struct{ Options }

// Register adds the /api/v1 routes to r.
func Register(r gin.IRouter, o Options) {
	a := &api{o}
	g := r.Group("/api/v1", a.authorize)
	g.POST("/push", a.push)
	g.POST("/broadcast", a.broadcast)
	g.DELETE("/users/:id/connections", a.kick)
	g.GET("/users/:id/presence", a.presence)
}

func (a *api) authorize(c *gin.Context) {
	if a.CheckKey != nil && !a.CheckKey(c.GetHeader("Authorization")) {
		c.Header("WWW-Authenticate", `Bearer realm="wsgateway"`)
		a.fail(c, http.StatusUnauthorized, "missing or invalid API key")
		return
	}
	c.Next()
	if a.Observer != nil {
		a.Observer.Request(c.FullPath(), c.Writer.Status())
	}
}

func (a *api) fail(c *gin.Context, status int, msg string) {
	if status == http.StatusUnauthorized && a.Observer != nil {
		a.Observer.Request(c.FullPath(), status)
	}
	c.AbortWithStatusJSON(status, gin.H{"error": msg})
}

// pushRequest is a push to one user (user_id), one message to many (user_ids), or a bulk push
// (messages: many messages, each to its own user).
type pushRequest struct {
	UserID   string          `json:"user_id"`
	UserIDs  []string        `json:"user_ids"`
	Data     json.RawMessage `json:"data"`
	ID       string          `json:"id"`
	Receipt  bool            `json:"receipt"`
	Messages []bulkMessage   `json:"messages"`
}

// bulkMessage is one message of a bulk push.
type bulkMessage struct {
	UserID  string          `json:"user_id"`
	Data    json.RawMessage `json:"data"`
	ID      string          `json:"id"`
	Receipt bool            `json:"receipt"`
}

// bodyPool holds the buffers request bodies are read into. Nothing decoded from a body
// aliases its buffer: json.Unmarshal copies strings and RawMessage values.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody: a buffer that grew beyond this for one big body is left to the GC.
const maxPooledBody = 64 << 10

// decode reads a JSON body of at most MaxBody bytes into v; false means it already answered.
// The body is read whole into a pooled buffer and decoded with json.Unmarshal, which is
// cheaper than a json.Decoder: no decoder, no growing read buffer, no second scan for what
// follows the value.
func (a *api) decode(c *gin.Context, v any) bool {
	buf := bodyPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBody {
			buf.Reset()
			bodyPool.Put(buf)
		}
	}()
	if n := c.Request.ContentLength; n > 0 && n <= MaxBody {
		buf.Grow(int(n) + bytes.MinRead) // one read to EOF, no regrowth
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, MaxBody)
	if _, err := buf.ReadFrom(c.Request.Body); err != nil {
		// Reading failed (over 1 MiB, too slow, connection lost). Answer as the streaming
		// decoder always did: run it on the bytes that arrived, then the same error, so that
		// a body already malformed before that point is still a 400, not a 413 or 408.
		return a.decodeStream(c, io.MultiReader(bytes.NewReader(buf.Bytes()), errReader{err}), v)
	}
	// With the whole body in hand, Unmarshal accepts and refuses exactly what Decode plus
	// the io.EOF check below did: one JSON value, surrounded by whitespace at most.
	if err := json.Unmarshal(buf.Bytes(), v); err != nil {
		a.fail(c, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return false
	}
	return true
}

// errReader returns err, after what came before it in an io.MultiReader.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// decodeStream decodes one JSON value of at most MaxBody bytes from body into v, with a
// json.Decoder that reads only as far as it needs; false means it already answered.
func (a *api) decodeStream(c *gin.Context, body io.Reader, v any) bool {
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			a.fail(c, http.StatusRequestEntityTooLarge, "body larger than 1 MiB")
			return false
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			a.fail(c, http.StatusRequestTimeout, "request body did not arrive in time")
			return false
		}
		a.fail(c, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return false
	}
	// One JSON value only: trailing garbage is as malformed as a broken value.
	// Only io.EOF means nothing follows; a syntax error there ("{…} x") is malformed too.
	if _, err := dec.Token(); errors.As(err, new(*http.MaxBytesError)) {
		a.fail(c, http.StatusRequestEntityTooLarge, "body larger than 1 MiB")
		return false
	} else if !errors.Is(err, io.EOF) {
		a.fail(c, http.StatusBadRequest, "malformed JSON: something follows the value")
		return false
	}
	return true
}

func missingData(d json.RawMessage) bool { return len(d) == 0 || string(d) == "null" }

func (a *api) push(c *gin.Context) {
	var req pushRequest
	if !a.decode(c, &req) {
		return
	}
	msgs, msg := a.messages(req)
	if msg != "" {
		a.fail(c, http.StatusBadRequest, msg)
		return
	}
	var results []PushResult
	if len(msgs) == 1 {
		r, err := a.Pusher.Push(c.Request.Context(), msgs[0].User, msgs[0].Data, msgs[0].PushOptions)
		r.Err = err
		results = []PushResult{r}
	} else {
		results = a.Pusher.PushBatch(c.Request.Context(), msgs)
	}
	accepted, queued := 0, 0
	for _, r := range results {
		if r.Err == nil {
			accepted++
			if !r.Online && !r.Duplicate {
				queued++
			}
		}
	}
	if accepted == 0 {
		a.fail(c, http.StatusServiceUnavailable, "redis unavailable, nothing was accepted")
		return
	}
	if queued > 0 && a.Observer != nil {
		a.Observer.StoredOffline(queued)
	}
	writeResults(c, msgs, results)
}

// messages validates a push request and returns its messages, or what is wrong with it.
func (a *api) messages(req pushRequest) ([]Message, string) {
	if req.Messages != nil {
		return a.bulk(req)
	}
	if missingData(req.Data) {
		return nil, "data is required"
	}
	users, msg := a.users(req)
	if msg != "" {
		return nil, msg
	}
	if req.ID != "" && !a.ValidUser(req.ID) {
		return nil, "id must be 1-128 bytes of A-Z a-z 0-9 _ . : @ -"
	}
	o := PushOptions{ID: req.ID, Receipt: req.Receipt}
	msgs := make([]Message, len(users))
	for i, u := range users {
		msgs[i] = Message{User: u, Data: req.Data, PushOptions: o}
	}
	return msgs, ""
}

// bulk validates a bulk push: messages alone (no user_id, user_ids, data, id or receipt beside
// it), 1 to MaxUsers of them, each with a valid user_id, data and optional id. A user may get
// several messages; they are numbered in their order.
func (a *api) bulk(req pushRequest) ([]Message, string) {
	switch {
	case req.UserID != "" || req.UserIDs != nil || req.Data != nil || req.ID != "" || req.Receipt:
		return nil, "give messages alone: each message has its own user_id, data, id and receipt"
	case len(req.Messages) == 0:
		return nil, "messages is empty"
	case len(req.Messages) > MaxUsers:
		return nil, "messages may hold at most 1000 messages"
	}
	msgs := make([]Message, len(req.Messages))
	for i, m := range req.Messages {
		at := "messages[" + strconv.Itoa(i) + "]: "
		switch {
		case !a.ValidUser(m.UserID):
			return nil, at + "user_id must be 1-128 bytes of A-Z a-z 0-9 _ . : @ -"
		case missingData(m.Data):
			return nil, at + "data is required"
		case m.ID != "" && !a.ValidUser(m.ID):
			return nil, at + "id must be 1-128 bytes of A-Z a-z 0-9 _ . : @ -"
		}
		msgs[i] = Message{User: m.UserID, Data: m.Data, PushOptions: PushOptions{ID: m.ID, Receipt: m.Receipt}}
	}
	return msgs, ""
}

// jsonContentType is what gin's c.JSON sends.
var jsonContentType = []string{"application/json; charset=utf-8"}

// writeResults answers 200 {"results": [{"user_id": …, "seq": …, "online": …, "queued": …}, …]},
// one per message in its order (with "duplicate": true for a repeated id, or only "error" for a
// message whose push failed),
// built by hand: user ids are valid ids (A-Z a-z 0-9 _ . : @ -, auth.ValidUserID), so none
// needs escaping. "queued" means no node took it live: it waits in the user's inbox.
func writeResults(c *gin.Context, msgs []Message, results []PushResult) {
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.WriteString(`{"results":[`)
	for i, m := range msgs {
		r := results[i]
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"user_id":"`)
		buf.WriteString(m.User)
		if r.Err != nil {
			buf.WriteString(`","error":"redis unavailable, not accepted"}`)
			continue
		}
		buf.WriteString(`","seq":`)
		buf.Write(strconv.AppendInt(buf.AvailableBuffer(), r.Seq, 10))
		switch {
		case r.Duplicate:
			buf.WriteString(`,"online":false,"queued":false,"duplicate":true`)
		case r.Online:
			buf.WriteString(`,"online":true,"queued":false`)
		default:
			buf.WriteString(`,"online":false,"queued":true`)
		}
		buf.WriteByte('}')
	}
	buf.WriteString(`]}`)
	h := c.Writer.Header()
	if len(h["Content-Type"]) == 0 {
		h["Content-Type"] = jsonContentType
	}
	c.Status(http.StatusOK)
	_, _ = c.Writer.Write(buf.Bytes())
	if buf.Cap() <= maxPooledBody {
		buf.Reset()
		bodyPool.Put(buf)
	}
}

// users validates the recipients: exactly one of user_id and user_ids, each well-formed,
// at most MaxUsers, duplicates removed (a user gets one copy).
func (a *api) users(req pushRequest) ([]string, string) {
	switch {
	case req.UserID != "" && req.UserIDs != nil:
		return nil, "give user_id or user_ids, not both"
	case req.UserID != "":
		if !a.ValidUser(req.UserID) {
			return nil, "user_id must be 1-128 bytes of A-Z a-z 0-9 _ . : @ -"
		}
		return []string{req.UserID}, ""
	case len(req.UserIDs) == 0:
		return nil, "user_id or user_ids is required"
	case len(req.UserIDs) > MaxUsers:
		return nil, "user_ids may name at most 1000 users"
	}
	seen := make(map[string]struct{}, len(req.UserIDs))
	out := make([]string, 0, len(req.UserIDs))
	for _, u := range req.UserIDs {
		if !a.ValidUser(u) {
			return nil, "user_ids: invalid user id " + quoteShort(u)
		}
		if _, dup := seen[u]; !dup {
			seen[u] = struct{}{}
			out = append(out, u)
		}
	}
	return out, ""
}

func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func (a *api) broadcast(c *gin.Context) {
	var req struct {
		Data json.RawMessage `json:"data"`
	}
	if !a.decode(c, &req) {
		return
	}
	if missingData(req.Data) {
		a.fail(c, http.StatusBadRequest, "data is required")
		return
	}
	if err := a.Bus.Broadcast(c.Request.Context(), req.Data); err != nil {
		a.fail(c, http.StatusServiceUnavailable, "redis unavailable, nothing was sent")
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (a *api) userParam(c *gin.Context) (string, bool) {
	id := c.Param("id")
	if !a.ValidUser(id) {
		a.fail(c, http.StatusBadRequest, "user id must be 1-128 bytes of A-Z a-z 0-9 _ . : @ -")
		return "", false
	}
	return id, true
}

func (a *api) kick(c *gin.Context) {
	id, ok := a.userParam(c)
	if !ok {
		return
	}
	if err := a.Bus.Kick(c.Request.Context(), id); err != nil {
		a.fail(c, http.StatusServiceUnavailable, "redis unavailable")
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (a *api) presence(c *gin.Context) {
	id, ok := a.userParam(c)
	if !ok {
		return
	}
	conns, nodes, err := a.Presence.Count(c.Request.Context(), id)
	if err != nil {
		a.fail(c, http.StatusServiceUnavailable, "redis unavailable")
		return
	}
	c.JSON(http.StatusOK, gin.H{"online": conns > 0, "connections": conns, "nodes": nodes})
}
