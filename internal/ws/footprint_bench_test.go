package ws_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// footprintConns is how many idle connections BenchmarkIdleConnFootprint opens.
const footprintConns = 2000

// Environment of the client helper process.
const (
	envFootprintAddr  = "WSGATEWAY_FOOTPRINT_ADDR"
	envFootprintConns = "WSGATEWAY_FOOTPRINT_CONNS"
)

// BenchmarkIdleConnFootprint measures what an idle connection costs the server: heap and
// goroutine stack bytes and goroutines per connection, from runtime.ReadMemStats and
// runtime.NumGoroutine before and after 2000 real connections (plus the process RSS growth).
// The clients run in a child process (this test binary re-executed as TestFootprintClients),
// so their own buffers and goroutines are not counted.
func BenchmarkIdleConnFootprint(b *testing.B) {
	b.ReportAllocs()
	var heap, stack, gor, rss float64
	for i := 0; i < b.N; i++ {
		h, s, g, r := measureFootprint(b, footprintConns)
		heap, stack, gor, rss = heap+h, stack+s, gor+g, rss+r
	}
	n := float64(b.N)
	b.ReportMetric(heap/n, "heap-B/conn")
	b.ReportMetric(stack/n, "stack-B/conn")
	b.ReportMetric(gor/n, "goroutines/conn")
	b.ReportMetric(rss/n, "rss-B/conn")
}

func measureFootprint(b *testing.B, n int) (heap, stack, goroutines, rss float64) {
	b.StopTimer()
	srv := startServer(b)
	hub := srv.ForTest().Hub()
	settle()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	g0 := runtime.NumGoroutine()
	rss0 := selfRSS()
	b.StartTimer()

	cmd := exec.Command(os.Args[0], "-test.run=^TestFootprintClients$", "-test.timeout=0")
	cmd.Env = append(os.Environ(), envFootprintAddr+"="+srv.Addr(), envFootprintConns+"="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close() // the helper exits when its stdin closes
		_ = cmd.Wait()
	}()
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "READY" {
				ready <- nil
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("helper ended before READY: %s", stderr.String())
	}()
	select {
	case err := <-ready:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		b.Fatal("helper did not connect within 60s")
	}
	wsclient.Await(b, "connections", func() bool { return hub.Conns() == n })
	// Each handler starts its writer after the upgrade and the offline drain: wait until the
	// goroutine count stops moving.
	for prev, stable := -1, 0; stable < 5; time.Sleep(20 * time.Millisecond) {
		g := runtime.NumGoroutine()
		if g == prev {
			stable++
		} else {
			stable = 0
		}
		prev = g
	}
	b.StopTimer()
	settle()
	runtime.ReadMemStats(&m1)
	g1 := runtime.NumGoroutine()
	rss1 := selfRSS()
	b.StartTimer()
	per := func(a, z uint64) float64 { return (float64(z) - float64(a)) / float64(n) }
	return per(m0.HeapInuse, m1.HeapInuse), per(m0.StackInuse, m1.StackInuse),
		float64(g1-g0) / float64(n), float64(rss1-rss0) / float64(n)
}

// settle collects garbage twice, so HeapInuse counts live objects (and their spans) only,
// and returns freed memory to the OS, so that RSS readings of later iterations start from
// the live size too.
func settle() {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
}

// selfRSS reads this process's VmRSS in bytes (0 where /proc is missing).
func selfRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// TestFootprintClients is the client side of BenchmarkIdleConnFootprint, run in a child process
// (it skips in a normal test run): it opens the connections, prints READY, reads (answering
// pings) and exits when its stdin closes.
func TestFootprintClients(t *testing.T) {
	addr := os.Getenv(envFootprintAddr)
	if addr == "" {
		t.Skip("helper process of BenchmarkIdleConnFootprint")
	}
	n, err := strconv.Atoi(os.Getenv(envFootprintConns))
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*wsclient.Conn, 0, n)
	for i := range n {
		c, _, err := wsclient.Dial(addr, wsclient.Options{User: "fp" + strconv.Itoa(i), Local: wsclient.SourceAddr(i), Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		go func() {
			for {
				if _, _, err := c.NextReader(); err != nil {
					return
				}
			}
		}()
	}
	fmt.Println("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}
