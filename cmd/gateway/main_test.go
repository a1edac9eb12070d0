package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/testutil/freeport"
	"github.com/wsgateway/wsgateway/internal/testutil/gwbin"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// A wrong setting exits with status 2 and one line that names it, before anything listens.
func TestBadSettingsExit(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, nil, "bogus"},
		{"no credentials", nil, nil, "jwt-secret"},
		{"no api keys", []string{"--jwt-secret", "s"}, nil, "api-keys"},
		{"negative duration", []string{"--dev", "--ping-interval", "-1s"}, nil, "ping-interval"},
		{"bad env", []string{"--dev"}, []string{"GATEWAY_SEND_QUEUE=lots"}, "GATEWAY_SEND_QUEUE"},
		{"bad redis url", []string{"--dev", "--redis-url", "http://x"}, nil, "redis-url"},
		{"bad log format", []string{"--dev", "--log-format", "xml"}, nil, "log-format"},
		{"brace in key prefix", []string{"--dev", "--key-prefix", "{ws}:"}, nil, "key-prefix"},
		{"brace in node id", []string{"--dev"}, []string{"GATEWAY_NODE_ID=n{1}"}, "node-id"},
		{"short jwt secret", []string{"--api-keys", "k"}, []string{"GATEWAY_JWT_SECRET=change-me"}, "jwt-secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, tc.env, &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, stderr.String())
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tc.want) {
				t.Fatalf("stderr %q: want one line naming %q", msg, tc.want)
			}
		})
	}
	var stdout bytes.Buffer
	if code := run([]string{"--help"}, nil, &stdout, io.Discard); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, name := range []string{"addr", "redis-url", "jwt-secret", "api-keys", "send-queue", "shutdown-grace"} {
		if !strings.Contains(stdout.String(), "-"+name) {
			t.Errorf("--help does not list %s", name)
		}
	}
}

// The signal tests run the gateway as a process built by gwbin; TestMain removes it.
func TestMain(m *testing.M) { os.Exit(gwbin.After(m).Run()) }

func status(url string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSIGTERMDrain runs the real binary on Redis with live connections, sends SIGTERM and
// checks the drain: /readyz turns 503 while draining, clients get 1001, what was queued for a
// client that stopped reading stays unacknowledged in the inbox (nothing lost: what its TCP
// stack acknowledged is recorded before the process exits), and the process exits 0 within
// shutdown-grace.
func TestSIGTERMDrain(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	prefix := redistest.Prefix(t)
	bin := gwbin.Path(t)
	addr := freeport.Addr(t)
	const grace = 20 * time.Second
	cmd := exec.Command(bin, "--dev", "--addr", addr, "--redis-url", rs.URL(), "--key-prefix", prefix,
		"--write-timeout", "3s", "--send-queue", "5000", "--shutdown-grace", grace.String(), "--log-level", "debug")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() { exited <- cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	wait.For(t, 20*time.Second, func() bool { return status(base+"/readyz") == 200 }, "gateway never ready")

	reader := wsclient.MustDial(t, addr, wsclient.Options{User: "reader"})
	readerClosed := make(chan int, 1)
	go func() {
		for {
			if _, _, err := reader.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					readerClosed <- ce.Code
				} else {
					readerClosed <- -1
				}
				return
			}
		}
	}()

	// A client that stops reading: a tiny receive buffer makes the server's socket fill fast,
	// so pushes pile up in its send queue.
	stuck := dialStuck(t, addr)
	const n = 300
	for i := range n {
		if code, _, err := gwtest.Push(http.DefaultClient, base, "stuck", "", padded(i)); err != nil || code != 200 {
			t.Fatalf("push %d: %d %v", i, code, err)
		}
	}

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// On a loaded machine the stuck client's write may time out before the signal: then the
	// drain has nothing to wait for and the process may be gone before /readyz is polled.
	seen503 := false
	wait.For(t, 5*time.Second, func() bool {
		seen503 = status(base+"/readyz") == 503
		return seen503 || isDone(done)
	}, "/readyz not 503 while draining")
	if !seen503 {
		t.Log("the drain ended before /readyz was polled")
	}
	drainSeen := time.Since(start)
	select {
	case code := <-readerClosed:
		if code != websocket.CloseGoingAway {
			t.Fatalf("reader closed with %d, want 1001", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reader got no close frame")
	}
	var exitErr error
	select {
	case exitErr = <-exited:
	case <-time.After(grace + 5*time.Second):
		t.Fatal("gateway did not exit within shutdown-grace")
	}
	took := time.Since(start)
	if exitErr != nil {
		t.Fatalf("exit: %v, want 0", exitErr)
	}
	if took > grace {
		t.Fatalf("drain took %s, over shutdown-grace %s", took, grace)
	}
	t.Logf("drain: /readyz 503 after %s, exit 0 after %s", drainSeen.Round(time.Millisecond), took.Round(time.Millisecond))

	checkReadAndStored(t, stuck, rdb, prefix, n)
}

// checkReadAndStored reads what the stuck client can still get and checks that, with what is
// unacknowledged in its inbox, it is all n messages in order: what it read came in order, and
// the inbox holds the rest from some message it read at most onwards (a raw client's position
// counts what its TCP stack acknowledged, so what sat in the kernel's buffers at the close is
// still in the inbox, and may have arrived too).
func checkReadAndStored(t *testing.T, stuck *websocket.Conn, rdb redis.UniversalClient, prefix string, n int) {
	t.Helper()
	var read []int
	_ = stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, data, err := stuck.ReadMessage()
		if err != nil {
			break
		}
		read = append(read, seqOf(t, data))
	}
	for i, s := range read {
		if s != i {
			t.Fatalf("read message %d has seq %d: lost, duplicated or reordered", i, s)
		}
	}
	stored := unacknowledged(t, rdb, prefix, "stuck")
	if len(stored) == 0 {
		t.Fatal("nothing is unacknowledged although the client had stopped reading")
	}
	from := seqOf(t, []byte(stored[0]))
	if from > len(read) {
		t.Fatalf("read %d messages, the inbox holds from seq %d on: %d lost", len(read), from, from-len(read))
	}
	for i, s := range stored {
		if got := seqOf(t, []byte(s)); got != from+i {
			t.Fatalf("unacknowledged message %d has seq %d, want %d", i, got, from+i)
		}
	}
	if from+len(stored) != n {
		t.Fatalf("the inbox holds up to seq %d, want %d", from+len(stored)-1, n-1)
	}
	t.Logf("stuck client read %d, %d unacknowledged (%d of them read too)", len(read), len(stored), len(read)-from)
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// unacknowledged returns user's messages after the acknowledged position, from Redis: the
// inbox list holds the messages numbered seq-LLEN+1 … seq.
func unacknowledged(t *testing.T, rdb redis.UniversalClient, prefix, user string) []string {
	t.Helper()
	ctx := context.Background()
	key := prefix + "inbox:{" + user + "}"
	state, err := rdb.HMGet(ctx, key+":state", "seq", "ack").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n [2]int64
	for i, v := range state {
		if s, ok := v.(string); ok {
			n[i], _ = strconv.ParseInt(s, 10, 64)
		}
	}
	msgs := rdb.LRange(ctx, key, 0, -1).Val()
	first := n[0] - int64(len(msgs)) + 1
	return msgs[max(0, n[1]+1-first):]
}

// A second signal ends the process at once, even while the drain still waits on a client.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	bin := gwbin.Path(t)
	addr := freeport.Addr(t)
	cmd := exec.Command(bin, "--dev", "--addr", addr, "--write-timeout", "30s", "--send-queue", "5000",
		"--shutdown-grace", "60s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() { exited <- cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	base := "http://" + addr
	wait.For(t, 20*time.Second, func() bool { return status(base+"/readyz") == 200 }, "gateway never ready")
	dialStuck(t, addr)
	for i := range 200 {
		if _, _, err := gwtest.Push(http.DefaultClient, base, "stuck", "", padded(i)); err != nil {
			t.Fatal(err)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	wait.For(t, 5*time.Second, func() bool { return status(base+"/readyz") == 503 }, "not draining")
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("second SIGTERM did not end the process")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("second signal took %s", d)
	}
}

func seqOf(t *testing.T, data []byte) int {
	t.Helper()
	var v struct{ Seq int }
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("bad payload %.60q: %v", data, err)
	}
	return v.Seq
}

// dialStuck connects user "stuck" with a 4 KiB receive buffer, so that once it stops reading
// what it is sent waits in the node's send queue. The buffer is set before connect, when the
// window scale is agreed: shrunk only afterwards (wsclient's ReadBuffer), a third of the
// messages had not arrived within the 10 s read after the drain (read + stored 188 to 193 of
// 300 in three runs).
func dialStuck(t *testing.T, addr string) *websocket.Conn {
	t.Helper()
	dialer := websocket.Dialer{NetDialContext: (&net.Dialer{Control: smallRcvBuf}).DialContext}
	c, _, err := dialer.Dial("ws://"+addr+"/ws?user_id=stuck", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func smallRcvBuf(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	if err != nil {
		return err
	}
	return serr
}

// padded is push i's data: its number and 32 KiB of padding.
func padded(i int) string {
	return fmt.Sprintf(`{"seq":%d,"pad":%q}`, i, strings.Repeat("x", 32<<10))
}
