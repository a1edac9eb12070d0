// Package config turns flags and GATEWAY_* environment variables into a validated Config.
//
// Every setting is a flag --name and an environment variable GATEWAY_NAME (upper case, '-' → '_');
// the flag wins. Parse does all validation in one place so that a bad value stops the process
// before anything listens, with one line that names the setting.
package config

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is every setting of the gateway. The zero value is not useful: use Default or Parse.
type Config struct {
	Addr                string
	RedisURL            string
	RedisCluster        []string
	RedisSentinel       []string
	RedisSentinelMaster string
	// RedisPassword authenticates to Cluster nodes and to the master behind Sentinel (a
	// redis-url carries its own).
	RedisPassword string
	// RedisWaitReplicas > 0 answers a push only after WAIT confirmed that many replicas hold it.
	RedisWaitReplicas int
	RedisWaitTimeout  time.Duration
	KeyPrefix         string
	JWTSecret         string
	JWTPublicKeyFile  string
	APIKeys           []string
	Dev               bool
	Demo              bool
	AllowedOrigins    []string

	PingInterval    time.Duration
	PongTimeout     time.Duration
	WriteTimeout    time.Duration
	MaxMessageBytes int64
	SendQueue       int
	MaxConnsPerUser int

	OfflineMax int
	OfflineTTL time.Duration
	ResumeTTL  time.Duration
	DedupTTL   time.Duration

	// EnforceTokenExpiry closes a connection with 4002 when its JWT expires.
	EnforceTokenExpiry bool
	// UndeliveredAfter > 0 emits an undelivered event for a message still unacknowledged
	// this long after its push.
	UndeliveredAfter time.Duration

	ShutdownGrace time.Duration
	NodeID        string

	LogFormat string
	LogLevel  string

	MaxInboundRate   float64
	MaxConns         int
	MaxConnsPerIP    int
	HandshakeTimeout time.Duration
	PprofAddr        string

	// JWTAudience and JWTIssuer, when set, must be the token's aud (one of them, for a list)
	// and iss: a shared identity provider signs tokens for other apps with the same key.
	JWTAudience string
	JWTIssuer   string

	// Upstream turns the client → backend stream on (with Redis; without it frames are
	// always dropped after the checks).
	Upstream bool
	// UpstreamMaxBytes is each node's byte budget in the upstream stream.
	UpstreamMaxBytes int64

	// JWTPublicKeyPEM is the content of JWTPublicKeyFile, read by Parse so that an unreadable
	// file is a start-up error, not a failure at the first connect.
	JWTPublicKeyPEM []byte
}

// Default returns the documented defaults (the README's settings table) before flags and environment.
func Default() Config {
	return Config{
		Addr:               ":8080",
		KeyPrefix:          "ws:",
		PingInterval:       25 * time.Second,
		PongTimeout:        10 * time.Second,
		WriteTimeout:       10 * time.Second,
		MaxMessageBytes:    65536,
		SendQueue:          256,
		MaxConnsPerUser:    16,
		OfflineMax:         1000,
		OfflineTTL:         168 * time.Hour,
		ResumeTTL:          5 * time.Minute,
		DedupTTL:           10 * time.Minute,
		EnforceTokenExpiry: true,
		ShutdownGrace:      30 * time.Second,
		LogFormat:          "json",
		LogLevel:           "info",
		MaxInboundRate:     50,
		RedisWaitTimeout:   time.Second,
		HandshakeTimeout:   10 * time.Second,
		Upstream:           true,
		UpstreamMaxBytes:   32 << 20,
	}
}

// minJWTSecret is the shortest HS256 secret accepted outside --dev: SHA-256's output size.
const minJWTSecret = 32

// ErrHelp is returned by Parse when -h or --help was asked for; the usage is already printed.
var ErrHelp = flag.ErrHelp

// Parse reads args (without the program name) and the environment (as os.Environ returns it)
// into a validated Config. Usage and flag errors go to output.
func Parse(args []string, environ []string, output io.Writer) (Config, error) {
	c := Default()
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned as one line; --help prints below

	var apiKeys, origins, cluster, sentinel string
	fs.StringVar(&c.Addr, "addr", c.Addr, "HTTP + WebSocket listen address (127.0.0.1:8080 with --dev)")
	fs.StringVar(&c.RedisURL, "redis-url", "", "redis://[:pass@]host:port/db or rediss://…; empty = single-node in-memory mode")
	fs.StringVar(&cluster, "redis-cluster", "", "comma-separated host:port seeds of a Redis Cluster (sharded pub/sub); excludes redis-url")
	fs.StringVar(&sentinel, "redis-sentinel", "", "comma-separated Sentinel host:ports, with redis-sentinel-master; excludes redis-url")
	fs.StringVar(&c.RedisSentinelMaster, "redis-sentinel-master", "", "the master name the Sentinels watch")
	fs.StringVar(&c.RedisPassword, "redis-password", "", "password for redis-cluster nodes or the Sentinel-managed master")
	fs.IntVar(&c.RedisWaitReplicas, "redis-wait-replicas", 0, "answer a push only after WAIT confirms this many replicas hold it (0 = off)")
	fs.DurationVar(&c.RedisWaitTimeout, "redis-wait-timeout", c.RedisWaitTimeout, "how long a push waits for redis-wait-replicas before it answers 503")
	fs.StringVar(&c.KeyPrefix, "key-prefix", c.KeyPrefix, "prefix of every Redis key and channel")
	fs.StringVar(&c.JWTSecret, "jwt-secret", "", "HS256 secret for client tokens (at least 32 bytes outside --dev)")
	fs.StringVar(&c.JWTPublicKeyFile, "jwt-public-key", "", "PEM file with an RSA or EC public key (RS256/ES256)")
	fs.StringVar(&c.JWTAudience, "jwt-audience", "", "when set, tokens must carry this aud")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", "", "when set, tokens must carry this iss")
	fs.StringVar(&apiKeys, "api-keys", "", "comma-separated bearer keys for /api/* (several, for rotation)")
	fs.BoolVar(&c.Dev, "dev", false, "local development: no tokens, ?user_id= accepted, API open, demo page on")
	fs.BoolVar(&c.Demo, "demo", false, "serve the demo page at / outside --dev")
	fs.StringVar(&origins, "allowed-origins", "", "comma-separated browser origins allowed to connect; * = any (empty = same host only)")
	fs.DurationVar(&c.PingInterval, "ping-interval", c.PingInterval, "server sends a ping this often")
	fs.DurationVar(&c.PongTimeout, "pong-timeout", c.PongTimeout, "a peer silent for ping-interval + pong-timeout is dropped")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "a write that takes longer drops the peer")
	fs.Int64Var(&c.MaxMessageBytes, "max-message-bytes", c.MaxMessageBytes, "largest inbound frame/message; larger → close 1009")
	fs.IntVar(&c.SendQueue, "send-queue", c.SendQueue, "messages buffered per connection before it counts as a slow consumer")
	fs.IntVar(&c.MaxConnsPerUser, "max-conns-per-user", c.MaxConnsPerUser, "further connects of that user get HTTP 429")
	fs.IntVar(&c.OfflineMax, "offline-max", c.OfflineMax, "messages kept per user in the inbox (oldest dropped beyond it)")
	fs.DurationVar(&c.OfflineTTL, "offline-ttl", c.OfflineTTL, "a user's inbox expires this long after its last push")
	fs.DurationVar(&c.ResumeTTL, "resume-ttl", c.ResumeTTL, "how long a message stays available to since= after it was acknowledged")
	fs.DurationVar(&c.DedupTTL, "dedup-ttl", c.DedupTTL, "how long a push id is remembered for de-duplication")
	fs.DurationVar(&c.UndeliveredAfter, "undelivered-after", 0, "a message not acknowledged this long after its push emits an undelivered event (0 = off)")
	fs.BoolVar(&c.EnforceTokenExpiry, "enforce-token-expiry", c.EnforceTokenExpiry, "close a connection with 4002 when its JWT expires, unless refreshed in-band (auth <jwt>)")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "how long SIGTERM drains before exiting")
	fs.StringVar(&c.NodeID, "node-id", "", "shown in logs, metrics and /readyz (default hostname + random suffix)")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "json or text")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn, error")
	fs.Float64Var(&c.MaxInboundRate, "max-inbound-rate", c.MaxInboundRate, "inbound messages per second per connection (bursts of twice that); over it → close 1008")
	fs.IntVar(&c.MaxConns, "max-conns", 0, "connections per node; beyond it → HTTP 503 (0 = no cap)")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 0, "connections per remote address per node; beyond it → HTTP 429 (0 = no cap)")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", c.HandshakeTimeout, "the upgrade request must arrive whole within this (slow senders are cut off)")
	fs.StringVar(&c.PprofAddr, "pprof-addr", "", "serve Go's pprof on this address (keep it private)")
	fs.BoolVar(&c.Upstream, "upstream", c.Upstream, "append client frames to the Redis stream <key-prefix>upstream (a full queue to Redis drops the frame and counts it as upstream_overflow); false = drop them after the checks")
	fs.Int64Var(&c.UpstreamMaxBytes, "upstream-max-bytes", c.UpstreamMaxBytes, "bytes of Redis memory each node's entries may take in the upstream stream (older ones are trimmed)")

	// Environment first, flags after: the flag wins.
	env := envMap(environ)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "GATEWAY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := env[name]
		if !ok || envErr != nil {
			return
		}
		if err := f.Value.Set(v); err != nil {
			envErr = fmt.Errorf("invalid value %q for %s: %v", v, name, unwrapFlagErr(err))
		}
	})
	if envErr != nil {
		return Config{}, envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(output)
			fmt.Fprintln(output, "Usage: gateway [flags]\n\nEvery flag --name is also the environment variable GATEWAY_NAME; the flag wins.")
			fs.PrintDefaults()
			return Config{}, ErrHelp
		}
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	explicitAddr := false
	fs.Visit(func(f *flag.Flag) { explicitAddr = explicitAddr || f.Name == "addr" })
	if _, ok := env["GATEWAY_ADDR"]; ok {
		explicitAddr = true
	}
	if c.Dev && !explicitAddr {
		c.Addr = "127.0.0.1:8080"
	}
	c.APIKeys = splitList(apiKeys)
	c.AllowedOrigins = splitList(origins)
	c.RedisCluster = splitList(cluster)
	c.RedisSentinel = splitList(sentinel)
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.JWTPublicKeyFile != "" {
		pem, err := os.ReadFile(c.JWTPublicKeyFile)
		if err != nil {
			return Config{}, fmt.Errorf("jwt-public-key: %v", err)
		}
		c.JWTPublicKeyPEM = pem
	}
	return c, nil
}

// Validate checks every value; the error is one line naming the setting.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("addr: %q is not host:port", c.Addr)
	}
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return fmt.Errorf("redis-url: %q is not redis://[:pass@]host:port/db or rediss://…", redactURL(c.RedisURL))
		}
	}
	modes := 0
	for _, set := range []bool{c.RedisURL != "", len(c.RedisCluster) > 0, len(c.RedisSentinel) > 0} {
		if set {
			modes++
		}
	}
	if modes > 1 {
		return errors.New("redis-url, redis-cluster and redis-sentinel: set at most one")
	}
	for _, list := range []struct {
		name  string
		addrs []string
	}{{"redis-cluster", c.RedisCluster}, {"redis-sentinel", c.RedisSentinel}} {
		for _, a := range list.addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("%s: %q is not host:port", list.name, a)
			}
		}
	}
	if (len(c.RedisSentinel) > 0) != (c.RedisSentinelMaster != "") {
		return errors.New("redis-sentinel-master: required with redis-sentinel, and only with it")
	}
	if c.RedisWaitReplicas < 0 {
		return fmt.Errorf("redis-wait-replicas: must not be negative, got %d", c.RedisWaitReplicas)
	}
	if c.RedisWaitTimeout <= 0 {
		return fmt.Errorf("redis-wait-timeout: must be positive, got %s", c.RedisWaitTimeout)
	}
	if c.KeyPrefix == "" {
		return errors.New("key-prefix: must not be empty")
	}
	// A user's keys and channel share the hash tag {<user id>}, so that one Cluster slot
	// holds them all. Redis takes the first {…} of a name as its tag: a brace in the prefix
	// would make the prefix the tag (every user on one slot) or split a user's names across
	// slots (CROSSSLOT on every push). The node id is part of names too (the probe channel).
	if strings.ContainsAny(c.KeyPrefix, "{}") {
		return fmt.Errorf("key-prefix: must not contain { or } (they would break the Redis Cluster hash tags), got %q", c.KeyPrefix)
	}
	if strings.ContainsAny(c.NodeID, "{}") {
		return fmt.Errorf("node-id: must not contain { or } (they would break the Redis Cluster hash tags), got %q", c.NodeID)
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"ping-interval", c.PingInterval}, {"pong-timeout", c.PongTimeout},
		{"write-timeout", c.WriteTimeout}, {"offline-ttl", c.OfflineTTL},
		{"resume-ttl", c.ResumeTTL}, {"dedup-ttl", c.DedupTTL},
		{"handshake-timeout", c.HandshakeTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			return fmt.Errorf("%s: must be positive, got %s", p.name, p.d)
		}
	}
	if c.UndeliveredAfter < 0 {
		return fmt.Errorf("undelivered-after: must not be negative, got %s", c.UndeliveredAfter)
	}
	if c.ShutdownGrace < 0 {
		return fmt.Errorf("shutdown-grace: must not be negative, got %s", c.ShutdownGrace)
	}
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"offline-ttl", c.OfflineTTL}, {"resume-ttl", c.ResumeTTL}, {"dedup-ttl", c.DedupTTL}} {
		if p.d < time.Second {
			return fmt.Errorf("%s: must be at least 1s, got %s", p.name, p.d)
		}
	}
	counts := []struct {
		name string
		n    int64
	}{
		{"max-message-bytes", c.MaxMessageBytes}, {"send-queue", int64(c.SendQueue)},
		{"max-conns-per-user", int64(c.MaxConnsPerUser)}, {"offline-max", int64(c.OfflineMax)},
	}
	for _, p := range counts {
		if p.n <= 0 {
			return fmt.Errorf("%s: must be positive, got %d", p.name, p.n)
		}
	}
	if c.UpstreamMaxBytes < c.MaxMessageBytes {
		return fmt.Errorf("upstream-max-bytes: must be at least max-message-bytes (%d), got %d", c.MaxMessageBytes, c.UpstreamMaxBytes)
	}
	if !(c.MaxInboundRate > 0) { // also refuses NaN, which ParseFloat accepts
		return fmt.Errorf("max-inbound-rate: must be positive, got %g", c.MaxInboundRate)
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("max-conns: must not be negative (0 = no cap), got %d", c.MaxConns)
	}
	if c.MaxConnsPerIP < 0 {
		return fmt.Errorf("max-conns-per-ip: must not be negative (0 = no cap), got %d", c.MaxConnsPerIP)
	}
	if c.PprofAddr != "" {
		if _, _, err := net.SplitHostPort(c.PprofAddr); err != nil {
			return fmt.Errorf("pprof-addr: %q is not host:port", c.PprofAddr)
		}
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return fmt.Errorf("log-format: %q is not json or text", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log-level: %q is not debug, info, warn or error", c.LogLevel)
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("allowed-origins: %q is not an origin like https://app.example.com", o)
		}
	}
	if !c.Dev {
		if c.JWTSecret == "" && c.JWTPublicKeyFile == "" {
			return errors.New("jwt-secret or jwt-public-key: one is required without --dev")
		}
		if len(c.APIKeys) == 0 {
			return errors.New("api-keys: required without --dev")
		}
		// An HMAC key shorter than the hash's output (32 bytes for SHA-256, RFC 7518 section
		// 3.2) can be guessed offline from a single token, and then any user's token forged.
		if c.JWTSecret != "" && len(c.JWTSecret) < minJWTSecret {
			return fmt.Errorf("jwt-secret: must be at least %d bytes outside --dev, got %d (e.g. openssl rand -base64 48)", minJWTSecret, len(c.JWTSecret))
		}
	}
	return nil
}

// UsesRedis reports whether any Redis mode is configured.
func (c *Config) UsesRedis() bool {
	return c.RedisURL != "" || len(c.RedisCluster) > 0 || len(c.RedisSentinel) > 0
}

// Open reports whether clients and the API run without credentials (--dev without any key set).
func (c *Config) Open() bool { return c.Dev }

// ServeDemo reports whether the page at / is served.
func (c *Config) ServeDemo() bool { return c.Dev || c.Demo }

func envMap(environ []string) map[string]string {
	m := make(map[string]string)
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "GATEWAY_") {
			m[k] = v
		}
	}
	return m
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// unwrapFlagErr strips the flag package's "parse error" noise from a Value.Set error.
func unwrapFlagErr(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return ne.Err
	}
	return err
}

// redactURL drops the password so that an error message never prints a secret.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return "…" + s[i:]
		}
		return s
	}
	return u.Redacted()
}

func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gateway"
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return host
	}
	return fmt.Sprintf("%s-%x", host, b)
}
