package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	gwconfig "github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
)

// TestProfiledGateway is a test-only wrapper that runs the real gateway (config.Parse and
// server.Run, as cmd/gateway does) with Go's pprof served on --pprof-addr, for CPU profiles
// under wsbench load while the gateway has no --pprof-addr setting of its own. It skips unless
// gateway flags follow "--":
//
//	go test -c -o /tmp/gw-pprof ./cmd/wsbench
//	/tmp/gw-pprof -test.run '^TestProfiledGateway$' -test.timeout 0 -- \
//	    --pprof-addr 127.0.0.1:6060 --redis-url redis://127.0.0.1:6379 --jwt-secret x --api-keys k
//
// wsbench can start it itself: --spawn-gateway "/tmp/gw-pprof -test.run ^TestProfiledGateway$
// -test.timeout 0 -- --pprof-addr 127.0.0.1:6060" --server-profile
// http://127.0.0.1:6060/debug/pprof/profile. SIGTERM drains and stops it like the gateway.
func TestProfiledGateway(t *testing.T) {
	args := flag.Args()
	if len(args) == 0 {
		t.Skip("a wrapper for profiling: give gateway flags after --")
	}
	pprofAddr := ""
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--pprof-addr" || a == "-pprof-addr":
			if i+1 < len(args) {
				pprofAddr = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "--pprof-addr=") || strings.HasPrefix(a, "-pprof-addr="):
			pprofAddr = a[strings.Index(a, "=")+1:]
		default:
			rest = append(rest, a)
		}
	}
	cfg, err := gwconfig.Parse(rest, os.Environ(), os.Stdout)
	if err != nil {
		t.Fatalf("gateway flags: %v", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(cfg, server.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ln, err := net.Listen("tcp", pprofAddr)
		if err != nil {
			t.Fatal(err)
		}
		ps := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = ps.Serve(ln) }()
		defer ps.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatal(err)
	}
}
