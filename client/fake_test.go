package client

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// fakeGateway is a small stand-in for the gateway's /ws endpoint that speaks wsgateway.v1 (and
// raw mode) for one user: a numbered log, replay from since with gap and reset, acks, text
// ping/pong, in-band auth with 4002 at exp. Tests steer it (refuse, drop, mute, close with a
// code) and read what it saw.
type fakeGateway struct {
	t   testing.TB
	srv *httptest.Server
	wg  sync.WaitGroup // handler goroutines: httptest does not wait for hijacked connections

	mu         sync.Mutex
	log        map[int64][]byte // kept messages by seq
	latest     int64
	floor      int64 // seqs below it are no longer kept
	acked      int64 // highest "ack" received
	ackFrames  int
	conns      []*fakeConn // every accepted connection, in order
	refuse     int         // HTTP status for new handshakes; 0 accepts
	overlap    int64       // replay this many below since, so that the client sees duplicates
	enforceExp bool        // close with 4002 when the token's exp passes
	noV1       bool        // never select the subprotocol (an old gateway)
}

type fakeConn struct {
	g        *fakeGateway
	ws       *websocket.Conn
	v1       bool
	since    string // the since parameter; "" when absent
	hasSince bool
	token    string
	wmu      sync.Mutex // one writer at a time, as gorilla requires
	done     chan struct{}

	// guarded by g.mu
	muted    bool
	pings    int
	auths    []string
	expTimer *time.Timer
}

func newFake(t testing.TB) *fakeGateway {
	g := &fakeGateway{t: t, log: map[int64][]byte{}, floor: 1}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.close)
	return g
}

func (g *fakeGateway) url() string { return "ws" + strings.TrimPrefix(g.srv.URL, "http") + "/ws" }

// close ends every connection and waits for their handlers, so no goroutine outlives a test.
func (g *fakeGateway) close() {
	g.srv.Close()
	g.drop()
	g.wg.Wait()
}

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	refuse, noV1 := g.refuse, g.noV1
	g.mu.Unlock()
	if refuse != 0 {
		http.Error(w, "refused by the test", refuse)
		return
	}
	up := websocket.Upgrader{}
	if !noV1 {
		up.Subprotocols = []string{Subprotocol}
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	g.wg.Add(1)
	defer g.wg.Done()
	fc := &fakeConn{g: g, ws: ws, v1: ws.Subprotocol() == Subprotocol, done: make(chan struct{})}
	fc.since = r.URL.Query().Get("since")
	fc.hasSince = r.URL.Query().Has("since")
	fc.token = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")

	g.mu.Lock()
	g.conns = append(g.conns, fc)
	fc.armExpiryLocked(fc.token)
	if fc.v1 {
		g.replayLocked(fc) // under g.mu: no push can slip in between replay and live
	}
	g.mu.Unlock()

	defer func() {
		g.mu.Lock()
		if fc.expTimer != nil {
			fc.expTimer.Stop()
		}
		g.mu.Unlock()
		ws.Close()
		close(fc.done)
	}()
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		fc.frame(string(data))
	}
}

// replayLocked sends what the connection asked for, as the gateway does: a reset when since
// is above the latest seq, a gap for what is no longer kept, then the kept messages.
func (g *fakeGateway) replayLocked(fc *fakeConn) {
	from := g.acked // no since: everything not yet acknowledged
	if fc.hasSince {
		since, err := strconv.ParseInt(fc.since, 10, 64)
		if err != nil {
			g.t.Errorf("fake gateway: since=%q", fc.since)
		}
		from = since
		if since > g.latest {
			fc.write([]byte(fmt.Sprintf("reset %d", g.latest)))
			from = 0
		}
	}
	from = max(0, from-g.overlap)
	if from+1 < g.floor {
		fc.write([]byte(fmt.Sprintf("gap %d %d", from+1, g.floor-1)))
		from = g.floor - 1
	}
	for seq := from + 1; seq <= g.latest; seq++ {
		fc.write(numbered(seq, g.log[seq]))
	}
}

func numbered(seq int64, payload []byte) []byte {
	return append([]byte(strconv.FormatInt(seq, 10)+" "), payload...)
}

// frame handles one client frame.
func (fc *fakeConn) frame(s string) {
	g := fc.g
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case s == "ping":
		fc.pings++
		fc.write([]byte("pong"))
	case fc.v1 && strings.HasPrefix(s, "ack "):
		seq, err := strconv.ParseInt(s[len("ack "):], 10, 64)
		if err != nil {
			g.t.Errorf("fake gateway: bad frame %q", s)
		}
		g.ackFrames++
		if seq <= g.latest {
			g.acked = max(g.acked, seq)
		}
	case fc.v1 && strings.HasPrefix(s, "auth "):
		tok := s[len("auth "):]
		fc.auths = append(fc.auths, tok)
		fc.armExpiryLocked(tok)
	default:
		g.t.Errorf("fake gateway: unexpected frame %q", s)
	}
}

// armExpiryLocked closes the connection with 4002 when tok expires, as the gateway does.
func (fc *fakeConn) armExpiryLocked(tok string) {
	if !fc.g.enforceExp {
		return
	}
	if fc.expTimer != nil {
		fc.expTimer.Stop()
	}
	exp, ok := tokenExpiry(tok)
	if !ok {
		fc.g.t.Errorf("fake gateway: token without exp")
		return
	}
	fc.expTimer = time.AfterFunc(time.Until(exp), func() { fc.closeWith(4002) })
}

// write sends one frame, text when valid UTF-8 as the gateway does; a muted or dead
// connection swallows it.
func (fc *fakeConn) write(data []byte) {
	if fc.muted {
		return
	}
	typ := websocket.TextMessage
	if !utf8.Valid(data) {
		typ = websocket.BinaryMessage
	}
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_ = fc.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = fc.ws.WriteMessage(typ, data)
}

func (fc *fakeConn) closeWith(code int) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	msg := websocket.FormatCloseMessage(code, "closed by the test")
	_ = fc.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second))
}

// push stores a message and sends it to every live connection, as an API push does.
func (g *fakeGateway) push(payload string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.latest++
	g.log[g.latest] = []byte(payload)
	for _, fc := range g.liveLocked() {
		if fc.v1 {
			fc.write(numbered(g.latest, []byte(payload)))
		} else {
			fc.write([]byte(payload))
		}
	}
	return g.latest
}

// broadcast sends an unnumbered message to every live connection; nothing is stored.
func (g *fakeGateway) broadcast(payload string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, fc := range g.liveLocked() {
		if fc.v1 {
			fc.write([]byte("- " + payload))
		} else {
			fc.write([]byte(payload))
		}
	}
}

func (g *fakeGateway) liveLocked() []*fakeConn {
	var live []*fakeConn
	for _, fc := range g.conns {
		select {
		case <-fc.done:
		default:
			live = append(live, fc)
		}
	}
	return live
}

// drop cuts every live connection without a close frame, as a dead node or network does.
func (g *fakeGateway) drop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, fc := range g.liveLocked() {
		fc.ws.UnderlyingConn().Close()
	}
}

// closeAll closes every live connection with code (the client answers and hangs up).
func (g *fakeGateway) closeAll(code int) {
	g.mu.Lock()
	live := g.liveLocked()
	g.mu.Unlock()
	for _, fc := range live {
		fc.closeWith(code)
	}
}

// mute makes the live connections silent without closing them: nothing is written any more,
// pongs included, as over a link that died without a FIN.
func (g *fakeGateway) mute() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, fc := range g.liveLocked() {
		fc.muted = true
	}
}

// set runs f with the gateway's state locked, for steering and reading it.
func (g *fakeGateway) set(f func(g *fakeGateway)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *fakeGateway) numConns() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// conn returns the i-th connection, waiting for it: the client may see the handshake's
// answer before the fake's handler has recorded the connection.
func (g *fakeGateway) conn(i int) *fakeConn {
	g.t.Helper()
	wait.For(g.t, patience, func() bool { return g.numConns() > i }, "connection %d", i)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.conns[i]
}

func (g *fakeGateway) ackedSeq() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.acked
}

// makeToken builds an unsigned JWT-shaped token: the client reads exp without verifying.
func makeToken(sub string, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{"sub": sub, "exp": float64(exp.UnixMilli()) / 1000})
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc(claims) + ".c2ln"
}
