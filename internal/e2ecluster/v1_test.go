package e2ecluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/wsgateway/internal/config"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
	"github.com/wsgateway/wsgateway/internal/testutil/wait"
	"github.com/wsgateway/wsgateway/internal/testutil/wsclient"
)

// connectV1 dials /ws as user with wsgateway.v1 and more of the query (e.g. "since=3").
func connectV1(t *testing.T, addr, user, query string) *client {
	t.Helper()
	return record(t, addr, wsclient.Options{User: user, Query: query, V1: true})
}

// events returns every event in the stream as "type:user:seq".
func clusterEvents(t *testing.T, cc *redis.ClusterClient) []string {
	t.Helper()
	msgs, err := cc.XRange(context.Background(), "ws:events", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%s:%s:%v", m.Values["type"], m.Values["user"], m.Values["seq"]))
	}
	return out
}

func count(evs []string, want string) int {
	n := 0
	for _, e := range evs {
		if e == want {
			n++
		}
	}
	return n
}

// Acknowledged delivery, presence and events on a 3-master Cluster, with users on every shard:
// the inbox and the receipt and due sets of a user live in its slot; the events stream, the
// undelivered schedule and the presence buckets in slots of their own.
func TestClusterV1PresenceEvents(t *testing.T) {
	rc := redistest.StartCluster(t, 3, 0)
	seeds := strings.Split(rc.Seeds(), ",")
	set := func(c *config.Config) { c.RedisCluster = seeds; c.UndeliveredAfter = 4 * time.Second }
	a := gateway(t, "a", set)
	b := gateway(t, "b", set)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds})
	t.Cleanup(func() { _ = cc.Close() })

	shards := usersPerShard(t, rc, 2)
	var users []string
	for _, us := range shards {
		users = append(users, us...)
	}
	sort.Strings(users)

	for _, u := range users {
		// Resume across nodes: 1..3 on a (ack 2), then 4 while away, then since=3 on b.
		c := connectV1(t, a.Addr(), u, "")
		for i := 1; i <= 3; i++ {
			body := fmt.Sprintf(`{"user_id":%q,"data":%d,"receipt":%v}`, u, i, i == 2)
			if status := post(t, b.Addr(), "/api/v1/push", body); status != 200 {
				t.Fatalf("push: %d", status)
			}
		}
		wait.For(t, deadline, func() bool { return len(c.messages()) >= 3 }, "%s: frames %v", u, c.messages())
		if got := fmt.Sprint(c.messages()); got != "[1 1 2 2 3 3]" {
			t.Fatalf("%s: %s", u, got)
		}
		var p struct{ Online, Connections, Nodes any }
		getJSON(t, b.Addr(), "/api/v1/users/"+u+"/presence", &p)
		if fmt.Sprint(p.Connections, p.Nodes) != "1 1" {
			t.Fatalf("%s: presence %+v", u, p)
		}
		c.conn.Send(t, "ack 2")
		wait.For(t, deadline, func() bool { return count(clusterEvents(t, cc), "delivered:"+u+":2") == 1 },
			"%s: no delivered event for its receipt", u)
		c.conn.Close()
		wait.For(t, deadline, func() bool { return a.ForTest().Hub().UserConns(u) == 0 }, "%s still on a", u)
		// The hub lets go of the connection before the node uncounts it in Redis: reconnecting
		// on b before that would find the user still online, with no offline event between.
		wait.For(t, deadline, func() bool { return count(clusterEvents(t, cc), "offline:"+u+":<nil>") == 1 },
			"%s: no offline event after its only connection closed", u)
		mustPush(t, a.Addr(), u, "4")
		d := connectV1(t, b.Addr(), u, "since=3")
		wait.For(t, deadline, func() bool { return len(d.messages()) >= 1 }, "%s: nothing after since=3", u)
		if got := fmt.Sprint(d.messages()); got != "[4 4]" {
			t.Fatalf("%s since=3: %s", u, got)
		}
	}
	// Events: online and offline alternate per user; 3 and 4, never acknowledged (the client
	// resumed after 3 without acking it, and never acked 4), go undelivered, once each; 1 and 2
	// (acked in time) never do.
	wait.For(t, deadline, func() bool {
		evs := clusterEvents(t, cc)
		for _, u := range users {
			if count(evs, "undelivered:"+u+":3") != 1 || count(evs, "undelivered:"+u+":4") != 1 {
				return false
			}
		}
		return true
	}, "undelivered events: %v", lazyEvents(t, cc))
	evs := clusterEvents(t, cc)
	for _, u := range users {
		for _, s := range []string{"1", "2"} {
			if n := count(evs, "undelivered:"+u+":"+s); n != 0 {
				t.Fatalf("%s: undelivered for acknowledged %s: %v", u, s, evs)
			}
		}
		if count(evs, "online:"+u+":<nil>") != 2 || count(evs, "offline:"+u+":<nil>") != 1 {
			t.Fatalf("%s: presence events wrong: %v", u, evs)
		}
	}
}

func post(t *testing.T, addr, path, body string) int {
	t.Helper()
	resp, err := httpc.Post("http://"+addr+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func getJSON(t *testing.T, addr, path string, v any) {
	t.Helper()
	resp, err := httpc.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func lazyEvents(t *testing.T, cc *redis.ClusterClient) wait.Lazy {
	return func() string { return fmt.Sprint(clusterEvents(t, cc)) }
}
