package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
)

// upstreamGateway boots a --dev gateway on its own Redis, with the inbound rate limit out of
// the way, waits until it is ready, and returns it with an admin client and the upstream
// stream's key.
func upstreamGateway(t *testing.T, edit func(*config.Config, *server.Options)) (*gw, *redis.Client, string) {
	t.Helper()
	rs := redistest.Start(t)
	cfg := devConfig()
	cfg.RedisURL = rs.URL()
	cfg.KeyPrefix = redistest.Prefix(t)
	cfg.MaxInboundRate = 100000
	opt := server.Options{}
	if edit != nil {
		edit(&cfg, &opt)
	}
	g := startWith(t, cfg, opt)
	g.WaitReady(t, patience)
	return g, rs.Client(t), cfg.KeyPrefix + "upstream"
}

// Clients sending 64 KiB frames cannot fill Redis: 200 of them (12.5 MiB) into a 1 MiB
// upstream-max-bytes leave the stream at about 1 MiB of Redis memory, the newest frames kept.
func TestUpstreamByteBudget(t *testing.T) {
	const budget = 1 << 20
	g, rdb, stream := upstreamGateway(t, func(c *config.Config, _ *server.Options) { c.UpstreamMaxBytes = budget })

	c := g.dial(t, "alice")
	pad := strings.Repeat("x", 64<<10-4)
	const frames = 200
	for i := range frames {
		c.Send(t, fmt.Sprintf("%04d", i)+pad)
	}
	last := fmt.Sprintf("%04d", frames-1)
	wait.For(t, patience, func() bool {
		m, err := rdb.XRevRangeN(context.Background(), stream, "+", "-", 1).Result()
		return err == nil && len(m) == 1 && strings.HasPrefix(fmt.Sprint(m[0].Values["data"]), last)
	}, "the last frame never reached %s", stream)
	mem, err := rdb.MemoryUsage(context.Background(), stream, 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := rdb.XLen(context.Background(), stream).Val()
	t.Logf("%d frames of 64 KiB, upstream-max-bytes %d: %d entries, %d bytes of Redis memory", frames, budget, n, mem)
	if mem > budget*11/10 {
		t.Fatalf("the stream takes %d bytes of Redis memory, upstream-max-bytes is %d", mem, budget)
	}
}

// A Redis that stops answering writes (CLIENT PAUSE) does not stall the connection's reader:
// a "ping" sent behind data frames still gets its "pong" at once, frames beyond the queue are
// counted as upstream_overflow, and the connection stays open.
func TestUpstreamStalledRedisDoesNotBlockReader(t *testing.T) {
	g, admin, stream := upstreamGateway(t, func(_ *config.Config, o *server.Options) { o.UpstreamQueueLen = 8 })
	c := g.dial(t, "alice")
	c.Send(t, "before")
	wait.For(t, patience, func() bool { return admin.XLen(context.Background(), stream).Val() == 1 }, "the first frame never reached %s", stream)

	const pause = 10 * time.Second
	paused := time.Now()
	if err := admin.Do(context.Background(), "CLIENT", "PAUSE", pause.Milliseconds(), "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Do(context.Background(), "CLIENT", "UNPAUSE").Err() })
	const frames = 400
	for i := range frames {
		c.Send(t, fmt.Sprint("during ", i))
	}
	c.Send(t, "ping")
	_ = c.SetReadDeadline(time.Now().Add(patience))
	typ, data, err := c.ReadMessage()
	if err != nil || typ != websocket.TextMessage || string(data) != "pong" {
		t.Fatalf("after ping: %d %q %v, want the text pong", typ, data, err)
	}
	// A reader that waits for Redis answers only once the pause is over. Half of it is far
	// more than a healthy reader needs, even on a loaded 2-core machine under -race, where a
	// fixed second was not always enough.
	if d := time.Since(paused); d > pause/2 {
		t.Fatalf("pong came %s after Redis paused writes for %s: the reader waited for Redis", d, pause)
	}
	over := g.Metric("wsgateway_messages_dropped_total", "reason", "upstream_overflow")
	// At most 8 frames wait in the queue, and the sender stuck in Redis holds one batch (at
	// most 256).
	if over < frames-8-256 {
		t.Fatalf("upstream_overflow = %v after %d frames into a queue of 8, want at least %d", over, frames, frames-8-256)
	}
	if err := admin.Do(context.Background(), "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatal(err)
	}
	// What was queued reaches the stream once Redis is back, and nothing else was lost.
	wait.For(t, patience, func() bool {
		return admin.XLen(context.Background(), stream).Val() == 1+frames-int64(over)
	}, "the queued frames did not reach %s after Redis came back", stream)
	if e := g.Metric("wsgateway_messages_dropped_total", "reason", "upstream_error"); e != 0 {
		t.Fatalf("upstream_error = %v", e)
	}
	// The connection is still there and its frames flow again.
	c.Send(t, "after")
	wait.For(t, patience, func() bool {
		m, err := admin.XRevRangeN(context.Background(), stream, "+", "-", 1).Result()
		return err == nil && len(m) == 1 && m[0].Values["data"] == "after"
	}, "frames did not reach %s after Redis came back", stream)
}

// With --upstream=false nothing is written to Redis: frames are checked (size, UTF-8, rate)
// and dropped, as in the in-memory mode.
func TestUpstreamOff(t *testing.T) {
	g, rdb, stream := upstreamGateway(t, func(c *config.Config, _ *server.Options) { c.Upstream = false })
	c := g.dial(t, "alice")
	for _, f := range []string{"one", "two", "ping"} {
		c.Send(t, f)
	}
	c.Expect(t, "pong")
	wait.For(t, patience, func() bool { return g.Metric("wsgateway_inbound_messages_total") == 2 }, "the two frames were not counted as inbound")
	if n := rdb.Exists(context.Background(), stream).Val(); n != 0 {
		t.Fatalf("--upstream=false, yet %s exists", stream)
	}
	// Invalid UTF-8 is still refused with 1007.
	if err := c.WriteMessage(websocket.TextMessage, []byte{0xff, 0xfe}); err != nil {
		t.Fatal(err)
	}
	c.ExpectClose(t, websocket.CloseInvalidFramePayloadData)
}
