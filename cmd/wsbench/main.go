// Command wsbench is wsgateway's load generator: it opens many WebSocket connections, runs one
// scenario (idle, latency, throughput, broadcast, batch, cross-node), prints a progress line
// every second, a summary, and one "RESULT {json}" line. See `wsbench --help` and BENCHMARKS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code (0 ok, 1 the run failed, 2 bad
// flags).
func run(args []string, stdout, stderr io.Writer) int {
	if code, ok := runSub(args, stdout, stderr); ok {
		return code
	}
	cfg, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "wsbench: "+err.Error())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Deadline)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := newBench(cfg, stdout)
	res, err := b.run(ctx)
	if res == nil {
		fmt.Fprintln(stderr, "wsbench: "+err.Error())
		return 1
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (deadline %s or interrupted)", err, cfg.Deadline)
		}
		res.Error = err.Error()
	}
	b.summary(stdout, res)
	if cfg.SVG != "" && b.fleet != nil && res.Latency != nil {
		if werr := b.writeChart(res); werr != nil {
			fmt.Fprintln(stderr, "wsbench: svg: "+werr.Error())
			return 1
		}
	}
	if err != nil {
		return 1
	}
	return 0
}

func (b *bench) writeChart(r *result) error {
	f, err := os.Create(b.cfg.SVG)
	if err != nil {
		return err
	}
	title := fmt.Sprintf("wsgateway latency — %s, %d connections", r.Scenario, r.Conns)
	sub := fmt.Sprintf("%d samples; ", r.Latency.Count)
	if r.Rate > 0 {
		sub += fmt.Sprintf("%d pushes/s scheduled (open loop, via %s), reached %.0f/s; ", r.Rate, r.Via, r.PushRate)
	} else {
		sub += fmt.Sprintf("%d publishers, %.0f pushes/s, %.0f deliveries/s; ", r.Publishers, r.PushRate, r.DeliveryRate)
	}
	sub += fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms", r.Latency.P50, r.Latency.P99, r.Latency.Max)
	if err := writeSVG(f, b.fleet.hist.snapshot(), title, sub); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
