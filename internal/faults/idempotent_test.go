package faults

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/wsgateway/wsgateway/client"
	"github.com/wsgateway/wsgateway/internal/server"
	"github.com/wsgateway/wsgateway/internal/testutil/gwtest"
	"github.com/wsgateway/wsgateway/internal/testutil/redistest"
)

// A backend that retries sends the same push, with the same id, to two nodes at once — for
// many ids, concurrently. Each id is stored and sent once: one of its two answers says
// duplicate:false, the other duplicate:true with the same seq; the numbers of the ids are
// 1..N without a hole; the inbox holds N messages; and the v1 client, on a third connection
// path (node B while the pushes race on A and B), gets each once, in order. Sending every id
// once more afterwards changes nothing.
func TestSamePushToTwoNodes(t *testing.T) {
	rs := redistest.Start(t)
	prefix := redistest.Prefix(t)
	a := startNode(t, "a", onRedis(rs, prefix), server.Options{})
	b := startNode(t, "b", onRedis(rs, prefix), server.Options{})
	r := newReader(t, client.Options{URL: userURL(b.Addr, "idem")}, true)

	const ids, workers = 200, 8
	type result struct {
		code int
		ans  gwtest.PushResult
		err  error
	}
	results := make([][2]result, ids+1) // by id number, [0] via A and [1] via B
	next := make(chan int, ids)
	for i := 1; i <= ids; i++ {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				id := "k" + strconv.Itoa(i)
				data := strconv.Quote(id)
				// Both requests leave together: the second starts as soon as the first
				// goroutine runs, and neither waits for the other's answer.
				var pair sync.WaitGroup
				start := make(chan struct{})
				for j, n := range []*node{a, b} {
					pair.Go(func() {
						<-start
						code, ans, err := push(n.URL(""), "idem", id, data)
						results[i][j] = result{code, ans, err}
					})
				}
				close(start)
				pair.Wait()
			}
		})
	}
	wg.Wait()

	l := newLedger()
	seqs := make(map[int64]string)
	for i := 1; i <= ids; i++ {
		ra, rb := results[i][0], results[i][1]
		for _, res := range []result{ra, rb} {
			if res.err != nil || res.code != http.StatusOK {
				t.Fatalf("id k%d: a push answered %d, %v", i, res.code, res.err)
			}
		}
		if ra.ans.Seq != rb.ans.Seq || ra.ans.Duplicate == rb.ans.Duplicate {
			t.Fatalf("id k%d: answers %+v (via A) and %+v (via B), want the same seq and exactly one duplicate", i, ra.ans, rb.ans)
		}
		if other, dup := seqs[ra.ans.Seq]; dup {
			t.Fatalf("ids %s and k%d got the same seq %d", other, i, ra.ans.Seq)
		}
		seqs[ra.ans.Seq] = "k" + strconv.Itoa(i)
		l.accept(strconv.Quote("k"+strconv.Itoa(i)), ra.ans.Seq)
	}
	for s := int64(1); s <= ids; s++ {
		if _, ok := seqs[s]; !ok {
			t.Fatalf("no id got seq %d: the numbers of %d ids are not 1..%d", s, ids, ids)
		}
	}
	stored, err := rs.Client(t).LLen(context.Background(), prefix+"inbox:{idem}").Result()
	if err != nil || stored != ids {
		t.Fatalf("the inbox holds %d messages (%v), want %d", stored, err, ids)
	}
	r.waitAll(t, "idem", l, timeout)

	// Every id once more, through either node: the original seq, nothing stored or sent.
	for i := 1; i <= ids; i += 7 {
		id := "k" + strconv.Itoa(i)
		ans := mustPush(t, []*node{a, b}[i%2].URL(""), "idem", id, strconv.Quote(id))
		if !ans.Duplicate || ans.Seq != l.accepted[strconv.Quote(id)] {
			t.Fatalf("id %s repeated later: %+v, want duplicate with seq %d", id, ans, l.accepted[strconv.Quote(id)])
		}
	}
	last := mustPush(t, a.URL(""), "idem", "", `"end"`)
	if last.Seq != ids+1 {
		t.Fatalf("the next push got seq %d, want %d: a repeated id was numbered", last.Seq, ids+1)
	}
	l.accept(`"end"`, last.Seq)
	r.waitAll(t, "idem", l, timeout)
}
