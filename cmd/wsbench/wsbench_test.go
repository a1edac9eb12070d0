package main

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	// Every value falls in a bucket whose range holds it, buckets are contiguous, and a
	// bucket is at most 1/64 of its values wide.
	prevEnd := uint64(0)
	for i := 0; i < 64*40; i++ {
		low, w := bucketRange(i)
		if low != prevEnd {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, low, prevEnd)
		}
		if low >= 128 && w*64 > low {
			t.Fatalf("bucket %d [%d,+%d) wider than 1/64", i, low, w)
		}
		for _, v := range []uint64{low, low + w - 1} {
			if got := bucketOf(v); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		prevEnd = low + w
	}
}

func TestQuantiles(t *testing.T) {
	var h histogram
	vals := make([]time.Duration, 0, 100000)
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		d := time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		vals = append(vals, d)
		h.Record(d)
	}
	slices.Sort(vals)
	s := h.snapshot()
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := s.Quantile(q)
		if diff := float64(got-exact) / float64(exact); diff < -0.02 || diff > 0.02 {
			t.Errorf("q%v = %v, exact %v (%.1f%% off)", q, got, exact, diff*100)
		}
	}
	if s.Max() != vals[len(vals)-1] {
		t.Errorf("max %v, want %v", s.Max(), vals[len(vals)-1])
	}
	if s.Quantile(1) != s.Max() {
		t.Errorf("q1 %v != max %v", s.Quantile(1), s.Max())
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, p := range []payload{{0, 0, 0}, {1, 1, 1}, {255, 1 << 40, 1<<62 + 12345}} {
		for _, size := range []int{60, 100, 1000} {
			b := appendPayload(nil, p, size)
			if len(b) < size-2 || len(b) > size+60 {
				t.Errorf("size %d: got %d bytes", size, len(b))
			}
			got, ok := parsePayload(b)
			if !ok || got != p {
				t.Errorf("parse(%s) = %+v, %v; want %+v", b, got, ok, p)
			}
			if !strings.HasSuffix(string(b), `"}`) {
				t.Errorf("not a JSON object: %s", b)
			}
		}
	}
	for _, bad := range []string{"", "pong", `{"p":x`, `{"p":1,"s":`, `{"a":1}`} {
		if _, ok := parsePayload([]byte(bad)); ok {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

func TestOrder(t *testing.T) {
	var o order
	steps := []struct {
		pub       int
		seq       uint64
		dup, back bool
	}{
		{1, 1, false, false}, {1, 2, false, false}, {1, 2, true, false}, {1, 5, false, false},
		{1, 4, false, true}, {3, 1, false, false}, {3, 1, true, false}, {1, 6, false, false},
	}
	for i, s := range steps {
		dup, back := o.see(s.pub, s.seq)
		if dup != s.dup || back != s.back {
			t.Errorf("step %d (%d,%d): dup %v reordered %v, want %v %v", i, s.pub, s.seq, dup, back, s.dup, s.back)
		}
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"--scenario", "throughput", "--conns", "100"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Publishers != 64 || len(cfg.SourceAddrs) != 49 || cfg.Deadline <= cfg.Duration {
		t.Errorf("defaults: %+v", cfg)
	}
	cfg, err = parseFlags([]string{"--scenario", "broadcast", "--source-addrs", "127.0.0.7,127.0.0.9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Window != 8 || cfg.Publishers != 1 || len(cfg.SourceAddrs) != 2 {
		t.Errorf("broadcast defaults: %+v", cfg)
	}
	for _, args := range [][]string{
		{},
		{"--scenario", "nope"},
		{"--scenario", "latency", "--rate", "x"},
		{"--scenario", "latency", "--via", "redis"},
		{"--scenario", "cross-node"},
		{"--scenario", "batch", "--conns", "100", "--batch", "50"},
		{"--scenario", "idle", "--target", "http://x"},
		{"--scenario", "idle", "--source-addrs", "127.0.0.9-127.0.0.2"},
		{"--scenario", "idle", "extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
	var out bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, &out); err != flag.ErrHelp || !strings.Contains(out.String(), "-scenario") {
		t.Errorf("--help: %v, %q", err, out.String())
	}
}

func TestHTTPConn(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/chunked" {
			w.Write(bytes.Repeat([]byte("a"), 5000)) // larger than net/http's buffer: chunked
			w.(http.Flusher).Flush()
			w.Write(body)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	h, err := newHTTPConn(srv.URL, "k", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for i := 0; i < 3; i++ { // the connection is reused
		status, body, err := h.do("POST", "/x", []byte(`{"n":1}`))
		if err != nil || status != 200 || string(body) != `{"n":1}` {
			t.Fatalf("do: %d %q %v", status, body, err)
		}
	}
	status, body, err := h.do("POST", "/chunked", []byte("end"))
	if err != nil || status != 200 || len(body) != 5003 || !strings.HasSuffix(string(body), "aend") {
		t.Fatalf("chunked: %d %d bytes %v", status, len(body), err)
	}
	h2, _ := newHTTPConn(srv.URL, "", 5*time.Second)
	defer h2.Close()
	if status, _, err := h2.do("GET", "/", nil); err != nil || status != 401 {
		t.Fatalf("no key: %d %v", status, err)
	}
}

func TestSVG(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * 10 * time.Microsecond)
	}
	for _, s := range []*histSnapshot{h.snapshot(), (&histogram{}).snapshot()} {
		var out bytes.Buffer
		if err := writeSVG(&out, s, "title <&>", "sub"); err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(&out)
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("not well-formed XML: %v", err)
			}
		}
	}
}
