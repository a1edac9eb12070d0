// A reference peer for benchmarks: a minimal push server on github.com/centrifugal/centrifuge
// with its Redis broker. Each client is authenticated by ?user_id= and subscribed server-side to
// "user:<id>". POST /api/v1/push {"user_id","data"} publishes to it. -history N keeps N
// publications per user (5 min) with recovery on, the fair match for acknowledged delivery.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	_ "net/http/pprof" // on -pprof's own listener only
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/centrifugal/centrifuge"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18101", "listen address")
	redisAddr := flag.String("redis", "127.0.0.1:16379", "Redis address")
	history := flag.Int("history", 0, "keep this many publications per user channel (5 min TTL) with recovery on; 0 = plain pub/sub")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6061), for wsbench --server-profile; empty = off")
	flag.Parse()
	var pubOpts []centrifuge.PublishOption
	if *history > 0 {
		pubOpts = append(pubOpts, centrifuge.WithHistory(*history, 5*time.Minute))
	}

	if *pprofAddr != "" {
		go func() { log.Print(http.ListenAndServe(*pprofAddr, nil)) }()
	}

	node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelError,
		LogHandler: func(e centrifuge.LogEntry) { log.Printf("%s %v", e.Message, e.Fields) }})
	if err != nil {
		log.Fatal(err)
	}
	shard, err := centrifuge.NewRedisShard(node, centrifuge.RedisShardConfig{Address: *redisAddr})
	if err != nil {
		log.Fatal(err)
	}
	broker, err := centrifuge.NewRedisBroker(node, centrifuge.RedisBrokerConfig{
		Prefix: "perf", Shards: []*centrifuge.RedisShard{shard}})
	if err != nil {
		log.Fatal(err)
	}
	node.SetBroker(broker)

	node.OnConnecting(func(ctx context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		cred, ok := centrifuge.GetCredentials(ctx)
		if !ok || cred.UserID == "" {
			return centrifuge.ConnectReply{}, centrifuge.DisconnectInvalidToken
		}
		return centrifuge.ConnectReply{Subscriptions: map[string]centrifuge.SubscribeOptions{
			"user:" + cred.UserID: {EnableRecovery: *history > 0}, // no presence, join/leave
		}}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {})
	if err := node.Run(); err != nil {
		log.Fatal(err)
	}

	auth := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			uid := r.URL.Query().Get("user_id")
			if uid == "" {
				http.Error(w, "user_id required", http.StatusUnauthorized)
				return
			}
			ctx := centrifuge.SetCredentials(r.Context(), &centrifuge.Credentials{UserID: uid})
			h.ServeHTTP(w, r.WithContext(ctx))
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", auth(centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{
		CheckOrigin: func(*http.Request) bool { return true },
	})))
	mux.HandleFunc("POST /api/v1/push", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			UserID string          `json:"user_id"`
			Data   json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.UserID == "" || len(req.Data) == 0 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if _, err := node.Publish("user:"+req.UserID, req.Data, pubOpts...); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	log.Printf("centrifuge peer on %s, redis %s, pid %d", *addr, *redisAddr, os.Getpid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	node.Shutdown(ctx)
}
