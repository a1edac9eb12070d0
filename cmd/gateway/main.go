// Command gateway is the wsgateway server: a WebSocket push gateway that scales out behind a
// load balancer with Redis as the only shared part. See README.md and `gateway --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args, environ []string, stdout, stderr io.Writer) int {
	cfg, err := config.Parse(args, environ, stdout)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "gateway: "+err.Error())
		return 2
	}
	log := newLogger(cfg, stderr)
	setMemoryLimit(log, memlimit.FromCgroup)

	// The first SIGINT/SIGTERM starts the drain; stop() restores the default action first, so
	// that a second signal ends the process at once however soon it follows: the server sees
	// ctx end only after stop returned.
	sig, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-sig.Done()
		stop()
		cancel()
	}()

	srv, err := server.New(cfg, server.Options{Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "gateway: "+err.Error())
		return 2
	}
	if err := srv.Run(ctx); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
