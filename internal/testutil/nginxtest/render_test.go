package nginxtest

import (
	"os"
	"strings"
	"testing"
)

const goodConf = `user www-data;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log warn;
events {
    worker_connections 1024;
}
http {
    client_body_temp_path /var/lib/nginx/body 1 2;
    access_log /var/log/nginx/access.log combined;
    upstream gateway {
        least_conn;
        # upstream-servers-begin
        server gateway1:8080 max_fails=2 fail_timeout=5s;  # first
        server gateway2:8080 max_fails=9;
        # upstream-servers-end
        keepalive 32;
    }
    server {
        listen 8080;
        access_log off;
        location / { proxy_pass http://gateway; }
    }
}
`

func TestRender(t *testing.T) {
	opts := renderOptions{listen: "127.0.0.1:4321", upstreams: []string{"127.0.0.1:1", "127.0.0.1:2"}, dir: "/tmp/x"}
	out, err := render([]byte(goodConf), opts)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	got := string(out)
	for _, want := range []string{
		"        # upstream-servers-begin\n" +
			"        server 127.0.0.1:1 max_fails=2 fail_timeout=5s;\n" +
			"        server 127.0.0.1:2 max_fails=2 fail_timeout=5s;\n" +
			"        # upstream-servers-end\n",
		"        listen 127.0.0.1:4321;\n",
		"error_log /tmp/x/error.log warn;\n",
		"    access_log /tmp/x/access.log combined;\n",
		"        access_log off;\n",
		"http {\n    # nginxtest: temp files under the test's directory.\n    client_body_temp_path /tmp/x/client_body_temp;\n",
		"    proxy_temp_path /tmp/x/proxy_temp;\n",
		"    scgi_temp_path /tmp/x/scgi_temp;\n",
		"        keepalive 32;\n",
		"        location / { proxy_pass http://gateway; }\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered config lacks %q; got:\n%s", want, got)
		}
	}
	for _, gone := range []string{"user ", "pid ", "gateway1", "gateway2", "/var/", "listen 8080", "max_fails=9"} {
		if strings.Contains(got, gone) {
			t.Errorf("rendered config still contains %q; got:\n%s", gone, got)
		}
	}
}

func TestRenderRefuses(t *testing.T) {
	opts := renderOptions{listen: "127.0.0.1:4321", upstreams: []string{"127.0.0.1:1"}, dir: "/tmp/x"}
	tests := []struct {
		name    string
		edit    func(string) string
		opts    *renderOptions
		wantErr string
	}{
		{"no begin marker", drop("# upstream-servers-begin\n"), nil, "without \"# upstream-servers-begin\" before it"},
		{"no end marker", drop("# upstream-servers-end\n"), nil, "is \"# upstream-servers-end\" missing?"},
		{"no markers", drop("        # upstream-servers-begin\n        server gateway1:8080 max_fails=2 fail_timeout=5s;  # first\n        server gateway2:8080 max_fails=9;\n        # upstream-servers-end\n"), nil, "upstream-servers-begin\" not found"},
		{"end before begin", swap("# upstream-servers-begin", "# upstream-servers-end"), nil, "marker"},
		{"repeated begin", dup("        # upstream-servers-begin\n"), nil, "repeated"},
		{"no server lines", drop("        server gateway1:8080 max_fails=2 fail_timeout=5s;  # first\n        server gateway2:8080 max_fails=9;\n"), nil, "no server line"},
		{"other directive in block", repl("server gateway2:8080 max_fails=9;", "keepalive 4;"), nil, "only server lines"},
		{"no listen", drop("        listen 8080;\n"), nil, "exactly one \"listen 8080;\""},
		{"two listens", dup("        listen 8080;\n"), nil, "exactly one \"listen 8080;\", found 2"},
		{"other listen", repl("listen 8080;", "listen 80;"), nil, "only listen directive"},
		{"extra ipv6 listen", repl("        listen 8080;\n", "        listen 8080;\n        listen [::]:8080;\n"), nil, "only listen directive"},
		{"include", repl("events {", "include mime.types;\nevents {"), nil, "include is not supported"},
		{"no http block", repl("http {", "http{"), nil, "\"http {\""},
		{"no upstreams", nil, &renderOptions{listen: "127.0.0.1:1", dir: "/tmp/x"}, "no upstream"},
		{"relative dir", nil, &renderOptions{listen: "127.0.0.1:1", upstreams: []string{"a:1"}, dir: "x"}, "not absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := goodConf
			if tt.edit != nil {
				conf = tt.edit(conf)
				if conf == goodConf {
					t.Fatal("test edit changed nothing")
				}
			}
			o := opts
			if tt.opts != nil {
				o = *tt.opts
			}
			out, err := render([]byte(conf), o)
			if err == nil {
				t.Fatalf("render succeeded, want error containing %q; got:\n%s", tt.wantErr, out)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("render error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func drop(s string) func(string) string { return repl(s, "") }
func dup(s string) func(string) string  { return repl(s, s+s) }
func repl(old, new string) func(string) string {
	return func(c string) string { return strings.Replace(c, old, new, 1) }
}
func swap(a, b string) func(string) string {
	return func(c string) string {
		return strings.Replace(strings.Replace(strings.Replace(c, a, "\x00", 1), b, a, 1), "\x00", b, 1)
	}
}

// The shipped config must stay renderable: this fails when someone edits
// deploy/nginx.conf into a shape the helper cannot adapt for tests.
func TestRenderShippedConfig(t *testing.T) {
	conf, err := os.ReadFile(shippedConf)
	if err != nil {
		t.Fatal(err)
	}
	out, err := render(conf, renderOptions{listen: "127.0.0.1:4321", upstreams: []string{"127.0.0.1:1", "127.0.0.1:2"}, dir: "/tmp/x"})
	if err != nil {
		t.Fatalf("render %s: %v", shippedConf, err)
	}
	got := string(out)
	for _, want := range []string{
		"server 127.0.0.1:1 max_fails=2 fail_timeout=5s;",
		"server 127.0.0.1:2 max_fails=2 fail_timeout=5s;",
		"listen 127.0.0.1:4321;",
		"access_log /tmp/x/access.log gateway;",
		"error_log /tmp/x/error.log warn;",
		"proxy_set_header Host $http_host;",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered %s lacks %q", shippedConf, want)
		}
	}
	if strings.Contains(got, "gateway1:8080") || strings.Contains(got, "/var/log") {
		t.Errorf("rendered %s still has production addresses or paths:\n%s", shippedConf, got)
	}
}
