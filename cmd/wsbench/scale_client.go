package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// One process may hold at most ~20,000 open files, so the scale run (scale.go) spreads its
// clients over several "wsbench scale-client" processes. Each holds the users
// u<first>..u<first+conns-1>, connects and closes them on command, and reports what its
// readers counted. The coordinator speaks to it over stdin/stdout, one line each way:
//
//	connect N   open clients until the first N are open   → {"connected":…,"errors":…}
//	close N     close every client from the N-th on      → {"open":…}
//	measure 0|1 record latencies (0: stop)               → {}
//	stats       the counters                                → clientStats
//	hist        the counters, and the latencies recorded since the previous hist
//	quit        close everything and exit
//
// Payload timestamps are nanoseconds since --base (Unix ns), which the coordinator chose: all
// processes run on one machine, so their wall clocks agree.

// clientStats is a scale-client's answer to every command.
type clientStats struct {
	Connected    int64 `json:"connected"`
	Errors       int64 `json:"errors"`
	Open         int   `json:"open"`
	Received     int64 `json:"received"`
	Dup          int64 `json:"dup"`
	Reordered    int64 `json:"reordered"`
	Probes       int64 `json:"probes"`
	Closed       int64 `json:"closed"`
	BadFrames    int64 `json:"bad_frames"`
	LastDelivery int64 `json:"last_delivery_ns"` // since base
	// CloseCodes counts the connections that ended without wsbench closing them, by close
	// code (-1: no close frame).
	CloseCodes map[string]int `json:"close_codes,omitempty"`
	Hist       *histWire      `json:"hist,omitempty"`
	Err        string         `json:"err,omitempty"`
}

// histWire is a histogram snapshot on the wire: only the buckets that hold something.
type histWire struct {
	Buckets [][2]uint64 `json:"b"` // bucket index, count
	Total   uint64      `json:"n"`
	Sum     uint64      `json:"sum"`
	Max     uint64      `json:"max"`
}

// deltaWire returns what cur recorded beyond prev (nil: everything). A snapshot does not
// know when its maximum was recorded, so the delta's maximum is the upper edge of its highest
// bucket (within 1/64), capped by the maximum so far.
func deltaWire(cur, prev *histSnapshot) *histWire {
	w := &histWire{Total: cur.total, Sum: cur.sum}
	if prev != nil {
		w.Total -= prev.total
		w.Sum -= prev.sum
	}
	for i, c := range cur.counts {
		if prev != nil {
			c -= prev.counts[i]
		}
		if c == 0 {
			continue
		}
		w.Buckets = append(w.Buckets, [2]uint64{uint64(i), c})
		low, width := bucketRange(i)
		w.Max = min(low+width-1, cur.max)
	}
	return w
}

// add merges w into s.
func (s *histSnapshot) add(w *histWire) {
	for _, b := range w.Buckets {
		if b[0] < histBuckets {
			s.counts[b[0]] += b[1]
		}
	}
	s.total += w.Total
	s.sum += w.Sum
	s.max = max(s.max, w.Max)
}

// runScaleClient is "wsbench scale-client": it serves the commands of in until quit or EOF.
func runScaleClient(args []string, in io.Reader, out, logw io.Writer) int {
	fs := flag.NewFlagSet("scale-client", flag.ContinueOnError)
	fs.SetOutput(logw)
	var targets, sources string
	var first int
	var baseNS int64
	cfg := &config{Mode: modeRaw, UserPrefix: "u", DialTimeout: 10 * time.Second}
	fs.StringVar(&targets, "target", "", "comma-separated ws:// URLs of the nodes; client i goes to node i mod count")
	fs.IntVar(&cfg.Conns, "conns", 0, "clients of this process")
	fs.IntVar(&first, "first", 0, "global index of this process's first user")
	fs.Int64Var(&baseNS, "base", 0, "Unix ns the payload timestamps count from")
	fs.IntVar(&cfg.DialConcurrency, "dial-concurrency", 64, "handshakes in flight")
	fs.StringVar(&sources, "source-addrs", "127.0.0.2-127.0.0.50", "client source addresses")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "wsbench-secret-of-at-least-32-bytes", "HS256 secret")
	fs.IntVar(&cfg.Payload, "payload", 100, "payload size in bytes (sizes the read buffer)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if cfg.Targets, err = parseURLs(targets, "ws", "wss"); err != nil {
		fmt.Fprintln(logw, "scale-client: target:", err)
		return 2
	}
	if cfg.SourceAddrs, err = parseAddrs(sources); err != nil {
		fmt.Fprintln(logw, "scale-client: source-addrs:", err)
		return 2
	}
	if _, _, err := raiseNoFile(); err != nil {
		fmt.Fprintln(logw, "scale-client: RLIMIT_NOFILE:", err)
	}
	sc := newScaleClient(cfg, time.Unix(0, baseNS), first)
	defer sc.closeFrom(0)
	return sc.serve(in, out)
}

type scaleClient struct {
	f      *fleet
	toks   []string
	dialed int // clients [0, dialed) were dialed and not closed since
	closed bool
	prev   *histSnapshot
}

func newScaleClient(cfg *config, base time.Time, first int) *scaleClient {
	f := newFleet(cfg, base, &counters{})
	for i, c := range f.clients {
		c.user = cfg.UserPrefix + strconv.Itoa(first+i)
	}
	return &scaleClient{f: f}
}

func (sc *scaleClient) serve(in io.Reader, out io.Writer) int {
	ctx := context.Background()
	s := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	for s.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(s.Text()), " ")
		n, _ := strconv.Atoi(arg)
		var st clientStats
		switch cmd {
		case "connect":
			if err := sc.connect(ctx, min(n, len(sc.f.clients))); err != nil {
				st.Err = err.Error()
			}
		case "close":
			sc.closeFrom(max(n, 0))
		case "measure":
			sc.f.measuring.Store(n == 1)
		case "stats":
		case "hist":
			cur := sc.f.hist.snapshot()
			st.Hist = deltaWire(cur, sc.prev)
			sc.prev = cur
		case "quit":
			return 0
		default:
			st.Err = fmt.Sprintf("unknown command %q", cmd)
		}
		sc.fill(&st)
		if err := enc.Encode(&st); err != nil {
			return 1
		}
	}
	return 0
}

func (sc *scaleClient) fill(st *clientStats) {
	f, c := sc.f, sc.f.cnt
	st.Connected, st.Errors, st.Open = f.connected.Load(), f.dialErrs.Load(), f.open()
	st.Received, st.Dup, st.Reordered = c.received.Load(), c.dup.Load(), c.reordered.Load()
	st.Probes, st.Closed, st.BadFrames = c.probes.Load(), c.closed.Load(), c.badFrames.Load()
	st.LastDelivery = f.lastDelivery.Load()
	f.codeMu.Lock()
	for code, n := range f.closeCodes {
		if st.CloseCodes == nil {
			st.CloseCodes = map[string]int{}
		}
		st.CloseCodes[strconv.Itoa(code)] += n
	}
	f.codeMu.Unlock()
}

// connect dials clients [dialed, n).
func (sc *scaleClient) connect(ctx context.Context, n int) error {
	if sc.toks == nil {
		toks, err := sc.f.tokens()
		if err != nil {
			return err
		}
		sc.toks = toks
	}
	from := sc.dialed
	if n <= from {
		return nil
	}
	if sc.closed {
		// A client's reader and done channel serve one connection only.
		return errors.New("connect after close: closed clients are not reopened")
	}
	sc.dialed = n
	f := sc.f
	return dialAll(ctx, n-from, f.cfg.DialConcurrency, &f.dialErrs, "connections", func(i int) error {
		c := f.clients[from+i]
		if err := f.dialOne(ctx, c, sc.toks[from+i]); err != nil {
			return err
		}
		f.connected.Add(1)
		return nil
	})
}

// closeFrom closes clients [n, dialed) with a close frame, so the gateways see a clean
// goodbye; their ends are not counted as connections lost.
func (sc *scaleClient) closeFrom(n int) {
	if n >= sc.dialed {
		return
	}
	f := sc.f
	f.closing.Store(true)
	defer f.closing.Store(false)
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, c := range f.clients[n:sc.dialed] {
		if c.ws == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			t := time.NewTimer(2 * time.Second)
			select {
			case <-c.done:
			case <-t.C:
			}
			t.Stop()
			c.ws.Close()
			<-c.done
		})
	}
	wg.Wait()
	sc.dialed, sc.closed = n, true
}
