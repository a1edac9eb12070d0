package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestBareServer is a calibration server, not the gateway: plain gorilla/websocket with no
// hub, no queues, no per-connection writer goroutine, no Redis and no metrics. It speaks just
// enough of the gateway's API for wsbench (--dev style ?user_id=, /api/v1/push, /api/v1/broadcast,
// /readyz) and writes every frame synchronously from the request's goroutine; a broadcast
// writes one PreparedMessage to every connection in a loop. What wsbench measures against it
// is the ceiling of this machine (kernel, loopback, gorilla framing, and wsbench's own reading),
// the "bare socket" figure the gateway is compared with. It skips unless flags follow "--":
//
//	go test -c -o /tmp/bare ./cmd/wsbench
//	wsbench --dev --spawn-gateway "/tmp/bare -test.run ^TestBareServer$ -test.timeout 0 --" …
func TestBareServer(t *testing.T) {
	if len(flag.Args()) == 0 {
		t.Skip("a calibration server for wsbench: give flags after --")
	}
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	for _, ignored := range []string{"redis-url", "node-id", "log-level", "shutdown-grace", "jwt-secret", "api-keys"} {
		fs.String(ignored, "", "ignored (wsbench passes the gateway's flags)")
	}
	fs.Bool("dev", false, "ignored")
	if err := fs.Parse(flag.Args()); err != nil {
		t.Fatal(err)
	}

	type bareConn struct {
		mu sync.Mutex // gorilla allows one writer at a time
		ws *websocket.Conn
	}
	var mu sync.RWMutex
	conns := make(map[string]*bareConn)
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 4096, WriteBufferPool: &sync.Pool{}}
	write := func(c *bareConn, pm *websocket.PreparedMessage) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return c.ws.WritePreparedMessage(pm) == nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user_id")
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &bareConn{ws: ws}
		mu.Lock()
		conns[user] = c
		mu.Unlock()
		for {
			if _, _, err := ws.NextReader(); err != nil {
				break
			}
		}
		mu.Lock()
		if conns[user] == c {
			delete(conns, user)
		}
		mu.Unlock()
		ws.Close()
	})
	mux.HandleFunc("POST /api/v1/push", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			UserID  string          `json:"user_id"`
			UserIDs []string        `json:"user_ids"`
			Data    json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		users := req.UserIDs
		if req.UserID != "" {
			users = []string{req.UserID}
		}
		pm, _ := websocket.NewPreparedMessage(websocket.TextMessage, req.Data)
		w.Header().Set("Content-Type", "application/json")
		out := []byte(`{"results":[`)
		for i, u := range users {
			mu.RLock()
			c := conns[u]
			mu.RUnlock()
			ok := c != nil && write(c, pm)
			if i > 0 {
				out = append(out, ',')
			}
			out = fmt.Appendf(out, `{"user_id":%q,"online":%t,"queued":false}`, u, ok)
		}
		_, _ = w.Write(append(out, "]}"...))
	})
	mux.HandleFunc("POST /api/v1/broadcast", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		pm, _ := websocket.NewPreparedMessage(websocket.TextMessage, req.Data)
		mu.RLock()
		all := make([]*bareConn, 0, len(conns))
		for _, c := range conns {
			all = append(all, c)
		}
		mu.RUnlock()
		for _, c := range all {
			write(c, pm)
		}
		_, _ = w.Write([]byte("{}"))
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		srv.Close()
	}()
	_ = srv.Serve(ln)
}
