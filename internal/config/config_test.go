package config_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/wsgateway/internal/config"
)

// prod are the settings without which a non-dev gateway refuses to start.
var prod = []string{"--jwt-secret=" + secret32, "--api-keys=k1"}

// secret32 is the shortest HS256 secret accepted outside --dev: 32 bytes, SHA-256's size.
const secret32 = "0123456789abcdef0123456789abcdef"

func parse(t *testing.T, args []string, env ...string) config.Config {
	t.Helper()
	c, err := config.Parse(args, env, new(bytes.Buffer))
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", args, env, err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	c := parse(t, prod)
	want := config.Default()
	want.JWTSecret, want.APIKeys = secret32, []string{"k1"}
	want.NodeID = c.NodeID
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Parse with no settings:\n got %+v\nwant %+v", c, want)
	}
	// the README's settings table.
	d := config.Default()
	for _, x := range []struct {
		name      string
		got, want any
	}{
		{"addr", d.Addr, ":8080"},
		{"key-prefix", d.KeyPrefix, "ws:"},
		{"ping-interval", d.PingInterval, 25 * time.Second},
		{"pong-timeout", d.PongTimeout, 10 * time.Second},
		{"write-timeout", d.WriteTimeout, 10 * time.Second},
		{"max-message-bytes", d.MaxMessageBytes, int64(65536)},
		{"send-queue", d.SendQueue, 256},
		{"max-conns-per-user", d.MaxConnsPerUser, 16},
		{"offline-max", d.OfflineMax, 1000},
		{"offline-ttl", d.OfflineTTL, 168 * time.Hour},
		{"shutdown-grace", d.ShutdownGrace, 30 * time.Second},
		{"max-inbound-rate", d.MaxInboundRate, 50.0},
		{"max-conns", d.MaxConns, 0},
		{"max-conns-per-ip", d.MaxConnsPerIP, 0},
		{"handshake-timeout", d.HandshakeTimeout, 10 * time.Second},
		{"redis-wait-replicas", d.RedisWaitReplicas, 0},
		{"redis-wait-timeout", d.RedisWaitTimeout, time.Second},
		{"log-format", d.LogFormat, "json"},
		{"log-level", d.LogLevel, "info"},
		{"dev", d.Dev, false},
		{"demo", d.Demo, false},
		{"upstream", d.Upstream, true},
		{"upstream-max-bytes", d.UpstreamMaxBytes, int64(32 << 20)},
	} {
		if x.got != x.want {
			t.Errorf("default %s = %v, want %v", x.name, x.got, x.want)
		}
	}
	if c.NodeID == "" {
		t.Error("node-id has no default")
	}
	if other := parse(t, prod); other.NodeID == c.NodeID {
		t.Errorf("two processes got the same default node-id %q", c.NodeID)
	}
}

// Every setting is a flag and a GATEWAY_* variable; the flag wins over the variable, and the
// variable over the default.
func TestFlagsAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	pemA, pemB := filepath.Join(dir, "a.pem"), filepath.Join(dir, "b.pem")
	for _, f := range []string{pemA, pemB} {
		if err := os.WriteFile(f, []byte("content of "+filepath.Base(f)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		flag, envValue, flagValue string
		get                       func(config.Config) any
		fromEnv, fromFlag         any
		extra                     []string // settings the one under test needs
	}{
		{"addr", "0.0.0.0:1", "127.0.0.1:2", func(c config.Config) any { return c.Addr }, "0.0.0.0:1", "127.0.0.1:2", nil},
		{"redis-url", "redis://a:1/0", "rediss://b:2/1", func(c config.Config) any { return c.RedisURL }, "redis://a:1/0", "rediss://b:2/1", nil},
		{"key-prefix", "e:", "f:", func(c config.Config) any { return c.KeyPrefix }, "e:", "f:", nil},
		{"jwt-secret", "env-secret-" + secret32, "flag-secret-" + secret32, func(c config.Config) any { return c.JWTSecret }, "env-secret-" + secret32, "flag-secret-" + secret32, nil},
		{"jwt-audience", "env-aud", "flag-aud", func(c config.Config) any { return c.JWTAudience }, "env-aud", "flag-aud", nil},
		{"jwt-issuer", "https://env.example", "https://flag.example", func(c config.Config) any { return c.JWTIssuer }, "https://env.example", "https://flag.example", nil},
		{"jwt-public-key", pemA, pemB, func(c config.Config) any { return string(c.JWTPublicKeyPEM) }, "content of a.pem", "content of b.pem", nil},
		{"api-keys", "e1, e2", "f1,f2,,f3", func(c config.Config) any { return c.APIKeys }, []string{"e1", "e2"}, []string{"f1", "f2", "f3"}, nil},
		{"dev", "true", "false", func(c config.Config) any { return c.Dev }, true, false, nil},
		{"demo", "1", "false", func(c config.Config) any { return c.Demo }, true, false, nil},
		{"allowed-origins", "https://a.example", "*, https://b.example", func(c config.Config) any { return c.AllowedOrigins }, []string{"https://a.example"}, []string{"*", "https://b.example"}, nil},
		{"ping-interval", "5s", "7s", func(c config.Config) any { return c.PingInterval }, 5 * time.Second, 7 * time.Second, nil},
		{"pong-timeout", "1m", "2m", func(c config.Config) any { return c.PongTimeout }, time.Minute, 2 * time.Minute, nil},
		{"write-timeout", "3s", "4s", func(c config.Config) any { return c.WriteTimeout }, 3 * time.Second, 4 * time.Second, nil},
		{"max-message-bytes", "100", "200", func(c config.Config) any { return c.MaxMessageBytes }, int64(100), int64(200), nil},
		{"send-queue", "8", "9", func(c config.Config) any { return c.SendQueue }, 8, 9, nil},
		{"max-conns-per-user", "2", "3", func(c config.Config) any { return c.MaxConnsPerUser }, 2, 3, nil},
		{"offline-max", "10", "11", func(c config.Config) any { return c.OfflineMax }, 10, 11, nil},
		{"offline-ttl", "1h", "2h", func(c config.Config) any { return c.OfflineTTL }, time.Hour, 2 * time.Hour, nil},
		{"shutdown-grace", "0s", "5s", func(c config.Config) any { return c.ShutdownGrace }, time.Duration(0), 5 * time.Second, nil},
		{"node-id", "env-node", "flag-node", func(c config.Config) any { return c.NodeID }, "env-node", "flag-node", nil},
		{"log-format", "text", "json", func(c config.Config) any { return c.LogFormat }, "text", "json", nil},
		{"log-level", "debug", "warn", func(c config.Config) any { return c.LogLevel }, "debug", "warn", nil},
		{"max-inbound-rate", "2.5", "100", func(c config.Config) any { return c.MaxInboundRate }, 2.5, 100.0, nil},
		{"max-conns", "1000", "0", func(c config.Config) any { return c.MaxConns }, 1000, 0, nil},
		{"max-conns-per-ip", "5", "6", func(c config.Config) any { return c.MaxConnsPerIP }, 5, 6, nil},
		{"handshake-timeout", "2s", "3s", func(c config.Config) any { return c.HandshakeTimeout }, 2 * time.Second, 3 * time.Second, nil},
		{"pprof-addr", "127.0.0.1:6060", "127.0.0.1:6061", func(c config.Config) any { return c.PprofAddr }, "127.0.0.1:6060", "127.0.0.1:6061", nil},
		{"redis-cluster", "a:1, b:2", "c:3", func(c config.Config) any { return c.RedisCluster }, []string{"a:1", "b:2"}, []string{"c:3"}, nil},
		{"redis-sentinel", "s1:26379,s2:26379", "s3:26379", func(c config.Config) any { return c.RedisSentinel }, []string{"s1:26379", "s2:26379"}, []string{"s3:26379"}, []string{"--redis-sentinel-master=m"}},
		{"redis-sentinel-master", "env-master", "flag-master", func(c config.Config) any { return c.RedisSentinelMaster }, "env-master", "flag-master", []string{"--redis-sentinel=s:26379"}},
		{"redis-password", "env-pw", "flag-pw", func(c config.Config) any { return c.RedisPassword }, "env-pw", "flag-pw", nil},
		{"redis-wait-replicas", "1", "2", func(c config.Config) any { return c.RedisWaitReplicas }, 1, 2, nil},
		{"redis-wait-timeout", "250ms", "2s", func(c config.Config) any { return c.RedisWaitTimeout }, 250 * time.Millisecond, 2 * time.Second, nil},
		{"upstream", "false", "true", func(c config.Config) any { return c.Upstream }, false, true, nil},
		{"upstream-max-bytes", "1048576", "65536", func(c config.Config) any { return c.UpstreamMaxBytes }, int64(1 << 20), int64(65536), nil},
	}
	for _, tc := range cases {
		t.Run(tc.flag, func(t *testing.T) {
			env := "GATEWAY_" + strings.ToUpper(strings.ReplaceAll(tc.flag, "-", "_")) + "=" + tc.envValue
			base := append([]string(nil), tc.extra...) // prod's credentials, less the setting under test
			for _, a := range prod {
				if !strings.HasPrefix(a, "--"+tc.flag+"=") {
					base = append(base, a)
				}
			}
			c := parse(t, base, env)
			if got := tc.get(c); !reflect.DeepEqual(got, tc.fromEnv) {
				t.Errorf("from %s: %#v, want %#v", env, got, tc.fromEnv)
			}
			c = parse(t, append(base, "--"+tc.flag+"="+tc.flagValue), env)
			if got := tc.get(c); !reflect.DeepEqual(got, tc.fromFlag) {
				t.Errorf("from --%s=%s with %s set: %#v, want the flag's %#v", tc.flag, tc.flagValue, env, got, tc.fromFlag)
			}
		})
	}
	// Variables that are not the gateway's are ignored, whatever they hold.
	parse(t, prod, "PATH=/bin", "GATEWAY=x", "GATEWAY_=y", "GATEWAY_NO_SUCH_SETTING=z", "noequals")
	// One dash works like two, and the last of a repeated flag wins, as with package flag.
	if c := parse(t, append([]string{"-send-queue", "3", "--send-queue=4"}, prod...)); c.SendQueue != 4 {
		t.Errorf("send-queue = %d, want 4", c.SendQueue)
	}
}

func TestDevAddr(t *testing.T) {
	cases := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--dev"}, nil, "127.0.0.1:8080"},
		{nil, []string{"GATEWAY_DEV=true"}, "127.0.0.1:8080"},
		{[]string{"--dev", "--addr=:9000"}, nil, ":9000"},
		{[]string{"--dev", "--addr=:8080"}, nil, ":8080"}, // explicitly the non-dev default
		{[]string{"--dev"}, []string{"GATEWAY_ADDR=0.0.0.0:7000"}, "0.0.0.0:7000"},
		{prod, nil, ":8080"},
	}
	for _, tc := range cases {
		if c := parse(t, tc.args, tc.env...); c.Addr != tc.want {
			t.Errorf("Parse(%q, %q).Addr = %q, want %q", tc.args, tc.env, c.Addr, tc.want)
		}
	}
	// --dev needs no credentials.
	if c := parse(t, []string{"--dev"}); !c.Open() || !c.ServeDemo() {
		t.Errorf("--dev: Open %v, ServeDemo %v; want both", c.Open(), c.ServeDemo())
	}
	if c := parse(t, append([]string{"--demo"}, prod...)); c.Open() || !c.ServeDemo() {
		t.Errorf("--demo: Open %v, ServeDemo %v; want closed with the demo", c.Open(), c.ServeDemo())
	}
}

// Every refusal is one line that names the setting (flag or variable) at fault, and never
// echoes a password.
func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		env  []string
		want string // must appear in the error
	}{
		{"no credentials", nil, nil, "jwt-secret"},
		{"no jwt key", []string{"--api-keys=k"}, nil, "jwt-secret or jwt-public-key"},
		{"no api keys", []string{"--jwt-secret=" + secret32}, nil, "api-keys"},
		{"api keys only separators", []string{"--jwt-secret=" + secret32, "--api-keys= , ,"}, nil, "api-keys"},
		{"unreadable public key", []string{"--jwt-public-key=" + filepath.Join(dir, "missing.pem"), "--api-keys=k"}, nil, "jwt-public-key"},
		{"public key is a directory", []string{"--jwt-public-key=" + dir, "--api-keys=k"}, nil, "jwt-public-key"},
		{"addr without port", []string{"--dev", "--addr=localhost"}, nil, "addr"},
		{"empty addr", []string{"--dev", "--addr="}, nil, "addr"},
		{"redis-url scheme", []string{"--dev", "--redis-url=http://localhost:6379"}, nil, "redis-url"},
		{"redis-url no host", []string{"--dev", "--redis-url=redis://"}, nil, "redis-url"},
		{"redis-url garbage", []string{"--dev", "--redis-url=::"}, nil, "redis-url"},
		{"empty key-prefix", []string{"--dev", "--key-prefix="}, nil, "key-prefix"},
		// Braces would make the prefix (or node id) the hash tag of every key: all users on
		// one Cluster slot, or a user's keys and channel on different slots.
		{"key-prefix with {", []string{"--dev", "--key-prefix={ws}:"}, nil, "key-prefix"},
		{"key-prefix with }", []string{"--dev", "--key-prefix=ws}"}, nil, "key-prefix"},
		{"key-prefix with { from the environment", []string{"--dev"}, []string{"GATEWAY_KEY_PREFIX=ws{"}, "key-prefix"},
		{"node-id with {", []string{"--dev", "--node-id=a{b"}, nil, "node-id"},
		{"node-id with }", []string{"--dev", "--node-id=node}"}, nil, "node-id"},
		{"node-id with braces from the environment", []string{"--dev"}, []string{"GATEWAY_NODE_ID={n1}"}, "node-id"},
		// An HS256 key shorter than its hash can be brute-forced offline from one token.
		{"short jwt-secret", []string{"--jwt-secret=" + secret32[1:], "--api-keys=k"}, nil, "jwt-secret"},
		{"short jwt-secret from the environment", []string{"--api-keys=k"}, []string{"GATEWAY_JWT_SECRET=s3cret"}, "jwt-secret"},
		{"short jwt-secret next to a public key", []string{"--jwt-secret=s3cret", "--jwt-public-key=" + filepath.Join(dir, "missing.pem"), "--api-keys=k"}, nil, "jwt-secret"},
		{"zero ping-interval", []string{"--dev", "--ping-interval=0s"}, nil, "ping-interval"},
		{"negative ping-interval", []string{"--dev", "--ping-interval=-1s"}, nil, "ping-interval"},
		{"zero pong-timeout", []string{"--dev", "--pong-timeout=0"}, nil, "pong-timeout"},
		{"negative write-timeout", []string{"--dev", "--write-timeout=-5ms"}, nil, "write-timeout"},
		{"zero offline-ttl", []string{"--dev", "--offline-ttl=0s"}, nil, "offline-ttl"},
		{"sub-second offline-ttl", []string{"--dev", "--offline-ttl=500ms"}, nil, "offline-ttl"},
		{"negative shutdown-grace", []string{"--dev", "--shutdown-grace=-1s"}, nil, "shutdown-grace"},
		{"zero handshake-timeout", []string{"--dev", "--handshake-timeout=0s"}, nil, "handshake-timeout"},
		{"zero max-message-bytes", []string{"--dev", "--max-message-bytes=0"}, nil, "max-message-bytes"},
		{"zero send-queue", []string{"--dev", "--send-queue=0"}, nil, "send-queue"},
		{"negative max-conns-per-user", []string{"--dev", "--max-conns-per-user=-1"}, nil, "max-conns-per-user"},
		{"zero offline-max", []string{"--dev", "--offline-max=0"}, nil, "offline-max"},
		{"zero max-inbound-rate", []string{"--dev", "--max-inbound-rate=0"}, nil, "max-inbound-rate"},
		{"negative max-inbound-rate", []string{"--dev", "--max-inbound-rate=-3"}, nil, "max-inbound-rate"},
		{"NaN max-inbound-rate", []string{"--dev", "--max-inbound-rate=NaN"}, nil, "max-inbound-rate"},
		{"negative max-conns", []string{"--dev", "--max-conns=-1"}, nil, "max-conns"},
		{"negative max-conns-per-ip", []string{"--dev", "--max-conns-per-ip=-1"}, nil, "max-conns-per-ip"},
		{"pprof-addr without port", []string{"--dev", "--pprof-addr=localhost"}, nil, "pprof-addr"},
		{"redis-url and redis-cluster", []string{"--dev", "--redis-url=redis://h:1", "--redis-cluster=a:1"}, nil, "redis-cluster"},
		{"redis-cluster and redis-sentinel", []string{"--dev", "--redis-cluster=a:1", "--redis-sentinel=s:1", "--redis-sentinel-master=m"}, nil, "redis-sentinel"},
		{"redis-cluster without port", []string{"--dev", "--redis-cluster=a:1,b"}, nil, "redis-cluster"},
		{"redis-sentinel without port", []string{"--dev", "--redis-sentinel=s", "--redis-sentinel-master=m"}, nil, "redis-sentinel"},
		{"redis-sentinel without master", []string{"--dev", "--redis-sentinel=s:1"}, nil, "redis-sentinel-master"},
		{"redis-sentinel-master alone", []string{"--dev", "--redis-sentinel-master=m"}, nil, "redis-sentinel-master"},
		{"negative redis-wait-replicas", []string{"--dev", "--redis-wait-replicas=-1"}, nil, "redis-wait-replicas"},
		{"zero redis-wait-timeout", []string{"--dev", "--redis-wait-timeout=0s"}, nil, "redis-wait-timeout"},
		{"zero upstream-max-bytes", []string{"--dev", "--upstream-max-bytes=0"}, nil, "upstream-max-bytes"},
		{"negative upstream-max-bytes", []string{"--dev", "--upstream-max-bytes=-1"}, nil, "upstream-max-bytes"},
		{"upstream-max-bytes below one frame", []string{"--dev", "--max-message-bytes=4096", "--upstream-max-bytes=4095"}, nil, "upstream-max-bytes"},
		{"bad upstream", []string{"--dev", "--upstream=off"}, nil, "upstream"},
		{"log-format", []string{"--dev", "--log-format=xml"}, nil, "log-format"},
		{"log-level", []string{"--dev", "--log-level=trace"}, nil, "log-level"},
		{"origin without scheme", []string{"--dev", "--allowed-origins=app.example.com"}, nil, "allowed-origins"},
		{"origin with a path", []string{"--dev", "--allowed-origins=https://app.example.com/x"}, nil, "allowed-origins"},
		{"bad duration flag", []string{"--dev", "--ping-interval=soon"}, nil, "ping-interval"},
		{"bad number flag", []string{"--dev", "--send-queue=lots"}, nil, "send-queue"},
		{"number flag out of range", []string{"--dev", "--offline-max=99999999999999999999"}, nil, "offline-max"},
		{"bad bool flag", []string{"--dev=maybe"}, nil, "dev"},
		{"unknown flag", []string{"--dev", "--no-such-flag"}, nil, "no-such-flag"},
		{"flag without value", []string{"--dev", "--addr"}, nil, "addr"},
		{"positional argument", []string{"--dev", "extra"}, nil, `"extra"`},
		{"bad duration variable", []string{"--dev"}, []string{"GATEWAY_PONG_TIMEOUT=10"}, "GATEWAY_PONG_TIMEOUT"},
		{"bad number variable", []string{"--dev"}, []string{"GATEWAY_MAX_CONNS=x"}, "GATEWAY_MAX_CONNS"},
		{"bad bool variable", nil, []string{"GATEWAY_DEV=yes please"}, "GATEWAY_DEV"},
		{"empty bool variable", nil, []string{"GATEWAY_DEV="}, "GATEWAY_DEV"},
		{"invalid variable value checked although a flag overrides it", []string{"--dev", "--send-queue=3"}, []string{"GATEWAY_SEND_QUEUE=x"}, "GATEWAY_SEND_QUEUE"},
		{"bad value from the environment", []string{"--dev"}, []string{"GATEWAY_LOG_LEVEL=loud"}, "log-level"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse(tc.args, tc.env, new(bytes.Buffer))
			if err == nil {
				t.Fatalf("Parse(%q, %q) accepted it", tc.args, tc.env)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not name %q", msg, tc.want)
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if errors.Is(err, config.ErrHelp) {
				t.Errorf("a bad value reported as ErrHelp")
			}
		})
	}
}

// A malformed redis-url is refused without printing its password.
func TestParseErrorHidesPassword(t *testing.T) {
	for _, u := range []string{
		"http://:hunter2@localhost:6379",
		"redis://user:hunter2@", // no host
		"redis://:hunter2@local host:6379/0",
		"redis://user:hunter2%zz@localhost:6379",
		"redis:// user:hunter2@localhost",
	} {
		_, err := config.Parse([]string{"--dev", "--redis-url=" + u}, nil, new(bytes.Buffer))
		if err == nil {
			t.Errorf("%q accepted", u)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error for %q shows the password: %v", u, err)
		}
		if !strings.Contains(err.Error(), "redis-url") {
			t.Errorf("error for %q does not name redis-url: %v", u, err)
		}
	}
	_, err := config.Parse([]string{"--dev", "--redis-password=hunter2", "--redis-cluster=nohostport"}, nil, new(bytes.Buffer))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad redis-cluster with a redis-password: %v", err)
	}
}

// Validate on its own, as tests and embedders build a Config by hand.
func TestValidate(t *testing.T) {
	c := config.Default()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "jwt-secret") {
		t.Errorf("Default() without credentials: %v, want the missing jwt-secret named", err)
	}
	c.Dev = true
	if err := c.Validate(); err != nil {
		t.Errorf("Default() with Dev: %v", err)
	}
	c.JWTPublicKeyFile = "/some/file" // a public key alone is enough
	c.Dev = false
	c.APIKeys = []string{"k"}
	if err := c.Validate(); err != nil {
		t.Errorf("public key file and api keys: %v", err)
	}
	for _, o := range []string{"*", "https://a.example", "https://a.example/", "http://127.0.0.1:8080"} {
		c := config.Default()
		c.Dev = true
		c.AllowedOrigins = []string{o}
		if err := c.Validate(); err != nil {
			t.Errorf("allowed origin %q refused: %v", o, err)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help"} {
		var out bytes.Buffer
		_, err := config.Parse([]string{arg}, nil, &out)
		if !errors.Is(err, config.ErrHelp) {
			t.Fatalf("Parse(%s): %v, want ErrHelp", arg, err)
		}
		text := out.String()
		for _, name := range []string{
			"addr", "redis-url", "key-prefix", "jwt-secret", "jwt-public-key", "api-keys", "dev",
			"demo", "allowed-origins", "ping-interval", "pong-timeout", "write-timeout",
			"max-message-bytes", "send-queue", "max-conns-per-user", "offline-max", "offline-ttl",
			"shutdown-grace", "node-id", "log-format", "log-level", "max-inbound-rate", "max-conns",
			"max-conns-per-ip", "handshake-timeout", "pprof-addr", "redis-cluster", "redis-sentinel",
			"redis-sentinel-master", "redis-password", "redis-wait-replicas", "redis-wait-timeout",
			"jwt-audience", "jwt-issuer", "upstream", "upstream-max-bytes",
		} {
			if !strings.Contains(text, "-"+name+" ") && !strings.Contains(text, "-"+name+"\n") {
				t.Errorf("%s output lacks -%s", arg, name)
			}
		}
		for _, def := range []string{"25s", "10s", "65536", "256", "168h0m0s", "30s", `"ws:"`, `"json"`, `"info"`, "33554432"} {
			if !strings.Contains(text, def) {
				t.Errorf("%s output lacks the default %s", arg, def)
			}
		}
		if !strings.Contains(text, "GATEWAY_") {
			t.Errorf("%s output does not mention the GATEWAY_* variables", arg)
		}
	}
	// Help wins even when the rest would be refused, so that a confused user gets it.
	if _, err := config.Parse([]string{"--send-queue=0", "--help"}, nil, new(bytes.Buffer)); !errors.Is(err, config.ErrHelp) {
		t.Errorf("--help after a bad value: %v, want ErrHelp", err)
	}
}

// FuzzParse feeds arbitrary arguments and environments: Parse never panics, an accepted
// config passes Validate, and a refusal is a non-empty error.
func FuzzParse(f *testing.F) {
	f.Add("--dev", "")
	f.Add("--dev\x00--addr=:9000\x00--ping-interval=1s", "GATEWAY_SEND_QUEUE=8")
	f.Add("--jwt-secret=s\x00--api-keys=a,b", "GATEWAY_DEV=false\x00GATEWAY_ALLOWED_ORIGINS=*,https://x.example")
	f.Add("--redis-url=redis://:p@h:1/2\x00--dev", "GATEWAY_OFFLINE_TTL=2h")
	f.Add("--max-inbound-rate=1e308\x00--dev", "GATEWAY_MAX_CONNS=-0")
	f.Add("-h", "")
	f.Add("--dev\x00--redis-sentinel=s:1\x00--redis-sentinel-master=m", "GATEWAY_REDIS_CLUSTER=a:1\x00GATEWAY_REDIS_WAIT_REPLICAS=1")
	f.Add("--dev\x00--allowed-origins=https://a.example/,*", "GATEWAY_LOG_LEVEL=debug\x00GATEWAY_LOG_FORMAT=text")
	f.Add("--dev\x00--pprof-addr=[::1]:0\x00--addr=[::1]:0", "GATEWAY_HANDSHAKE_TIMEOUT=1ns")
	f.Fuzz(func(t *testing.T, args, env string) {
		var argv, environ []string
		if args != "" {
			argv = strings.Split(args, "\x00")
		}
		if env != "" {
			environ = strings.Split(env, "\x00")
		}
		// Reading arbitrary files (/dev/zero, a FIFO) is the operator's business, not the
		// parser's: keep the fuzzer away from the one setting that opens a file.
		if strings.Contains(strings.ToLower(args+env), "public") {
			t.Skip()
		}
		c, err := config.Parse(argv, environ, new(bytes.Buffer))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if verr := c.Validate(); verr != nil {
			t.Fatalf("Parse accepted %q %q but Validate refuses it: %v", argv, environ, verr)
		}
		if c.NodeID == "" {
			t.Fatal("accepted with an empty node-id")
		}
		if !(c.MaxInboundRate > 0) || c.PingInterval <= 0 || c.PongTimeout <= 0 || c.SendQueue <= 0 {
			t.Fatalf("accepted a non-positive limit: %+v", c)
		}
	})
}
