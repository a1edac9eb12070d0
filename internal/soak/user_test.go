package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// The simulated users of TestSoak, each churning over the nodes, and the pushers that
// number every user's messages.

// --- one simulated user ---

type user struct {
	id    string
	token string

	mu         sync.Mutex
	last       int64   // highest sequence number received; each must be last+1
	accepted   int64   // highest sequence number the API accepted (200)
	acceptedAt []int64 // when each sequence number got its 200 (unix nanos), [seq-1]
	lost, dup  []int64 // sequence numbers skipped over (lost or late) and received twice
	garbage    int     // messages that were not a sequence number
}

// got records one received message; it must be the next sequence number.
func (u *user) got(b []byte, st *stats) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case err != nil:
		u.garbage++
	case n <= u.last:
		u.dup = append(u.dup, n)
	default:
		for m := u.last + 1; m < n; m++ {
			u.lost = append(u.lost, m)
		}
		u.last = n
	}
	st.received.Add(1)
}

func (u *user) done() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last >= u.accepted
}

// churn connects to a random node, receives for 1–5 s, leaves with a close handshake, stays
// away for 0.1–1.5 s, and again, until ctx ends.
func (u *user) churn(ctx context.Context, addrs []string, st *stats) {
	for ctx.Err() == nil {
		conn, err := dial(addrs[rand.IntN(len(addrs))], u.token)
		if err != nil {
			st.refused.Add(1) // Redis away (503) during the restart: back off and retry
			sleep(ctx, 100*time.Millisecond+rand.N(400*time.Millisecond))
			continue
		}
		st.connects.Add(1)
		u.session(ctx, conn, time.Second+rand.N(4*time.Second), st)
		sleep(ctx, 100*time.Millisecond+rand.N(1400*time.Millisecond))
	}
}

// session reads until the connection ends. After hold (or when ctx ends) the client sends
// its close frame and goes on reading until the gateway's answer: everything the gateway
// wrote before it is read, and what it had not written it stored offline before answering,
// so nothing is lost between sessions.
func (u *user) session(ctx context.Context, conn *wsclient.Conn, hold time.Duration, st *stats) {
	defer conn.Close()
	var once sync.Once
	leave := func() {
		once.Do(func() {
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(10*time.Second))
		})
	}
	timer := time.AfterFunc(hold, leave)
	defer timer.Stop()
	stop := context.AfterFunc(ctx, leave)
	defer stop()
	// A safety net only: the gateway pings every 25s and answers a close at once.
	_ = conn.SetReadDeadline(time.Now().Add(hold + time.Minute))
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				st.fail(fmt.Errorf("%s: connection ended without a close handshake: %v", u.id, err))
			} else if ce.Code != websocket.CloseNormalClosure {
				st.serverClosed.Add(1) // 1011/1013 while Redis was away; reconnect
			}
			return
		}
		u.got(b, st)
	}
}

// collectTail connects once more after the pushes stopped and reads until everything
// accepted arrived, then a little longer (a duplicate would show), then leaves.
func (u *user) collectTail(addrs []string, st *stats) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		conn, err := dial(addrs[rand.IntN(len(addrs))], u.token)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		st.connects.Add(1)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for !u.done() && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			cancel()
		}()
		u.session(ctx, conn, time.Minute, st)
		cancel()
		if u.done() {
			return
		}
	}
}

// --- pushers ---

// pushLoop pushes the next sequence number to users p, p+pushers, … in turn, alternating the
// nodes, at rate per second. A 503 (Redis away) is retried, with the same id, until 200; only
// 200s count. It stops between pushes when ctx ends.
func pushLoop(ctx context.Context, client *http.Client, addrs []string, users []*user, p int, rate float64, st *stats) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i, n := p, 0; ; i, n = i+pushers, n+1 {
		if i >= len(users) {
			i = p
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		u := users[i]
		u.mu.Lock()
		seq := u.accepted + 1
		u.mu.Unlock()
		// The id makes a retry safe: a push whose answer was lost (503 after Redis ran it, a
		// broken connection) is not stored twice.
		body := fmt.Sprintf(`{"user_id":%q,"data":%d,"id":"%s-%d"}`, u.id, seq, u.id, seq)
		for attempt := 0; ; attempt++ {
			status, err := push(client, addrs[(n+attempt)%len(addrs)], body)
			if err == nil && status == http.StatusOK {
				break
			}
			if err != nil || status != http.StatusServiceUnavailable || attempt > 600 {
				st.fail(fmt.Errorf("push %s #%d: HTTP %d, %v (attempt %d)", u.id, seq, status, err, attempt))
				return
			}
			st.retries.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
		u.mu.Lock()
		u.accepted = seq
		u.acceptedAt = append(u.acceptedAt, time.Now().UnixNano())
		u.mu.Unlock()
		st.accepted.Add(1)
	}
}

func push(client *http.Client, addr, body string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/push", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
