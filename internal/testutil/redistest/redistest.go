package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/freeport"
	"github.com/wsgateway/wsgateway/internal/testutil/proc"
)

// Deadlines are generous because CI runs many test binaries in parallel on
// two cores; a healthy redis-server answers PING within a few milliseconds.
const (
	startTimeout = 10 * time.Second // launch until PING answers
	stopGrace    = 10 * time.Second // SIGTERM until Stop escalates to SIGKILL
	cleanupGrace = 5 * time.Second  // SIGTERM until cleanup escalates to SIGKILL
	startTries   = 5                // launches when the port turns out to be taken
	logTailLines = 30
)

// errPortBusy means redis-server could not bind its port: someone else took
// it between our probe and its bind, or, on Restart, an outgoing connection
// was given it as an ephemeral source port while Redis was down.
var errPortBusy = errors.New("port already in use")

// Server is one redis-server process owned by a test. Its address and data
// directory stay the same across Stop, Kill and Restart.
type Server struct {
	// Addr is the server's "127.0.0.1:port" address.
	Addr string
	// Dir is the server's working directory, holding the append-only file
	// (appendonlydir/) and redis.log. It outlives Stop and Kill, so Restart
	// finds the data, and is removed with the test's TempDir.
	Dir string

	bin     string
	logPath string

	mu      sync.Mutex
	proc    *proc.Process // nil while stopped
	clients closers
}

// Start starts redis-server on a free loopback port and returns once it
// answers PING. Cleanups registered on tb close the clients handed out by
// Client and stop the server (SIGTERM, then SIGKILL after 5s). When
// redis-server is not installed, tb is skipped, or failed when CI is set.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := proc.Find(tb, "redis-server")
	// TempDir registers its removal before our cleanup is registered, and
	// cleanups run last-in first-out: the server stops before its directory
	// is deleted under it.
	dir := tb.TempDir()
	s := &Server{Dir: dir, bin: bin, logPath: filepath.Join(dir, "redis.log")}
	tb.Cleanup(func() { s.cleanup(tb) })

	var err error
	for range startTries {
		var port int
		port, err = freeport.Port()
		if err != nil {
			break
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err = s.launch(); !errors.Is(err, errPortBusy) {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: start redis-server: %v\n%s", err, s.logTail())
	}
	return s
}

// URL returns the server's address as a redis:// URL for database 0, the
// form the gateway's --redis-url takes.
func (s *Server) URL() string {
	return "redis://" + s.Addr + "/0"
}

// Client returns a new go-redis client for the server. It is closed when tb's
// cleanups run, and at the latest when the server's own cleanup runs.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.clients.add(tb, c)
	return c
}

// Stop stops the server with SIGTERM and waits for it to exit; Redis flushes
// the append-only file on the way out. If it has not exited after 10s, it is
// killed and the test fails. The data stays in Dir for Restart. Stopping a
// stopped server does nothing.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	killed, err := s.stop(syscall.SIGTERM, stopGrace)
	if err != nil {
		tb.Fatalf("redistest: stop %s: %v", s.Addr, err)
	}
	if killed {
		tb.Fatalf("redistest: redis-server on %s ignored SIGTERM for %v and was killed\n%s", s.Addr, stopGrace, s.logTail())
	}
}

// Kill kills the server with SIGKILL, as a crash or an OOM kill would, and
// waits for it to exit. With appendfsync always, every write Redis
// acknowledged is already on disk. Killing a stopped server does nothing.
func (s *Server) Kill(tb testing.TB) {
	tb.Helper()
	if _, err := s.stop(syscall.SIGKILL, stopGrace); err != nil {
		tb.Fatalf("redistest: kill %s: %v", s.Addr, err)
	}
}

// Restart stops the server (if it runs) and starts it again on the same port
// and directory, so clients reconnect to the same address and find the data
// of the append-only file. It returns once PING answers, which Redis does
// only after it has loaded that file. If the port is briefly taken by
// someone else, it retries for a few seconds.
//
// Clients reconnect by themselves, but a go-redis client whose dials all
// failed while the server was down (PoolSize of them) keeps returning the
// last dial error until its background probe, run once a second, gets
// through. So after Restart, poll with wait.For rather than expecting the
// very next command to succeed.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	var err error
	for attempt := 1; attempt <= 2*startTries; attempt++ {
		if err = s.launch(); !errors.Is(err, errPortBusy) {
			break
		}
		// An ephemeral source port is held only as long as its connection;
		// wait a little longer each time.
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("redistest: restart redis-server on %s: %v\n%s", s.Addr, err, s.logTail())
	}
}

// prefixSeq numbers the prefixes handed out in this test binary.
var prefixSeq atomic.Int64

// Prefix returns a key prefix unique to this call in the test binary, such as
// "t7:", for tests that share a server and must not see each other's keys.
// Pass it where the gateway would use its default prefix "ws:". It contains
// no braces, so a user's keys keep their {user} hash tag.
func Prefix(tb testing.TB) string {
	tb.Helper()
	return "t" + strconv.FormatInt(prefixSeq.Add(1), 10) + ":"
}

// launch starts redis-server on s.Addr and waits until it answers PING.
func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return fmt.Errorf("already running")
	}
	_, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return err
	}

	cmd := exec.Command(s.bin,
		"--port", port,
		"--bind", "127.0.0.1",
		"--dir", s.Dir,
		"--daemonize", "no",
		"--logfile", "", // stdout, which is redis.log
		// Production persistence: every write is in the AOF before it is
		// acknowledged, so Restart and even Kill lose nothing that a
		// client saw succeed. No RDB snapshots: the AOF is the only
		// source, and no background save forks on a busy CI machine.
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--save", "",
	)
	cmd.Dir = s.Dir
	p, err := startRedis(cmd, s.logPath, "redis-server", s.Addr)
	if err != nil {
		return err
	}
	s.proc = p
	return nil
}

// startRedis runs cmd (a redis-server) with its output appended to logPath and waits until
// addr answers PING. The log is appended to across restarts, so a failure message shows what
// happened before it too; the port-in-use check reads only what this start wrote.
func startRedis(cmd *exec.Cmd, logPath, what, addr string) (*proc.Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy of the descriptor
	fmt.Fprintf(logFile, "--- redistest: starting %s on %s at %s ---\n", what, addr, time.Now().Format(time.RFC3339Nano))
	logOffset, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	p, err := proc.Start(cmd, false)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(startTimeout)
	interval := 5 * time.Millisecond
	for {
		if p.Exited() {
			if bytes.Contains(readFrom(logPath, logOffset), []byte("Address already in use")) {
				return nil, fmt.Errorf("%s: %w", addr, errPortBusy)
			}
			return nil, fmt.Errorf("redis-server exited during start-up: %v", p.Err())
		}
		if ping(addr) {
			return p, nil
		}
		if time.Now().After(deadline) {
			_, _ = p.Stop(syscall.SIGKILL, 0)
			return nil, fmt.Errorf("no PONG from %s within %v", addr, startTimeout)
		}
		time.Sleep(interval)
		interval = min(interval*2, 100*time.Millisecond)
	}
}

// stop signals the running process and waits; see proc.Process.Stop.
func (s *Server) stop(sig syscall.Signal, grace time.Duration) (killed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false, nil
	}
	killed, err = s.proc.Stop(sig, grace)
	if s.proc.Exited() {
		s.proc = nil
	}
	return killed, err
}

func (s *Server) cleanup(tb testing.TB) {
	s.clients.closeAll()
	killed, err := s.stop(syscall.SIGTERM, cleanupGrace)
	if err != nil {
		tb.Errorf("redistest: stop %s at cleanup: %v", s.Addr, err)
	} else if killed {
		tb.Logf("redistest: redis-server on %s ignored SIGTERM for %v and was killed", s.Addr, cleanupGrace)
	}
}

// ping reports whether a PING on a fresh connection gets +PONG. A server
// still loading its AOF answers -LOADING, which counts as not ready.
func ping(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// logTail returns the last lines of redis.log for a failure message.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no redis-server log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return "redis-server log (" + s.logPath + ", last lines):\n" + string(bytes.Join(lines, []byte("\n")))
}
