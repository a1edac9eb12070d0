package web_test

// A fake WebSocket server for the client tests: it misbehaves on request.

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeServer is a WebSocket endpoint whose behaviour each connection picks with its query:
//
//	case=NAME   groups the connections of one client (required)
//	raw=1       select no subprotocol even when the client offers wsgateway.v1 (an old gateway)
//	send=FRAME  send FRAME as a text frame; repeated, in order, on every connection, first
//	close=CODE  close with CODE right away, or after=MS milliseconds
//	silent=1    read everything, answer nothing (a dead link as the client sees it)
//	drop=1      cut the TCP connection without a close frame (the browser reports 1006)
//	binary=1    send one binary frame (bytes ff 00 01; "7 " before them with wsgateway.v1), then idle
//
// It records every text frame the client sends (pings, acks) with its arrival time.
type fakeServer struct {
	srv    *httptest.Server
	origin string // the page's origin; other origins are refused, as the gateway does
	stop   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	arrived map[string][]time.Time // case → arrival of each connection
	queries map[string][]string    // case → raw query of each connection
	pings   map[string]int         // case → text "ping" frames received
	got     map[string][]frameIn   // case → every other text frame received, in order
	conns   map[*websocket.Conn]struct{}
}

// frameIn is one text frame the client sent to the fake.
type frameIn struct {
	data string
	at   time.Time
}

func startFake(t *testing.T, origin string) *fakeServer {
	t.Helper()
	f := &fakeServer{
		origin:  origin,
		stop:    make(chan struct{}),
		arrived: make(map[string][]time.Time),
		queries: make(map[string][]string),
		pings:   make(map[string]int),
		got:     make(map[string][]frameIn),
		conns:   make(map[*websocket.Conn]struct{}),
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		close(f.stop)
		f.mu.Lock()
		for c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.srv.Close()
		f.wg.Wait() // hijacked connections are not waited for by httptest
	})
	return f
}

// url is the endpoint for one client, in http:// form: the client must turn it into ws://.
func (f *fakeServer) url(query string) string { return f.srv.URL + "/ws?" + query }

func (f *fakeServer) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.arrived[name])
}

func (f *fakeServer) times(name string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.arrived[name])
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	f.wg.Add(1)
	defer f.wg.Done()
	q := r.URL.Query()
	name := q.Get("case")
	f.mu.Lock()
	f.arrived[name] = append(f.arrived[name], time.Now())
	f.queries[name] = append(f.queries[name], r.URL.RawQuery)
	f.mu.Unlock()

	up := websocket.Upgrader{CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == f.origin }}
	if q.Get("raw") == "" {
		up.Subprotocols = []string{"wsgateway.v1"}
	}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	f.mu.Lock()
	f.conns[c] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		_ = c.Close()
	}()

	for _, frame := range q["send"] {
		if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			return
		}
	}
	switch {
	case q.Get("drop") != "":
		return // the deferred Close cuts the TCP connection, no close frame
	case q.Get("binary") != "":
		frame := []byte{0xff, 0x00, 0x01}
		if c.Subprotocol() == "wsgateway.v1" {
			frame = append([]byte("7 "), frame...)
		}
		_ = c.WriteMessage(websocket.BinaryMessage, frame)
	case q.Get("close") != "":
		code, _ := strconv.Atoi(q.Get("close"))
		if ms, _ := strconv.Atoi(q.Get("after")); ms > 0 {
			timer := time.NewTimer(time.Duration(ms) * time.Millisecond)
			select {
			case <-timer.C:
			case <-f.stop:
				timer.Stop()
				return
			}
		}
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "test close"), time.Now().Add(patience))
	}
	// Read until the client goes (or answers the close); count its pings, answer none.
	_ = c.SetReadDeadline(time.Now().Add(2 * patience))
	for {
		kind, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		if kind != websocket.TextMessage {
			continue
		}
		f.mu.Lock()
		if string(data) == "ping" {
			f.pings[name]++
		} else {
			f.got[name] = append(f.got[name], frameIn{string(data), time.Now()})
		}
		f.mu.Unlock()
	}
}

// frames returns the text frames other than "ping" that the clients of case name sent.
func (f *fakeServer) frames(name string) []frameIn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got[name])
}

// query is the raw query of the i-th connection of case name.
func (f *fakeServer) query(name string, i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[name][i]
}
