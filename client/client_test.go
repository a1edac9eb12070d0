package client

import (
	"bytes"
	"testing"

	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

func TestDeliversMessagesAndAcknowledges(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	g.push(`{"n":1}`) // waiting offline before the connect
	g.push(`{"n":2}`)
	c := start(t, fastOptions(g, rec))

	fc := g.conn(0)
	if !fc.v1 || fc.hasSince {
		t.Fatalf("first connection: v1 %v, since %q: want wsgateway.v1 and no since", fc.v1, fc.since)
	}
	expect(t, c, `1 {"n":1}`, `2 {"n":2}`)

	g.push("with space and\nnewline")
	g.push("\xff\xfe binary")
	g.broadcast("to everyone")
	expect(t, c, "3 with space and\nnewline")
	if m := recv(t, c); m.Seq != 4 || !m.Binary || !bytes.Equal(m.Data, []byte("\xff\xfe binary")) {
		t.Fatalf("binary message: got %+v", m)
	}
	if m := recv(t, c); m.Seq != 0 || m.Binary || string(m.Data) != "to everyone" {
		t.Fatalf("unnumbered message: got %+v", m)
	}
	wait.For(t, patience, func() bool { return g.ackedSeq() == 4 }, "ack 4 (acked %d)", g.ackedSeq())
	if c.Last() != 4 {
		t.Fatalf("Last() = %d, want 4", c.Last())
	}
	if got := rec.of(EventConnected); len(got) != 1 || got[0].Raw {
		t.Fatalf("connected events %+v: want one, not raw", got)
	}
}

func TestResumesAfterTheConnectionDrops(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	c := start(t, fastOptions(g, rec))
	g.push("a")
	g.push("b")
	g.push("c")
	expect(t, c, "1 a", "2 b", "3 c")

	g.drop()
	g.push("d") // lands while the client is away (or on the dying socket: lost there)
	g.push("e")
	expect(t, c, "4 d", "5 e")

	if n := g.numConns(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	if fc := g.conn(1); fc.since != "3" {
		t.Fatalf("reconnect asked since=%q, want 3", fc.since)
	}
	d := rec.waitFor(t, EventDisconnected, 1)[0]
	if d.Code != 1006 || d.Err == nil {
		t.Fatalf("disconnected event %+v: want code 1006 with an error", d)
	}
}

func TestDropsDuplicatesFromAnOverlappingReplay(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	g.set(func(g *fakeGateway) { g.overlap = 2 })
	c := start(t, fastOptions(g, rec))
	g.push("a") // replayed from 0: no overlap possible yet
	g.push("b")
	g.push("c")
	expect(t, c, "1 a", "2 b", "3 c")

	g.drop()
	g.push("d")
	// The replay carries 2, 3 and 4 (since=3, minus the overlap): only 4 is new.
	expect(t, c, "4 d")
	g.push("e")
	expect(t, c, "5 e")
}

func TestReportsAGapAndMovesPastIt(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	for _, p := range []string{"1", "2", "3", "4", "5", "6"} {
		g.push(p)
	}
	g.set(func(g *fakeGateway) { g.floor = 5 }) // 1–4 were dropped by the cap or TTL
	opts := fastOptions(g, rec)
	opts.Since = 2
	c := start(t, opts)

	expect(t, c, "5 5")
	// OnEvent runs before the message after the gap is handed over.
	if gaps := rec.of(EventGap); len(gaps) != 1 || gaps[0].From != 3 || gaps[0].To != 4 {
		t.Fatalf("gap events %+v, want one for 3..4", gaps)
	}
	expect(t, c, "6 6")
	if fc := g.conn(0); fc.since != "2" {
		t.Fatalf("since=%q, want 2", fc.since)
	}
	wait.For(t, patience, func() bool { return g.ackedSeq() == 6 }, "ack 6")
}

func TestResetForgetsThePosition(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	g.push("x")
	g.push("y")
	opts := fastOptions(g, rec)
	opts.Since = 40 // from an earlier life of the user's state
	c := start(t, opts)

	// Lower numbers than Since are new after a reset, not duplicates.
	expect(t, c, "1 x", "2 y")
	if rs := rec.of(EventReset); len(rs) != 1 || rs[0].Latest != 2 {
		t.Fatalf("reset events %+v, want one with latest 2", rs)
	}
	if c.Last() != 2 {
		t.Fatalf("Last() = %d, want 2", c.Last())
	}
	wait.For(t, patience, func() bool { return g.ackedSeq() == 2 }, "ack 2 after the reset")

	g.drop()
	g.push("z")
	expect(t, c, "3 z")
	if fc := g.conn(1); fc.since != "2" {
		t.Fatalf("reconnect after the reset asked since=%q, want 2", fc.since)
	}
}

func TestAcksAreBatched(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	c := start(t, fastOptions(g, rec))
	const n = 500
	go func() {
		for range n {
			g.push("m")
		}
	}()
	for i := range n {
		if m := recv(t, c); m.Seq != int64(i+1) {
			t.Fatalf("message %d has seq %d", i+1, m.Seq)
		}
	}
	wait.For(t, patience, func() bool { return g.ackedSeq() == n }, "ack %d", n)
	// Five acks a second at most: 50 would take ten seconds of receiving.
	g.set(func(g *fakeGateway) {
		if g.ackFrames >= n/10 {
			t.Errorf("%d ack frames for %d messages: not batched", g.ackFrames, n)
		}
	})
}

func TestAckEveryAcksBeforeTheDelay(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	opts := fastOptions(g, rec)
	opts.AckDelay = 10 * patience // never, within the test
	opts.AckEvery = 10
	c := start(t, opts)
	for range 25 {
		g.push("m")
	}
	for range 25 {
		recv(t, c)
	}
	wait.For(t, patience, func() bool { return g.ackedSeq() >= 10 }, "an ack once 10 messages wait")
	c.Close() // the final ack covers the rest
	wait.For(t, patience, func() bool { return g.ackedSeq() == 25 }, "the final ack on Close")
}

func TestAcksOnlyWhatTheApplicationReceived(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	c := start(t, fastOptions(g, rec))
	for range 5 {
		g.push("m")
	}
	expect(t, c, "1 m", "2 m")
	wait.For(t, patience, func() bool { return g.ackedSeq() == 2 }, "ack 2 (acked %d)", g.ackedSeq())
	c.Close()
	wait.For(t, patience, g.conn(0).ended, "the connection to end")
	if a := g.ackedSeq(); a != 2 {
		t.Fatalf("acked %d after Close, want 2: messages 3–5 never reached the application", a)
	}
	if c.Last() != 2 {
		t.Fatalf("Last() = %d, want 2", c.Last())
	}
}

// ended reports whether the connection's handler has returned.
func (fc *fakeConn) ended() bool {
	select {
	case <-fc.done:
		return true
	default:
		return false
	}
}

func TestRawMode(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	opts := fastOptions(g, rec)
	opts.Raw = true
	opts.Since = 7 // ignored: raw mode never resumes
	c := start(t, opts)
	fc := g.conn(0)
	if fc.v1 || fc.hasSince {
		t.Fatalf("raw connection: v1 %v, since %q", fc.v1, fc.since)
	}
	g.push(`{"a":1}`)
	g.broadcast("all")
	if m := recv(t, c); m.Seq != 0 || string(m.Data) != `{"a":1}` {
		t.Fatalf("got %+v", m)
	}
	if m := recv(t, c); m.Seq != 0 || string(m.Data) != "all" {
		t.Fatalf("got %+v", m)
	}
	if e := rec.waitFor(t, EventConnected, 1)[0]; !e.Raw {
		t.Fatalf("connected event %+v: want Raw", e)
	}
	c.Close()
	g.set(func(g *fakeGateway) {
		if g.ackFrames != 0 {
			t.Errorf("%d ack frames in raw mode", g.ackFrames)
		}
	})
}

func TestFallsBackToRawWhenTheSubprotocolIsNotSelected(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	g.set(func(g *fakeGateway) { g.noV1 = true })
	c := start(t, fastOptions(g, rec))
	g.conn(0) // the fake replays nothing in raw mode: push once it holds the connection
	g.push("17 looks numbered")
	if m := recv(t, c); m.Seq != 0 || string(m.Data) != "17 looks numbered" {
		t.Fatalf("got %+v: a raw frame must be delivered as it is", m)
	}
	if e := rec.waitFor(t, EventConnected, 1)[0]; !e.Raw {
		t.Fatalf("connected event %+v: want Raw", e)
	}
}

func TestMalformedFramesAreSkipped(t *testing.T) {
	g, rec := newFake(t), &recorder{}
	c := start(t, fastOptions(g, rec))
	g.conn(0)
	g.set(func(g *fakeGateway) {
		for _, fc := range g.liveLocked() {
			fc.write([]byte("what is this"))
			fc.write([]byte("+5 signed"))
		}
	})
	g.push("fine")
	expect(t, c, "1 fine")
	if err := c.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}
}
