// Package server wires one gateway process together from a config.Config: the Redis client
// (owned here, like main would), bus, offline store, hub, HTTP routes, metrics, and the order
// in which they start and stop. cmd/gateway only parses flags and handles signals, so tests
// boot the real program through this package on 127.0.0.1:0.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/api"
	"github.com/wsgateway/wsgateway/internal/auth"
	"github.com/wsgateway/wsgateway/internal/bus"
	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/inbox"
	"github.com/wsgateway/wsgateway/internal/keys"
	"github.com/wsgateway/wsgateway/internal/metrics"
	"github.com/wsgateway/wsgateway/internal/presence"
	"github.com/wsgateway/wsgateway/internal/upstream"
	"github.com/wsgateway/wsgateway/internal/ws"
)

// Version is the build's version, set with -ldflags "-X …/server.Version=v1.2.3".
var Version = "dev"

// apiBodyTimeout bounds reading one whole request, body included (1 MiB at most).
const apiBodyTimeout = 30 * time.Second

// Options are settings that are not flags: test hooks and tuning with sensible defaults.
type Options struct {
	Logger *slog.Logger
	// ProbeInterval and ProbeTimeout tune the pub/sub self-probe (defaults 2s and 6s).
	ProbeInterval, ProbeTimeout time.Duration
	// CloseGrace is how long a closing connection waits for the client's close answer.
	CloseGrace time.Duration
	// APIBodyTimeout bounds reading one whole request, body included (default 30s); a
	// body that never ends gets 408 after it. Tests shrink it.
	APIBodyTimeout time.Duration
	// PresenceHeartbeat and PresenceDeadAfter tune how soon a dead node's connections stop
	// counting (defaults 2s and 10s); tests shrink them.
	PresenceHeartbeat, PresenceDeadAfter time.Duration
	// UpstreamQueueLen bounds the client frames waiting for Redis (default 4096); tests
	// shrink it to see the overflow.
	UpstreamQueueLen int
	// BusRedisAddr (host:port), with redis-url only, gives the bus (pub/sub, its probe,
	// broadcast, kick) a Redis client of its own at this address: the same server
	// reached another way, such as a fault-injecting proxy in tests that must break the
	// pub/sub link and nothing else. Empty: the bus shares the process's client.
	BusRedisAddr string
}

// fanout is what the server needs from either bus.
type fanout interface {
	ws.Subscriber
	api.Bus
	Ready() error
	Close() error
}

// Server is one gateway process.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	rdb     redis.UniversalClient // nil in in-memory mode
	busRdb  *redis.Client         // the bus's own client (Options.BusRedisAddr), else nil
	metrics *metrics.Metrics
	hub     *ws.Hub
	bus     fanout
	store   store
	up      *upstream.Queue // nil in in-memory mode and with --upstream=false
	pres    *presence.Redis // nil in in-memory mode
	http    *http.Server
	ln      net.Listener
	served  chan error
	// stopped makes Shutdown idempotent: the second call waits for the first one's result.
	stopOnce sync.Once
	stopErr  error
	pprof    *http.Server // nil unless pprof-addr is set
}

// Compile-time checks that the implementations fit the consumers' interfaces.
var (
	_ fanout      = (*bus.Memory)(nil)
	_ fanout      = (*bus.Redis)(nil)
	_ fanout      = (*bus.Cluster)(nil)
	_ bus.Handler = (*ws.Hub)(nil)
	_ ws.Observer = (*metrics.Metrics)(nil)
)

var (
	_ ws.Upstream       = (*upstream.Queue)(nil)
	_ upstream.Observer = (*metrics.Metrics)(nil)
)

// New builds a server from a validated config. Nothing listens until Listen.
func New(cfg config.Config, opt Options) (*Server, error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node_id", cfg.NodeID)
	s := &Server{cfg: cfg, log: log, metrics: metrics.New(cfg.NodeID, Version)}

	var verifier *auth.Verifier
	if cfg.JWTSecret != "" || len(cfg.JWTPublicKeyPEM) > 0 {
		v, err := auth.NewVerifier([]byte(cfg.JWTSecret), cfg.JWTPublicKeyPEM,
			auth.WithAudience(cfg.JWTAudience), auth.WithIssuer(cfg.JWTIssuer))
		if err != nil {
			return nil, fmt.Errorf("jwt: %w", err)
		}
		verifier = v
	}

	var startBus func(bus.Handler)
	if cfg.UsesRedis() {
		rdb, err := newRedisClient(cfg)
		if err != nil {
			return nil, err
		}
		s.rdb = rdb
		busRdb := rdb
		if opt.BusRedisAddr != "" {
			if cfg.RedisURL == "" {
				_ = rdb.Close()
				return nil, errors.New("server: Options.BusRedisAddr needs redis-url")
			}
			bo, _ := redis.ParseURL(cfg.RedisURL) // parsed once already by newRedisClient
			bo.Addr = opt.BusRedisAddr
			s.busRdb = redis.NewClient(bo)
			busRdb = s.busRdb
		}
		_, cluster := rdb.(*redis.ClusterClient)
		rstore := inbox.NewRedis(rdb, inbox.Options{
			Prefix: cfg.KeyPrefix, Max: cfg.OfflineMax, TTL: cfg.OfflineTTL, ResumeTTL: cfg.ResumeTTL,
			DedupTTL: cfg.DedupTTL, Sharded: cluster,
			WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout,
			NodeID: cfg.NodeID, UndeliveredAfter: cfg.UndeliveredAfter,
		})
		bopt := bus.RedisOptions{
			Prefix: cfg.KeyPrefix, NodeID: cfg.NodeID, Logger: log, Observer: s.metrics,
			ProbeInterval: opt.ProbeInterval, ProbeTimeout: opt.ProbeTimeout,
			OnReady: func(ctx context.Context) {
				if err := rstore.LoadFunction(ctx); err != nil {
					log.Warn("loading the push-or-store Redis Function failed", "err", err)
				}
			},
		}
		if cc, ok := rdb.(*redis.ClusterClient); ok {
			b := bus.NewCluster(cc, bopt)
			s.bus, startBus = b, b.Start
		} else {
			b := bus.NewRedis(busRdb, bopt)
			s.bus, startBus = b, b.Start
		}
		s.store = rstore
		s.pres = presence.NewRedis(rdb, presence.Options{
			Prefix: cfg.KeyPrefix, NodeID: cfg.NodeID, MaxConnsPerUser: cfg.MaxConnsPerUser, Sharded: cluster,
			Heartbeat: opt.PresenceHeartbeat, DeadAfter: opt.PresenceDeadAfter, Logger: log,
		})
		if cfg.Upstream {
			// Client frames reach Redis through this queue, off the connections' read path.
			s.up = upstream.New(rdb, upstream.Options{
				Stream: keys.Prefix(cfg.KeyPrefix).Upstream(), NodeID: cfg.NodeID, MaxBytes: cfg.UpstreamMaxBytes,
				QueueLen: opt.UpstreamQueueLen, Observer: s.metrics, Logger: log,
			})
		}
	} else {
		b := bus.NewMemory()
		s.bus, startBus = b, b.Start
		s.store = inbox.NewMemory(b.Publish, inbox.Options{
			Max: cfg.OfflineMax, TTL: cfg.OfflineTTL, ResumeTTL: cfg.ResumeTTL, DedupTTL: cfg.DedupTTL,
		}, nil)
	}

	s.hub = ws.NewHub(ws.Config{
		PingInterval:       cfg.PingInterval,
		PongTimeout:        cfg.PongTimeout,
		WriteTimeout:       cfg.WriteTimeout,
		MaxMessageBytes:    cfg.MaxMessageBytes,
		SendQueue:          cfg.SendQueue,
		MaxConnsPerUser:    cfg.MaxConnsPerUser,
		OfflineMax:         cfg.OfflineMax,
		AllowedOrigins:     cfg.AllowedOrigins,
		MaxInboundRate:     cfg.MaxInboundRate,
		MaxConns:           cfg.MaxConns,
		MaxConnsPerIP:      cfg.MaxConnsPerIP,
		CloseGrace:         opt.CloseGrace,
		EnforceTokenExpiry: cfg.EnforceTokenExpiry,
	}, ws.Deps{Bus: s.bus, Inbox: hubInbox{s.store}, Presence: s.wsPresence(), Upstream: s.wsUpstream(),
		Observer: s.metrics, Logger: log})
	startBus(s.hub)
	if s.pres != nil {
		s.pres.Start()
	}
	if rs, ok := s.store.(*inbox.Redis); ok {
		rs.StartDue()
	}

	bodyTimeout := opt.APIBodyTimeout
	if bodyTimeout <= 0 {
		bodyTimeout = apiBodyTimeout
	}
	s.http = &http.Server{
		Handler: s.routes(verifier),
		// The upgrade request (and every API request's headers) must arrive whole within
		// handshake-timeout: a client that dribbles its headers is cut off.
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		// Bounds a request body that never ends. Hijacked WebSockets are unaffected: their
		// read loop sets its own deadline first thing.
		ReadTimeout: bodyTimeout,
		// Headers beyond 16 KiB get 431 from net/http; a JWT fits many times over.
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// wsPresence is the hub's presence: deployment-wide on Redis, none (nil) in memory.
func (s *Server) wsPresence() ws.Presence {
	if s.pres == nil {
		return nil
	}
	return s.pres
}

// apiPresence is what the API's presence call counts.
func (s *Server) apiPresence() api.Presence {
	if s.pres == nil {
		return hubPresence{s.hub}
	}
	return s.pres
}

// wsUpstream is the hub's upstream: nil (frames dropped after the checks) unless a queue
// runs — never a nil *Queue in a non-nil interface.
func (s *Server) wsUpstream() ws.Upstream {
	if s.up == nil {
		return nil
	}
	return s.up
}

// newRedisClient builds the one Redis client of the process for the configured mode: a plain
// client (redis-url), a Sentinel failover client, or a Cluster client.
func newRedisClient(cfg config.Config) (redis.UniversalClient, error) {
	switch {
	case len(cfg.RedisCluster) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: cfg.RedisCluster, Password: cfg.RedisPassword}), nil
	case len(cfg.RedisSentinel) > 0:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: cfg.RedisSentinelMaster, SentinelAddrs: cfg.RedisSentinel, Password: cfg.RedisPassword,
		}), nil
	}
	ropt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("redis-url: %w", err)
	}
	return redis.NewClient(ropt), nil
}

// Listen binds the configured address.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.served = make(chan error, 1)
	go func() { s.served <- s.http.Serve(ln) }()
	s.log.Info("listening", "addr", ln.Addr().String(), "redis", s.rdb != nil, "dev", s.cfg.Dev)
	if s.cfg.PprofAddr != "" {
		pln, err := net.Listen("tcp", s.cfg.PprofAddr)
		if err != nil {
			_ = s.http.Close()
			<-s.served
			s.ln = nil
			return fmt.Errorf("pprof-addr %s: %w", s.cfg.PprofAddr, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s.pprof = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = s.pprof.Serve(pln) }()
		s.log.Info("pprof listening", "addr", pln.Addr().String())
	}
	return nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// ForTest returns the server's test-only accessors. Nothing outside tests calls it; keeping
// them behind one handle keeps them out of the server's own API.
func (s *Server) ForTest() ForTest { return ForTest{s} }

// ForTest is what tests may see inside a running server (see [Server.ForTest]).
type ForTest struct{ s *Server }

// Hub is the server's connection hub.
func (t ForTest) Hub() *ws.Hub { return t.s.hub }

// Metrics are the server's metrics, with their registry.
func (t ForTest) Metrics() *metrics.Metrics { return t.s.metrics }

// Push does what POST /api/v1/push does for one user, without HTTP (tests, tools); it returns
// the message's number.
func (s *Server) Push(ctx context.Context, user string, data []byte) (int64, error) {
	r, err := s.store.Push(ctx, user, data, inbox.PushOptions{})
	return r.Seq, err
}

// Run listens, serves until ctx ends, then shuts down within shutdown-grace.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		s.closeBackends()
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-s.served:
		s.closeBackends()
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	return s.Shutdown(sctx)
}

// Shutdown drains in the order the README's "Rolling updates" promises: refuse new clients and turn /readyz 503
// (while still answering it), close every client with 1001 and store what was queued, then
// stop HTTP, then the bus, then Redis.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.shutdown(ctx) })
	return s.stopErr
}

func (s *Server) shutdown(ctx context.Context) error {
	start := time.Now()
	s.log.Info("draining", "connections", s.hub.Conns())
	herr := s.hub.Shutdown(ctx)
	if herr != nil {
		s.log.Warn("drain did not finish in time", "left", s.hub.Conns(), "err", herr)
	}
	if s.ln != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			_ = s.http.Close()
		}
		<-s.served
	}
	if s.pprof != nil {
		_ = s.pprof.Close()
	}
	s.closeBackends()
	s.log.Info("stopped", "took", time.Since(start).String())
	return herr
}

func (s *Server) closeBackends() {
	if s.up != nil {
		_ = s.up.Close() // sends what clients sent last, before the client closes
	}
	if s.pres != nil {
		// After the hub's drain, so this node's connections uncounted themselves first.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.pres.Close(ctx)
		cancel()
	}
	_ = s.bus.Close()
	if rs, ok := s.store.(*inbox.Redis); ok {
		rs.Close() // its batch workers, which use the client closed next
	}
	if s.busRdb != nil {
		_ = s.busRdb.Close()
	}
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
}
