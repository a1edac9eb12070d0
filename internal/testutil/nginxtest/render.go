package nginxtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Markers around the upstream server lines of the shipped config.
const (
	beginMarker = "# upstream-servers-begin"
	endMarker   = "# upstream-servers-end"
	// prodListen is the one listen directive the shipped config may have.
	prodListen = "listen 8080;"
)

// tempPaths are the temp directories every nginx build creates at start-up;
// render points them into the test's directory.
var tempPaths = []string{
	"client_body_temp_path",
	"proxy_temp_path",
	"fastcgi_temp_path",
	"uwsgi_temp_path",
	"scgi_temp_path",
}

// renderOptions say what render puts in place of the production values.
type renderOptions struct {
	listen    string   // "127.0.0.1:port"
	upstreams []string // host:port of each gateway node
	dir       string   // absolute directory for logs and temp files
}

// render applies the rule documented in doc.go to conf.
func render(conf []byte, o renderOptions) ([]byte, error) {
	if len(o.upstreams) == 0 {
		return nil, errors.New("no upstream addresses")
	}
	if !filepath.IsAbs(o.dir) {
		return nil, fmt.Errorf("directory %q is not absolute", o.dir)
	}

	var (
		out                   bytes.Buffer
		begins, ends, listens int
		https                 int
		inUpstream            bool
		serverParams          []string
		sawServer             bool
		serverIndent          string
	)
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d %q: %s", lineNo, trimmed, fmt.Sprintf(format, args...))
		}

		switch trimmed {
		case beginMarker:
			if begins++; begins > 1 || ends > 0 {
				return nil, fail("marker repeated or out of order")
			}
			inUpstream = true
			out.WriteString(line + "\n")
			continue
		case endMarker:
			if ends++; ends > 1 || !inUpstream {
				return nil, fail("marker repeated or without %q before it", beginMarker)
			}
			if !sawServer {
				return nil, fail("no server line between the markers")
			}
			for _, addr := range o.upstreams {
				out.WriteString(serverIndent + strings.Join(append([]string{"server", addr}, serverParams...), " ") + ";\n")
			}
			inUpstream = false
			out.WriteString(line + "\n")
			continue
		}

		// The directive, without a trailing comment and the final ';'.
		code, _, _ := strings.Cut(trimmed, "#")
		code = strings.TrimSpace(code)
		fields := strings.Fields(strings.TrimSuffix(code, ";"))
		name := ""
		if len(fields) > 0 {
			name = fields[0]
		}

		if inUpstream {
			if name == "server" {
				if len(fields) < 2 || !strings.HasSuffix(code, ";") {
					return nil, fail("server line must be `server host:port [params];` on one line")
				}
				if !sawServer {
					sawServer = true
					serverParams = fields[2:]
					serverIndent = indent
				}
			} else if name != "" {
				return nil, fail("only server lines may stand between the markers (is %q missing?)", endMarker)
			}
			continue // replaced at the end marker
		}

		switch {
		case name == "listen":
			if code != prodListen {
				return nil, fail("the only listen directive allowed is %q", prodListen)
			}
			listens++
			out.WriteString(indent + "listen " + o.listen + ";\n")
		case name == "user" || name == "pid" || strings.HasSuffix(name, "_temp_path"):
			// dropped, see doc.go
		case name == "error_log" || name == "access_log":
			if len(fields) < 2 || !strings.HasSuffix(code, ";") {
				return nil, fail("%s must be on one line", name)
			}
			if fields[1] == "off" {
				out.WriteString(line + "\n")
				break
			}
			file := "error.log"
			if name == "access_log" {
				file = "access.log"
			}
			fields[1] = filepath.Join(o.dir, file)
			out.WriteString(indent + strings.Join(fields, " ") + ";\n")
		case name == "include":
			return nil, fail("include is not supported: the shipped config must be self-contained")
		case code == "http {":
			https++
			out.WriteString(line + "\n")
			out.WriteString(indent + "    # nginxtest: temp files under the test's directory.\n")
			for _, p := range tempPaths {
				out.WriteString(indent + "    " + p + " " + filepath.Join(o.dir, strings.TrimSuffix(p, "_path")) + ";\n")
			}
		default:
			out.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}

	switch {
	case begins == 0:
		return nil, fmt.Errorf("marker %q not found", beginMarker)
	case ends == 0:
		return nil, fmt.Errorf("marker %q not found", endMarker)
	case listens != 1:
		return nil, fmt.Errorf("want exactly one %q, found %d", prodListen, listens)
	case https != 1:
		return nil, fmt.Errorf("want exactly one line \"http {\", found %d", https)
	}
	return out.Bytes(), nil
}
