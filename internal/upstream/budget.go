package upstream

import (
	"strconv"
	"strings"
)

// budget keeps the bytes of this node's entries in the stream within max.
//
// Redis trims a stream by entry count (MAXLEN) or by entry id (MINID), never by bytes. A
// count derived from an average entry size holds only while every node sees the same mix of
// frame sizes: a node whose clients send small frames computes a large count and, trimming
// the shared stream to it, keeps the large frames that other nodes appended. So each node
// counts exactly what it appended instead: it remembers the ids Redis gave its entries
// together with the running total of their estimated sizes, and asks every XADD to drop
// what is older than the oldest of its own entries that still fits the budget (MINID ~).
// Another node's older entries go with them, which only shrinks the stream (and means that
// the node with the most upstream traffic sets how far back the stream reaches). Hence the
// bound: each live node's entries stay within its budget, and the stream holds at most
// about budget × nodes bytes (plus, for a short while, the entries of a node that just
// restarted and has not yet appended a budget's worth that would push them out).
//
// Not every entry is remembered: a mark every max/marksPerBudget bytes is enough, and keeps
// the memory per node to about marksPerBudget marks, however small the frames. The stream
// therefore keeps between max − max/marksPerBudget and max bytes of this node's entries,
// plus the slack of approximate trimming (Redis drops whole nodes of its radix tree only:
// at most 100 entries or 4 KiB, or one entry larger than that).
//
// Only the Queue's goroutine uses a budget.
type budget struct {
	max   int64
	step  int64  // bytes between marks
	total int64  // estimated bytes of every entry added so far
	marks []mark // oldest first
	last  mark   // the newest entry added
}

// mark is an entry of this node in the stream.
type mark struct {
	id     string // the id Redis gave it
	before int64  // total before it was added
}

const marksPerBudget = 64

// Estimating an entry's memory in Redis, from MEMORY USAGE on Redis 7.0: an entry takes its
// field values plus 20–40 bytes of listpack overhead, and the allocator rounds a listpack up
// to its size class, up to a quarter more (1000-byte frames take 1.32 KiB each). A frame
// over the 4 KiB a listpack node holds gets a node of its own, which costs another radix-tree
// node: a 64 KiB frame takes 80.5 KiB. The estimate below is at or above every measurement
// from 10 bytes to 64 KiB, so the budget bounds memory, not just payload.
const (
	entryOverhead = 64
	nodeBytes     = 4096 // stream-node-max-bytes, Redis's default
	nodeOverhead  = 448
)

// entryCost estimates the memory of one stream entry with these field values.
func entryCost(user, node string, data []byte) int64 {
	v := int64(len(user) + len(node) + len(data))
	c := v*5/4 + entryOverhead
	if v > nodeBytes {
		c += nodeOverhead
	}
	return c
}

func newBudget(limit int64) *budget {
	return &budget{max: limit, step: max(1, limit/marksPerBudget)}
}

// add records an entry that Redis stored under id.
func (b *budget) add(id string, cost int64) {
	m := mark{id: id, before: b.total}
	if len(b.marks) == 0 || m.before-b.marks[len(b.marks)-1].before >= b.step {
		b.marks = append(b.marks, m)
	}
	b.last = m
	b.total += cost
}

// minID returns the MINID for the XADDs of a batch that adds extra bytes: after them, this
// node's entries from that id on fit the budget. "" means no trimming is needed yet.
func (b *budget) minID(extra int64) string {
	end := b.total + extra
	if end <= b.max || b.last.id == "" {
		return ""
	}
	// Marks that do not fit now never will again (total only grows): forget them.
	i := 0
	for i < len(b.marks) && end-b.marks[i].before > b.max {
		i++
	}
	b.marks = b.marks[i:]
	if len(b.marks) > 0 {
		return b.marks[0].id
	}
	// Even the newest entry no longer fits beside the batch: drop all of ours before it.
	return nextID(b.last.id)
}

// nextID returns the smallest stream id above id ("<ms>-<seq>").
func nextID(id string) string {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return id
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return id
	}
	if n == ^uint64(0) {
		m, err := strconv.ParseUint(ms, 10, 64)
		if err != nil {
			return id
		}
		return strconv.FormatUint(m+1, 10) + "-0"
	}
	return ms + "-" + strconv.FormatUint(n+1, 10)
}
