package wsclient_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	for in, want := range map[string]wsclient.Frame{
		`17 {"text":"hi there"}`: {Kind: wsclient.Numbered, Seq: 17, Payload: `{"text":"hi there"}`},
		`- "to everyone"`:        {Kind: wsclient.Unnumbered, Payload: `"to everyone"`},
		"gap 3 9":                {Kind: wsclient.Gap, Seq: 3, To: 9},
		"reset 4":                {Kind: wsclient.Reset, Seq: 4},
		"pong":                   {Kind: wsclient.Pong},
	} {
		got, err := wsclient.Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if got.String() != in {
			t.Errorf("Parse(%q).String() = %q", in, got)
		}
	}
	for _, in := range []string{"", "17", "x y", "gap 9 3", "gap 1", "reset", "reset -1", "0 x", "-5 x", "pong x"} {
		if f, err := wsclient.Parse(in); err == nil {
			t.Errorf("Parse(%q) = %+v; want an error", in, f)
		}
	}
}

func push(t *testing.T, n *gwtest.Node, path, body string) {
	t.Helper()
	resp, err := http.Post(n.URL(path), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: HTTP %d", path, resp.StatusCode)
	}
}

// The helpers against a real --dev gateway: raw and v1 delivery, ack and resume, a refusal,
// a close with its code, and the counting client.
func TestAgainstGateway(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	n := gwtest.Start(t, "wsclient", gwtest.Options{
		Config:       func(c *config.Config) { c.MaxConnsPerUser = 2 },
		ShutdownWait: 10 * time.Second,
		LogTail:      50,
	})
	raw := wsclient.MustDial(t, n.Addr, wsclient.Options{User: "alice", Local: []byte{127, 0, 0, 2}, ReadBuffer: 16 << 10})
	v1 := wsclient.MustDial(t, n.Addr, wsclient.Options{User: "alice", V1: true})
	wsclient.ExpectRefused(t, n.Addr, wsclient.Options{User: "alice"}, http.StatusTooManyRequests)
	cnt := wsclient.Count(t, n.Addr, wsclient.Options{User: "bob"})

	push(t, n, "/api/v1/push", `{"user_id":"alice","data":"one"}`)
	raw.Expect(t, `"one"`)
	v1.ExpectV1(t, `1 "one"`)
	push(t, n, "/api/v1/broadcast", `{"data":"all"}`)
	raw.Expect(t, `"all"`)
	if f := v1.NextV1(t); f.Kind != wsclient.Unnumbered || f.Payload != `"all"` {
		t.Fatalf("broadcast on v1: %+v", f)
	}
	wait.For(t, 10*time.Second, func() bool { return cnt.N.Load() == 1 }, "bob counts the broadcast")
	v1.Send(t, "ping")
	v1.ExpectV1(t, "pong")
	v1.Ack(t, 1)

	req, _ := http.NewRequest(http.MethodDelete, n.URL("/api/v1/users/alice/connections"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	raw.ExpectClose(t, 4001)
	if msgs, code := v1.ReadUntilClose(t); len(msgs) != 0 || code != 4001 {
		t.Fatalf("v1 after the kick: %q, close %d", msgs, code)
	}

	// Resume after 1; a since above the latest number is a reset.
	push(t, n, "/api/v1/push", `{"user_id":"alice","data":"two"}`)
	back := wsclient.MustDial(t, n.Addr, wsclient.Options{User: "alice", V1: true, Query: "since=1"})
	back.ExpectV1(t, `2 "two"`)
	again := wsclient.MustDial(t, n.Addr, wsclient.Options{User: "alice", V1: true, Query: "since=9"})
	again.ExpectV1(t, "reset 2")
}
