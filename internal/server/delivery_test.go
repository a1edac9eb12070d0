package server_test

// End-to-end tests of delivery on the single-node, in-memory gateway: exact bytes, frame
// types, several devices, offline storage and its cap, several users, broadcast.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// The data of a push arrives as the exact bytes of the JSON value that was sent: escapes stay
// escapes, whitespace inside the value stays, nothing is re-encoded. JSON is UTF-8, so it is
// always a text frame.
func TestPushArrivesByteForByte(t *testing.T) {
	g := start(t, devConfig())
	c := g.dial(t, "alice")
	cases := []struct {
		name string
		raw  string // the value of "data" in the request body
		want string // what the client must receive; raw unless the body had space around it
	}{
		{name: "object with unicode and escapes",
			raw: `{"text":"héllo wörld ✓ 😀","esc":"\u00e9\ud83d\ude00 \"q\" \\ \/ \n\t","html":"<a href='x'>&amp;</a>"}`},
		{name: "string", raw: `"just a string"`},
		{name: "empty string", raw: `""`},
		{name: "integer", raw: `42`},
		{name: "number with exponent", raw: `-1.50e+10`},
		{name: "big number beyond float64", raw: `123456789012345678901234567890.000000000000000000001`},
		{name: "array with whitespace inside", raw: "[ 1,\n\t2 ,  {\"x\" : null} , \"a\"\r\n]"},
		{name: "nested and empty", raw: `{"a":[],"b":{},"c":[[[]]],"d":false}`},
		{name: "true", raw: `true`},
		{name: "keys in their original order", raw: `{"z":1,"a":2,"m":3}`},
		{name: "space around the value is not part of it", raw: " \n {\"k\": 1 }\t \n", want: `{"k": 1 }`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.raw
			}
			res := g.pushBody(t, `{"user_id":"alice","data":`+tc.raw+`}`)
			if len(res) != 1 || !res[0].Online || res[0].Queued {
				t.Fatalf("results %+v, want alice online and not queued", res)
			}
			typ, data := c.Next(t)
			if typ != websocket.TextMessage {
				t.Fatalf("frame type %d, want text (%d)", typ, websocket.TextMessage)
			}
			if string(data) != want {
				t.Fatalf("received %q\nwant      %q", data, want)
			}
		})
	}
}

// A payload that is not valid UTF-8 (only possible through the bus, e.g. redis-cli PUBLISH)
// goes out as a binary frame, to one connection, to several devices (the prepared-message
// path) and as a broadcast; a valid one as text.
func TestDeliverFrameType(t *testing.T) {
	g := start(t, devConfig())
	alice := g.dial(t, "alice")
	bob1, bob2 := g.dial(t, "bob"), g.dial(t, "bob")
	hub := g.Srv.ForTest().Hub()
	cases := []struct {
		name    string
		send    func(data []byte)
		conns   []*wsclient.Conn
		payload []byte
		typ     int
	}{
		{"binary to one connection", func(d []byte) { hub.Deliver("alice", 0, d) }, []*wsclient.Conn{alice}, []byte{0xff, 0xfe}, websocket.BinaryMessage},
		{"truncated UTF-8 is binary", func(d []byte) { hub.Deliver("alice", 0, d) }, []*wsclient.Conn{alice}, []byte("caf\xc3"), websocket.BinaryMessage},
		{"binary to two devices", func(d []byte) { hub.Deliver("bob", 0, d) }, []*wsclient.Conn{bob1, bob2}, []byte{0, 1, 2, 0xff}, websocket.BinaryMessage},
		{"UTF-8 to one connection is text", func(d []byte) { hub.Deliver("alice", 0, d) }, []*wsclient.Conn{alice}, []byte("plain ✓"), websocket.TextMessage},
		{"UTF-8 to two devices is text", func(d []byte) { hub.Deliver("bob", 0, d) }, []*wsclient.Conn{bob1, bob2}, []byte("not JSON at all"), websocket.TextMessage},
		{"binary broadcast", hub.Broadcast, []*wsclient.Conn{alice, bob1, bob2}, []byte{0x80, 0x81}, websocket.BinaryMessage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.send(tc.payload)
			for i, c := range tc.conns {
				typ, data := c.Next(t)
				if typ != tc.typ || string(data) != string(tc.payload) {
					t.Fatalf("connection %d got type %d %q, want type %d %q", i, typ, data, tc.typ, tc.payload)
				}
			}
		})
	}
}

// Every connection of a user receives each push; other users receive none of it.
func TestMultiDevice(t *testing.T) {
	g := start(t, devConfig())
	alice := []*wsclient.Conn{g.dial(t, "alice"), g.dial(t, "alice"), g.dial(t, "alice")}
	bob := g.dial(t, "bob")
	if n := g.Srv.ForTest().Hub().Conns(); n != 4 {
		t.Fatalf("hub holds %d connections, want 4", n)
	}
	for i := range 3 {
		if r := g.push(t, "alice", fmt.Sprintf(`{"n":%d}`, i)); !r.Online {
			t.Fatalf("push %d: %+v, want online", i, r)
		}
	}
	for d, c := range alice {
		for i := range 3 {
			if got, want := c.NextText(t), fmt.Sprintf(`{"n":%d}`, i); got != want {
				t.Fatalf("device %d message %d: %q, want %q", d, i, got, want)
			}
		}
	}
	g.push(t, "bob", `"for bob"`)
	bob.Expect(t, `"for bob"`) // nothing of alice's came first
}

// Pushes to an offline user are stored and flushed on connect, in order, exactly once, before
// anything pushed after the connect; what is pushed while the user is away again comes on
// the next connect, and only that.
func TestOffline(t *testing.T) {
	g := start(t, devConfig())
	const n = 5
	for i := range n {
		r := g.push(t, "alice", itoa(i))
		if r.Online || !r.Queued {
			t.Fatalf("push %d to an offline user: %+v, want online false, queued true", i, r)
		}
	}
	if got := g.Metric("wsgateway_offline_stored_total", "source", "push"); got != n {
		t.Fatalf("offline_stored_total{source=push} = %v, want %d", got, n)
	}

	c := g.dial(t, "alice")
	for i := range n {
		c.Expect(t, itoa(i))
	}
	if r := g.push(t, "alice", `"live"`); !r.Online || r.Queued {
		t.Fatalf("live push: %+v, want online", r)
	}
	c.Expect(t, `"live"`)

	// Away again: a clean close, then the gateway must notice before the next pushes.
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(patience))
	if _, code := c.ReadUntilClose(t); code != websocket.CloseNormalClosure {
		t.Fatalf("close answered with %d, want 1000", code)
	}
	wait.For(t, patience, func() bool { return !g.presence(t, "alice") }, "alice still online after closing")
	for i := n; i < 2*n; i++ {
		if r := g.push(t, "alice", itoa(i)); !r.Queued {
			t.Fatalf("push %d: %+v, want queued", i, r)
		}
	}
	c2 := g.dial(t, "alice")
	for i := n; i < 2*n; i++ {
		c2.Expect(t, itoa(i))
	}
	g.push(t, "alice", `"end"`)
	c2.Expect(t, `"end"`) // nothing flushed twice, nothing left behind
	if got := g.Metric("wsgateway_offline_flushed_total"); got != 2*n {
		t.Fatalf("offline_flushed_total = %v, want %d", got, 2*n)
	}
}

// offline-max keeps the newest messages of a user and drops the oldest.
func TestOfflineCap(t *testing.T) {
	cfg := devConfig()
	cfg.OfflineMax = 3
	g := start(t, cfg)
	for i := range 7 {
		g.push(t, "alice", itoa(i))
	}
	c := g.dial(t, "alice")
	for _, want := range []string{"4", "5", "6"} {
		c.Expect(t, want)
	}
	g.push(t, "alice", `"end"`)
	c.Expect(t, `"end"`)
}

// One user with several pushes through user_ids: each listed user gets one copy (duplicates
// in the list count once) and the results tell who was online.
func TestPushToManyUsers(t *testing.T) {
	g := start(t, devConfig())
	alice := g.dial(t, "alice")
	res := g.pushBody(t, `{"user_ids":["alice","bob","alice"],"data":{"m":1}}`)
	want := []pushResult{{UserID: "alice", Online: true}, {UserID: "bob", Queued: true}}
	if len(res) != len(want) {
		t.Fatalf("results %+v, want %+v", res, want)
	}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("results %+v, want %+v", res, want)
		}
	}
	alice.Expect(t, `{"m":1}`)
	g.push(t, "alice", `"end"`)
	alice.Expect(t, `"end"`) // one copy although listed twice
	bob := g.dial(t, "bob")
	bob.Expect(t, `{"m":1}`)
}

// A broadcast reaches every connection of every user and is stored for nobody.
func TestBroadcast(t *testing.T) {
	g := start(t, devConfig())
	conns := []*wsclient.Conn{g.dial(t, "alice"), g.dial(t, "alice"), g.dial(t, "bob")}
	status, body := g.api(t, http.MethodPost, "/api/v1/broadcast", `{"data": {"news" : "ünïcode"} }`)
	if status != http.StatusOK || strings.TrimSpace(string(body)) != "{}" {
		t.Fatalf("broadcast: HTTP %d %s, want 200 {}", status, body)
	}
	for _, c := range conns {
		c.Expect(t, `{"news" : "ünïcode"}`)
	}
	if n := g.Metric("wsgateway_offline_stored_total", "source", "push"); n != 0 {
		t.Fatalf("a broadcast stored %v messages offline", n)
	}
	carol := g.dial(t, "carol") // connects after the broadcast: gets none of it
	g.push(t, "carol", `"first"`)
	carol.Expect(t, `"first"`)
}
