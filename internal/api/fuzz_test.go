package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/wsgateway/wsgateway/internal/api"
	"github.com/wsgateway/wsgateway/internal/auth"
	"github.com/wsgateway/wsgateway/internal/bus"
	"github.com/wsgateway/wsgateway/internal/inbox"
)

// The fuzzers drive the real routes (api.Register on a gin engine) over the in-memory bus and
// inbox, one fresh set per input, and check what the API promises for any body: a 200, 400 or
// 413 with JSON, never a panic; on 200 the `data` bytes exactly as sent, stored once per
// distinct valid user as its message 1 and delivered live to the online ones; on an error
// nothing delivered or stored.

// fzOnline are the users with a live connection in every fuzz run.
var fzOnline = []string{"alice", "u-1"}

// fzSink is the hub's side of the in-memory bus: it records what the bus delivered.
type fzSink struct {
	mu        sync.Mutex
	delivered map[string][][]byte
	broadcast [][]byte
}

func (s *fzSink) Deliver(user string, _ int64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delivered[user] = append(s.delivered[user], bytes.Clone(data))
}

func (s *fzSink) Broadcast(data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.broadcast = append(s.broadcast, bytes.Clone(data))
}

func (s *fzSink) Kick(string) {}
func (s *fzSink) Resync()     {}

// fzPresence counts nobody.
type fzPresence struct{}

func (fzPresence) Count(context.Context, string) (int, int, error) { return 0, 0, nil }

// fzPusher is the in-memory inbox as the API sees it (the server has the same adapter).
type fzPusher struct{ *inbox.Memory }

func (p fzPusher) Push(ctx context.Context, user string, data []byte, o api.PushOptions) (api.PushResult, error) {
	r, err := p.Memory.Push(ctx, user, data, inbox.PushOptions(o))
	return api.PushResult{Seq: r.Seq, Online: r.Receivers > 0, Duplicate: r.Duplicate}, err
}

func (p fzPusher) PushBatch(ctx context.Context, msgs []api.Message) []api.PushResult {
	out := make([]api.PushResult, len(msgs))
	for i, m := range msgs {
		out[i], out[i].Err = p.Push(ctx, m.User, m.Data, m.PushOptions)
	}
	return out
}

type fzGateway struct {
	engine *gin.Engine
	sink   *fzSink
	store  *inbox.Memory
}

func fzNew(tb testing.TB) *fzGateway {
	tb.Helper()
	gin.SetMode(gin.ReleaseMode)
	sink := &fzSink{delivered: map[string][][]byte{}}
	mb := bus.NewMemory()
	mb.Start(sink)
	for _, u := range fzOnline {
		if err := mb.Subscribe(context.Background(), u); err != nil {
			tb.Fatal(err)
		}
	}
	store := inbox.NewMemory(mb.Publish, inbox.Options{Max: 1000, TTL: time.Hour}, nil)
	r := gin.New() // no recovery middleware: a panic fails the fuzzer
	api.Register(r, api.Options{
		Pusher: fzPusher{store}, Bus: mb, Presence: fzPresence{}, ValidUser: auth.ValidUserID,
		CheckKey: func(h string) bool { return h == "Bearer k" },
	})
	return &fzGateway{engine: r, sink: sink, store: store}
}

func (g *fzGateway) do(method, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "http://gw"+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	g.engine.ServeHTTP(w, req)
	return w
}

// fzCheckError asserts the shape of a refusal: {"error": "…"} with a 400 or 413.
func fzCheckError(t *testing.T, w *httptest.ResponseRecorder, body []byte) {
	t.Helper()
	if w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("HTTP %d for body %q: %s", w.Code, body, w.Body)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("HTTP %d with body %q, not {\"error\": …}", w.Code, w.Body)
	}
}

// fzCheckData asserts that data is what `data` was in body: valid JSON, not null, and its
// exact bytes (the API delivers "the JSON text of data, byte for byte as sent").
func fzCheckData(t *testing.T, body, data []byte) {
	t.Helper()
	if len(data) == 0 || string(data) == "null" || !json.Valid(data) || !bytes.Contains(body, data) {
		t.Fatalf("accepted data %q from body %q", data, body)
	}
}

// fzSeeds are bodies from the README, docs/protocol.md and the edges of the checks.
var fzSeeds = []string{
	`{"user_id":"alice","data":{"text":"hi"}}`,
	`{"user_ids":["alice","bob"],"data":[1,2,3]}`,
	`{"data":"to everyone online"}`,
	`{"user_id":"bob","data":"hello"}`,
	`{"user_ids":["alice","alice","u-1","x@y.z"],"data":{"n":1.5e3,"s":"\u00e9\ud83d\ude00"}}`,
	`{"user_id":"alice","user_ids":["bob"],"data":1}`,
	`{"user_id":"a b","data":1}`,
	`{"user_ids":[],"data":1}`,
	`{"user_ids":null,"user_id":"alice","data":true}`,
	`{"user_id":"alice"}`,
	`{"user_id":"alice","data":null}`,
	`{"user_id":"alice","data":1} {"x":1}`,
	`{"user_id":"alice","data":1}garbage`,
	`{"user_id":"alice","data":"\xff\xfe"}`,
	`{"USER_ID":"alice","Data":  [ 1 , 2 ] }`,
	`{"user_id":"alice","data":1,"data":2}`,
	`{"user_id":"{alice}","data":1}`,
	`{"messages":[{"user_id":"alice","data":1},{"user_id":"bob","data":{"x":2}},{"user_id":"alice","data":"again","id":"m-1"},{"user_id":"alice","data":3,"id":"m-1"}]}`,
	`{"messages":[]}`, `{"messages":{}}`, `{"messages":[{"user_id":"alice"}]}`, `{"messages":[{"data":1}]}`,
	`{"messages":[{"user_id":"alice","data":1}],"data":2}`, `{"messages":[{"user_id":"alice","data":1,"id":"a b"}]}`,
	`[]`, `null`, ``, `{`, `"x"`,
}

// fzBodies fuzzes POST bodies to path, seeded with fzSeeds, on a new gateway each; check judges
// the answer w.
func fzBodies(f *testing.F, path string, check func(t *testing.T, g *fzGateway, body []byte, w *httptest.ResponseRecorder)) {
	for _, s := range fzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		g := fzNew(t)
		check(t, g, body, g.do(http.MethodPost, path, body))
	})
}

func FuzzPushBody(f *testing.F) {
	fzBodies(f, "/api/v1/push", func(t *testing.T, g *fzGateway, body []byte, w *httptest.ResponseRecorder) {
		var req struct {
			UserID   string          `json:"user_id"`
			UserIDs  []string        `json:"user_ids"`
			Messages []fzBulkMessage `json:"messages"`
		}
		_ = json.Unmarshal(body, &req) // best effort: the users the body may have named
		named := append([]string{req.UserID}, req.UserIDs...)
		for _, m := range req.Messages {
			named = append(named, m.UserID)
		}
		if w.Code != http.StatusOK {
			fzCheckError(t, w, body)
			for _, u := range named {
				if r, _ := g.store.Read(context.Background(), u, 0); r.Latest != 0 || len(g.sink.delivered[u]) != 0 {
					n := r.Latest
					t.Fatalf("HTTP %d, yet %q got a message (stored %d, delivered %d)", w.Code, u, n, len(g.sink.delivered[u]))
				}
			}
			return
		}
		var res struct{ Results []fzResult }
		if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || len(res.Results) == 0 {
			t.Fatalf("200 with body %q (%v)", w.Body, err)
		}
		if len(res.Results) > api.MaxUsers {
			t.Fatalf("%d results", len(res.Results))
		}
		if req.Messages != nil {
			fzCheckBulk(t, g, req.Messages, res.Results)
			return
		}
		var want []string // the distinct users, in the order the body named them
		for _, u := range req.UserIDs {
			if !slices.Contains(want, u) {
				want = append(want, u)
			}
		}
		if req.UserID != "" {
			want = []string{req.UserID}
		}
		var data []byte
		for i, r := range res.Results {
			if i >= len(want) || r.UserID != want[i] || !auth.ValidUserID(r.UserID) {
				t.Fatalf("results %+v for users %q", res.Results, want)
			}
			if r.Online == r.Queued || r.Online != slices.Contains(fzOnline, r.UserID) || r.Seq != 1 {
				t.Fatalf("result %+v", r)
			}
			stored, _ := g.store.Read(context.Background(), r.UserID, 0)
			got := stored.Msgs
			if len(got) != 1 {
				t.Fatalf("%s has %d copies stored", r.UserID, len(got))
			}
			if live := g.sink.delivered[r.UserID]; len(live) != map[bool]int{true: 1}[r.Online] ||
				(r.Online && !bytes.Equal(live[0], got[0])) {
				t.Fatalf("%s (online %v) got %q live", r.UserID, r.Online, live)
			}
			if data == nil {
				data = got[0]
				fzCheckData(t, body, data)
			} else if !bytes.Equal(got[0], data) {
				t.Fatalf("users got different data: %q and %q", data, got[0])
			}
		}
		if len(res.Results) != len(want) {
			t.Fatalf("results %+v for users %q", res.Results, want)
		}
	})
}

type fzResult struct {
	UserID    string `json:"user_id"`
	Seq       int64  `json:"seq"`
	Online    bool   `json:"online"`
	Queued    bool   `json:"queued"`
	Duplicate bool   `json:"duplicate"`
}

type fzBulkMessage struct {
	UserID string          `json:"user_id"`
	Data   json.RawMessage `json:"data"`
	ID     string          `json:"id"`
}

// fzCheckBulk asserts what an accepted bulk push did: a result per message in its order, each
// user's messages numbered, stored and delivered live in their order, exactly as sent, and a
// repeated id of one user answered as a duplicate of its first use.
func fzCheckBulk(t *testing.T, g *fzGateway, msgs []fzBulkMessage, results []fzResult) {
	if len(results) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(results), len(msgs))
	}
	want := map[string][]string{}
	firstSeq := map[[2]string]int64{}
	for i, m := range msgs {
		r := results[i]
		if r.UserID != m.UserID {
			t.Fatalf("result %d is for %q, message for %q", i, r.UserID, m.UserID)
		}
		key := [2]string{m.UserID, m.ID}
		if seq, seen := firstSeq[key]; seen && m.ID != "" {
			if !r.Duplicate || r.Seq != seq {
				t.Fatalf("result %d %+v: want a duplicate of seq %d", i, r, seq)
			}
			continue
		}
		want[m.UserID] = append(want[m.UserID], string(m.Data))
		online := slices.Contains(fzOnline, m.UserID)
		if r.Duplicate || r.Seq != int64(len(want[m.UserID])) || r.Online != online || r.Queued == online {
			t.Fatalf("result %d %+v for message %d of %s", i, r, len(want[m.UserID]), m.UserID)
		}
		firstSeq[key] = r.Seq
	}
	for u, datas := range want {
		stored, _ := g.store.Read(context.Background(), u, 0)
		if got := fzStrings(stored.Msgs); !slices.Equal(got, datas) {
			t.Fatalf("%s stored %q, want %q", u, got, datas)
		}
		if slices.Contains(fzOnline, u) && !slices.Equal(fzStrings(g.sink.delivered[u]), datas) {
			t.Fatalf("%s got %q live, want %q", u, g.sink.delivered[u], datas)
		}
	}
}

func fzStrings(b [][]byte) []string {
	out := make([]string, len(b))
	for i, x := range b {
		out[i] = string(x)
	}
	return out
}

func FuzzBroadcastBody(f *testing.F) {
	fzBodies(f, "/api/v1/broadcast", func(t *testing.T, g *fzGateway, body []byte, w *httptest.ResponseRecorder) {
		if w.Code != http.StatusOK {
			fzCheckError(t, w, body)
			if len(g.sink.broadcast) != 0 {
				t.Fatalf("HTTP %d, yet broadcast %q", w.Code, g.sink.broadcast)
			}
			return
		}
		if strings.TrimSpace(w.Body.String()) != "{}" || len(g.sink.broadcast) != 1 {
			t.Fatalf("200 %q with %d broadcasts", w.Body, len(g.sink.broadcast))
		}
		fzCheckData(t, body, g.sink.broadcast[0])
	})
}

// FuzzUserPath: the id in /api/v1/users/{id}/… is accepted exactly when it is a valid user
// id; anything else is a 400 (or a 404 when it does not even fit the route).
func FuzzUserPath(f *testing.F) {
	for _, s := range []string{"alice", "u-1", "a.b:c@d-e_f", "", "a b", "a/b", "..", ".", "{x}", "ä", "%2F", strings.Repeat("a", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		g := fzNew(t)
		for _, call := range []struct{ method, suffix string }{
			{http.MethodGet, "/presence"}, {http.MethodDelete, "/connections"},
		} {
			req := httptest.NewRequest(call.method, "http://gw/", nil)
			req.URL.Path = "/api/v1/users/" + id + call.suffix // as the router sees it, decoded
			req.Header.Set("Authorization", "Bearer k")
			w := httptest.NewRecorder()
			g.engine.ServeHTTP(w, req)
			switch {
			case auth.ValidUserID(id):
				if w.Code != http.StatusOK {
					t.Fatalf("%s %q: HTTP %d %s", call.method, req.URL.Path, w.Code, w.Body)
				}
			case w.Code == http.StatusOK:
				t.Fatalf("%s %q: 200 for an invalid id", call.method, req.URL.Path)
			case w.Code >= 500:
				t.Fatalf("%s %q: HTTP %d", call.method, req.URL.Path, w.Code)
			}
		}
	})
}
