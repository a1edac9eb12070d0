// Package nginxtest runs a real nginx, configured by the repository's shipped
// deploy/nginx.conf, in front of gateway nodes started by a test.
//
// The point is to test the file production uses, not a copy of it. [Start]
// renders that file for the test's upstream addresses and a free loopback
// port, runs nginx on it and waits until it accepts TCP connections;
// cleanups stop it. Without nginx on the machine (PATH, or /usr/sbin where
// Debian puts it) the test is skipped, except in CI, where it fails.
//
// # Rendering rule
//
// The config is read line by line. Only these lines change; everything else,
// comments included, is kept byte for byte, so the test exercises the real
// proxy settings:
//
//   - The lines between "# upstream-servers-begin" and
//     "# upstream-servers-end" (both markers kept) are replaced with one
//     "server <addr> <params>;" line per upstream address, where <params>
//     are the parameters of the first server line found between the markers
//     (for example "max_fails=2 fail_timeout=5s"), so the test runs with the
//     production failure settings. Each marker must occur exactly once, in
//     that order, with at least one server line between them.
//   - "listen 8080;" becomes "listen 127.0.0.1:<port>;". It must occur exactly
//     once, and no other listen directive may exist: a test cannot bind
//     someone else's port.
//   - "user" and "pid" directives are dropped: a test may not switch users,
//     and the pid file goes to the temp dir through -g.
//   - error_log and access_log keep their other parameters (level, format),
//     but write to error.log and access.log in the temp dir
//     ("access_log off;" stays as is).
//   - Any *_temp_path directive is dropped, and right after the "http {" line
//     (exactly one) client_body_temp_path, proxy_temp_path,
//     fastcgi_temp_path, uwsgi_temp_path and scgi_temp_path are set to
//     directories in the temp dir: nginx creates all of them at start-up,
//     and the compiled-in defaults (/var/lib/nginx/...) are not writable for
//     a non-root test.
//   - An include directive is refused: the shipped config must be self-contained,
//     since a relative include would resolve against the temp dir.
//
// Anything that does not fit (missing or repeated marker, no "listen 8080;")
// fails the test with the reason, rather than running a config that silently
// differs from production. A directive must be on one line for the rule to
// see it.
//
// nginx then runs as
//
//	nginx -p <dir>/ -e <dir>/error.log -c <dir>/nginx.conf -g 'daemon off; pid <dir>/nginx.pid;'
//
// with -e so that nginx never opens its compiled-in error log before reading
// the config. When the test runs as root, -g also sets "user root;", since
// workers would otherwise run as nobody and could not enter the 0700 temp dir.
package nginxtest
