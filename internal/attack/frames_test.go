package attack

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
)

// TestProtocolViolations sends, on a raw socket after a valid handshake, each frame RFC 6455
// forbids. gorilla answers every one with close 1002 and the gateway drops the connection;
// the valid close codes in the table are the control group (echoed back as they came).
func TestProtocolViolations(t *testing.T) {
	t.Parallel()
	g := start(t, nil, server.Options{})
	c := g.startCanary(t)

	long := bytes.Repeat([]byte("x"), 126)
	cases := []struct {
		name   string
		frames [][]byte
		want   int
	}{
		{"fragmented ping", [][]byte{rawFrame(opPing, true, []byte("a")), frame(opCont, []byte("b"))}, 1002},
		{"fragmented close", [][]byte{rawFrame(opClose, true, closeBody(1000, ""))}, 1002},
		{"fragmented pong", [][]byte{rawFrame(opPong, true, nil)}, 1002},
		{"ping of 126 bytes", [][]byte{frame(opPing, long)}, 1002},
		{"pong of 126 bytes", [][]byte{frame(opPong, long)}, 1002},
		{"close of 126 bytes", [][]byte{frame(opClose, closeBody(1000, string(long[:124])))}, 1002},
		{"close code 1005", [][]byte{frame(opClose, closeBody(1005, ""))}, 1002},
		{"close code 1006", [][]byte{frame(opClose, closeBody(1006, ""))}, 1002},
		{"close code 1015", [][]byte{frame(opClose, closeBody(1015, ""))}, 1002},
		{"close code 999", [][]byte{frame(opClose, closeBody(999, ""))}, 1002},
		{"close code 0", [][]byte{frame(opClose, closeBody(0, ""))}, 1002},
		{"close code 1004", [][]byte{frame(opClose, closeBody(1004, ""))}, 1002},
		{"close code 2999", [][]byte{frame(opClose, closeBody(2999, ""))}, 1002},
		{"close code 5000", [][]byte{frame(opClose, closeBody(5000, ""))}, 1002},
		{"close code 65535", [][]byte{frame(opClose, closeBody(65535, ""))}, 1002},
		{"close reason not UTF-8", [][]byte{frame(opClose, closeBody(1000, "\xff\xfe"))}, 1002},
		{"unmasked text", [][]byte{rawFrame(bitFIN|opText, false, []byte("hi"))}, 1002},
		{"unmasked ping", [][]byte{rawFrame(bitFIN|opPing, false, nil)}, 1002},
		{"unmasked close", [][]byte{rawFrame(bitFIN|opClose, false, closeBody(1000, ""))}, 1002},
		// More input behind the violation: the close frame must still reach the client.
		{"unmasked text, then 64 KiB more", [][]byte{rawFrame(bitFIN|opText, false, []byte("hi")), make([]byte, 64<<10)}, 1002},
		{"masked then unmasked", [][]byte{frame(opBinary, []byte{1}), rawFrame(bitFIN|opBinary, false, []byte{2})}, 1002},
		{"opcode 3", [][]byte{frame(0x3, nil)}, 1002},
		{"opcode 7", [][]byte{frame(0x7, []byte("x"))}, 1002},
		{"opcode 0xB", [][]byte{frame(0xB, nil)}, 1002},
		{"opcode 0xF", [][]byte{frame(0xF, nil)}, 1002},
		{"RSV1 without compression", [][]byte{frame(bitRSV1|opText, []byte("hi"))}, 1002},
		{"RSV2", [][]byte{frame(bitRSV2|opBinary, []byte{0})}, 1002},
		{"RSV3", [][]byte{frame(bitRSV3|opText, []byte("hi"))}, 1002},
		{"RSV on ping", [][]byte{frame(bitRSV1|opPing, nil)}, 1002},
		{"continuation without a start", [][]byte{frame(opCont, []byte("x"))}, 1002},
		{"new message inside a fragmented one", [][]byte{rawFrame(opText, true, []byte("a")), frame(opText, []byte("b"))}, 1002},
		// Control group: valid close codes are answered with the same code (RFC 6455 5.5.1).
		{"close 1000 (valid)", [][]byte{frame(opClose, closeBody(1000, "bye"))}, 1000},
		{"close 3000 (valid)", [][]byte{frame(opClose, closeBody(3000, ""))}, 3000},
		{"close 4999 (valid)", [][]byte{frame(opClose, closeBody(4999, ""))}, 4999},
		{"empty close (valid)", [][]byte{frame(opClose, nil)}, 1005},
		{"ping inside a fragmented message (valid)", [][]byte{
			rawFrame(opText, true, []byte("a")), frame(opPing, []byte("p")), frame(opCont, []byte("b")),
			frame(opClose, closeBody(1001, "")),
		}, 1001},
	}
	violations := 0.0
	for _, tc := range cases {
		if tc.want == 1002 {
			violations++
		}
		t.Run(tc.name, func(t *testing.T) {
			r := g.rawDial(t, "attacker")
			r.send(t, tc.frames...)
			r.expectClose(t, tc.want)
		})
	}
	g.waitMetric(t, violations, "wsgateway_disconnects_total", "reason", "protocol")
	g.stillServes(t, c)
}

// TestControlFloods: every ping costs the gateway a pong write, and unsolicited pongs, legal
// (RFC 6455 5.5.3), are still inbound work: both count against max-inbound-rate, so a flood of
// either is closed with 1008 after the burst (twice the rate).
func TestControlFloods(t *testing.T) {
	t.Parallel()
	for _, op := range []byte{opPing, opPong} {
		t.Run(map[byte]string{opPing: "ping", opPong: "pong"}[op], func(t *testing.T) {
			t.Parallel()
			g := start(t, func(c *config.Config) { c.MaxInboundRate = 20 }, server.Options{})
			c := g.startCanary(t)
			r := g.rawDial(t, "flooder")
			flood := make([]byte, 0, 500*12)
			for i := range 500 {
				flood = append(flood, frame(op, []byte(strconv.Itoa(i)))...)
			}
			r.send(t, flood)
			if pongs, burst := r.expectClose(t, 1008), 2*20; pongs > burst+5 {
				t.Errorf("%d pongs before the close; the burst is %d", pongs, burst)
			}
			g.waitMetric(t, 1, "wsgateway_disconnects_total", "reason", "rate_limited")
			g.stillServes(t, c)
		})
	}
}

// TestDataFlood: data frames, and the text "ping" that costs a "pong" each, over
// max-inbound-rate → 1008.
func TestDataFlood(t *testing.T) {
	t.Parallel()
	g := start(t, func(c *config.Config) { c.MaxInboundRate = 20 }, server.Options{})
	c := g.startCanary(t)

	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"binary", frame(opBinary, []byte{1, 2, 3})},
		{"text", frame(opText, []byte("hello"))},
		{"text ping", frame(opText, []byte("ping"))},
		{"empty", frame(opBinary, nil)},
		{"fragments", append(rawFrame(opText, true, []byte("a")), frame(opCont, []byte("b"))...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := g.rawDial(t, "flooder")
			r.send(t, bytes.Repeat(tc.frame, 300))
			r.expectClose(t, 1008)
		})
	}
	g.waitMetric(t, 5, "wsgateway_disconnects_total", "reason", "rate_limited")
	g.stillServes(t, c)
}

// TestHugeAnnouncedFrame: a header announcing 1 GiB (and more) is refused with 1009 as soon
// as the header is read, before any payload, and allocates nothing near its size. Not
// parallel: it reads the process's memory statistics.
func TestHugeAnnouncedFrame(t *testing.T) {
	g := start(t, nil, server.Options{})
	c := g.startCanary(t)

	var key [4]byte
	const gib = 1 << 30
	start := memNow()
	cases := []struct {
		name   string
		frames [][]byte
	}{
		{"binary 1 GiB, 256 KiB of it sent", [][]byte{header(bitFIN|opBinary, true, gib, key), make([]byte, 256<<10)}},
		{"text 1 GiB", [][]byte{header(bitFIN|opText, true, gib, key)}},
		{"continuation of 1 GiB", [][]byte{rawFrame(opText, true, []byte("a")), header(bitFIN|opCont, true, gib, key)}},
		{"2^63-1 bytes", [][]byte{header(bitFIN|opBinary, true, 1<<63-1, key)}},
		{"one byte over max-message-bytes", [][]byte{header(bitFIN|opBinary, true, uint64(g.cfg.MaxMessageBytes)+1, key)}},
		{"fragments adding up to one byte over", [][]byte{
			rawFrame(opBinary, true, make([]byte, g.cfg.MaxMessageBytes)), header(bitFIN|opCont, true, 1, key),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := g.rawDial(t, "bigsender")
			begin := time.Now()
			r.send(t, tc.frames...)
			r.expectClose(t, 1009)
			if d := time.Since(begin); d > 2*time.Second {
				t.Errorf("close 1009 took %v; want it at once", d)
			}
		})
	}
	t.Run("exactly max-message-bytes is fine", func(t *testing.T) {
		r := g.rawDial(t, "bigsender")
		r.send(t, frame(opBinary, make([]byte, g.cfg.MaxMessageBytes)), frame(opClose, closeBody(1000, "")))
		r.expectClose(t, 1000)
	})
	end := memNow()
	t.Logf("memory: allocated %d KiB during the attacks; heap %d → %d KiB; RSS %d → %d KiB",
		(end.totalAlloc-start.totalAlloc)>>10, start.heap>>10, end.heap>>10, start.rss>>10, end.rss>>10)
	const slack = 64 << 20 // far below 1 GiB, far above what the handful of connections use
	if d := end.totalAlloc - start.totalAlloc; d > slack {
		t.Errorf("%d MiB allocated while refusing announced lengths", d>>20)
	}
	if end.rss > start.rss+slack {
		t.Errorf("RSS grew from %d to %d MiB", start.rss>>20, end.rss>>20)
	}
	g.stillServes(t, c)
}

// TestHugeLengthWithTopBitSet: a 64-bit length with its most significant bit set is
// invalid (RFC 6455 5.2). gorilla drops such a connection without a close frame; the point
// here is that nothing is allocated or read and the gateway goes on serving.
func TestHugeLengthWithTopBitSet(t *testing.T) {
	t.Parallel()
	g := start(t, nil, server.Options{})
	c := g.startCanary(t)
	r := g.rawDial(t, "bigsender")
	r.send(t, header(bitFIN|opBinary, true, 1<<63|1<<30, [4]byte{}))
	code, _, err := r.closeCode(t)
	switch {
	case err == errNoCloseFrame:
		t.Log("gorilla closed the connection without a close frame")
	case err != nil:
		t.Fatal(err)
	case code != 1002 && code != 1009:
		t.Fatalf("close %d; want 1002, 1009 or none", code)
	}
	g.stillServes(t, c)
}

type memStats struct{ totalAlloc, heap, rss uint64 }

func memNow() memStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memStats{totalAlloc: m.TotalAlloc, heap: m.HeapAlloc, rss: rss()}
}

// rss reads the resident set size from /proc/self/statm (second field, in pages).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(f[1], 10, 64)
	return n * uint64(os.Getpagesize())
}
