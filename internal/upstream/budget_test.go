package upstream

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// simStream is a stream as Redis keeps it under exact MINID trimming: ids in order.
type simStream struct {
	ms      int64
	entries []simEntry
}

type simEntry struct {
	id   string
	cost int64
	node int
}

func idLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	x, _ := strconv.ParseInt(am, 10, 64)
	y, _ := strconv.ParseInt(bm, 10, 64)
	if x != y {
		return x < y
	}
	i, _ := strconv.ParseUint(as, 10, 64)
	j, _ := strconv.ParseUint(bs, 10, 64)
	return i < j
}

// xadd appends one entry per cost, trimming to minID first as XADD MINID does.
func (s *simStream) xadd(node int, minID string, costs []int64) []string {
	var ids []string
	for _, c := range costs {
		if minID != "" {
			i := 0
			for i < len(s.entries) && idLess(s.entries[i].id, minID) {
				i++
			}
			s.entries = s.entries[i:]
		}
		s.ms++
		id := fmt.Sprintf("%d-0", s.ms)
		s.entries = append(s.entries, simEntry{id: id, cost: c, node: node})
		ids = append(ids, id)
	}
	return ids
}

func (s *simStream) bytes(node int) int64 {
	var n int64
	for _, e := range s.entries {
		if node < 0 || e.node == node {
			n += e.cost
		}
	}
	return n
}

// send is one Queue batch: the MINID for its bytes, the XADDs, the ids recorded.
func send(b *budget, s *simStream, node int, costs []int64) {
	var extra int64
	for _, c := range costs {
		extra += c
	}
	ids := s.xadd(node, b.minID(extra), costs)
	for i, id := range ids {
		b.add(id, costs[i])
	}
}

// Whatever the frame sizes, a node's entries in the stream stay within its budget after
// every batch, and once it has sent more than that, it keeps at least the budget less one
// mark's spacing, the batch and one entry: trimming is by bytes, not by a count.
func TestBudgetBoundsBytes(t *testing.T) {
	const limit = 64 << 10
	for _, tc := range []struct {
		name  string
		costs func(i int) int64
		batch int
	}{
		{"tiny", func(int) int64 { return 70 }, 1},
		{"tiny batched", func(int) int64 { return 70 }, 50},
		{"large", func(int) int64 { return 9000 }, 1},
		{"mixed", func(i int) int64 { return []int64{70, 5000, 300, 12000, 90}[i%5] }, 3},
		{"small then large", func(i int) int64 {
			if i < 3000 {
				return 80
			}
			return 16 << 10
		}, 2},
		{"large then small", func(i int) int64 {
			if i < 300 {
				return 16 << 10
			}
			return 80
		}, 2},
		{"entries over the budget", func(int) int64 { return limit + 1000 }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBudget(limit)
			var s simStream
			var sent, largest int64 // largest: an entry is kept or trimmed whole
			for i := 0; i < 6000; i += tc.batch {
				var costs []int64
				var extra int64
				for j := range tc.batch {
					c := tc.costs(i + j)
					costs = append(costs, c)
					extra += c
					largest = max(largest, c)
				}
				send(b, &s, 0, costs)
				sent += extra
				got := s.bytes(0)
				if got > max(limit, extra) {
					t.Fatalf("after %d bytes: %d bytes in the stream, budget %d", sent, got, limit)
				}
				if floor := limit - b.step - extra - largest; sent > limit && got < floor {
					t.Fatalf("after %d bytes: only %d bytes kept, want at least %d", sent, got, floor)
				}
			}
			if n := len(b.marks); n > marksPerBudget+2 {
				t.Fatalf("%d marks kept, want at most %d", n, marksPerBudget+2)
			}
		})
	}
}

// Two nodes share the stream: one sends tiny frames, the other large ones. Each node's
// entries stay within its budget, so the stream stays within the sum of the budgets — where
// a count derived from the tiny node's average entry size would have kept hundreds of the
// large ones.
func TestBudgetTwoNodes(t *testing.T) {
	const limit = 64 << 10
	small, large := newBudget(limit), newBudget(limit)
	var s simStream
	for i := range 20000 {
		send(small, &s, 0, []int64{70})
		if i%10 == 0 {
			send(large, &s, 1, []int64{8000})
		}
		for node := range 2 {
			if got := s.bytes(node); got > limit {
				t.Fatalf("step %d: node %d has %d bytes in the stream, budget %d", i, node, got, limit)
			}
		}
	}
	if got := s.bytes(-1); got > 2*limit {
		t.Fatalf("stream holds %d bytes, want at most %d", got, 2*limit)
	}
}

func TestBudgetNothingToTrim(t *testing.T) {
	b := newBudget(1000)
	if id := b.minID(5000); id != "" {
		t.Errorf("minID before any entry = %q, want none", id)
	}
	b.add("5-0", 400)
	if id := b.minID(500); id != "" {
		t.Errorf("minID within the budget = %q, want none", id)
	}
	if id := b.minID(700); id != "5-0" && id != "5-1" {
		t.Errorf("minID over the budget = %q, want the entry's id or just above", id)
	}
}

func TestNextID(t *testing.T) {
	for in, want := range map[string]string{
		"1-0":                     "1-1",
		"1712345678901-41":        "1712345678901-42",
		"7-18446744073709551615":  "8-0",
		"garbage":                 "garbage",
		"3-x":                     "3-x",
		"x-18446744073709551615":  "x-18446744073709551615",
		"1712345678901-999999999": "1712345678901-1000000000",
	} {
		if got := nextID(in); got != want {
			t.Errorf("nextID(%q) = %q, want %q", in, got, want)
		}
	}
}

// The cost estimate covers what Redis 7.0 was measured to use per entry (MEMORY USAGE of a
// stream of equal entries with a 7-byte user and an 11-byte node id, divided by their count).
func TestEntryCostCoversMeasurements(t *testing.T) {
	for _, m := range []struct {
		data     int
		measured int64
	}{{10, 49}, {100, 155}, {1000, 1319}, {4000, 4422}, {65536, 82428}} {
		c := entryCost("alice-1", "node-abcdef", make([]byte, m.data))
		if c < m.measured {
			t.Errorf("%d-byte frame: estimated %d bytes, Redis used %d", m.data, c, m.measured)
		}
		if c > 2*m.measured+64 {
			t.Errorf("%d-byte frame: estimated %d bytes, far above the %d Redis used", m.data, c, m.measured)
		}
	}
}
