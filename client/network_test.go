package client

import (
	"errors"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/testutil/faultproxy"
)

// These tests put a real TCP proxy between the client and the fake gateway, so the faults
// are the network's, not the server's: the gateway's side of the socket never learns.

func behindProxy(t *testing.T) (*fakeGateway, *faultproxy.Proxy, *recorder, Options) {
	g, rec := newFake(t), &recorder{}
	p := faultproxy.Start(t, g.srv.Listener.Addr().String())
	opts := fastOptions(g, rec)
	opts.URL = "ws://" + p.Addr() + "/ws"
	return g, p, rec, opts
}

func TestSilenceThroughAFrozenNetwork(t *testing.T) {
	g, p, rec, opts := behindProxy(t)
	opts.SilenceTimeout = 600 * time.Millisecond
	c := start(t, opts)
	g.push("a")
	expect(t, c, "1 a")

	p.Freeze() // no FIN, no RST: the link just goes dark
	g.push("b")
	d := rec.waitFor(t, EventDisconnected, 1)[0]
	if !errors.Is(d.Err, ErrSilent) {
		t.Fatalf("disconnected event %+v, want ErrSilent", d)
	}
	p.Thaw()
	expect(t, c, "2 b")
	if n := g.numConns(); n < 2 {
		t.Fatalf("%d connections at the gateway, want a reconnect", n)
	}
}

func TestResumesAfterAConnectionReset(t *testing.T) {
	g, p, _, opts := behindProxy(t)
	c := start(t, opts)
	g.push("a")
	expect(t, c, "1 a")
	p.Refuse(true)
	p.CloseAll()
	g.push("b") // written into a socket whose far end is gone
	p.Refuse(false)
	expect(t, c, "2 b")
}
