package main

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ledger is the delivery accounting of the drops scenario. Every push gets a number k
// (0..n-1) before it is sent, carried in its payload as the sequence of publisher 1; the
// gateway's answer gives the seq it has for its user. Each user has one client, so per push
// there is exactly one client that must get it. Clients record what reached the application
// (through the client package) and what crossed the wire (the sniffer under it).
type ledger struct {
	user   []int32        // k → user index; -1: not sent
	sentAt []atomic.Int64 // k → ns since base when the request went out
	seq    []atomic.Int64 // k → seq the gateway answered; 0: no answer (yet); -1: refused
	got    []atomic.Int32 // k → times the application received it
	gotSeq []atomic.Int64 // k → seq it first reached the application with (v1)
	at     []atomic.Int64 // k → ns since base of its first arrival at the application
	wire   []atomic.Int32 // k → times it crossed the wire

	mu         sync.Mutex
	reconnects []reconnect // every connection after a client's first
}

// reconnect is one client's return after a break: its user, when the new connection opened,
// and when the connection before was frozen (0: it ended for another reason).
type reconnect struct {
	user     int
	at       time.Duration
	frozenAt time.Duration
}

func newLedger(n int) *ledger {
	l := &ledger{
		user: make([]int32, n), sentAt: make([]atomic.Int64, n), seq: make([]atomic.Int64, n),
		got: make([]atomic.Int32, n), gotSeq: make([]atomic.Int64, n), at: make([]atomic.Int64, n),
		wire: make([]atomic.Int32, n),
	}
	for i := range l.user {
		l.user[i] = -1
	}
	return l
}

// sending records push k to user before its request goes out, at t.
func (l *ledger) sending(k, user int, t time.Duration) {
	l.user[k] = int32(user)
	l.sentAt[k].Store(int64(t))
}

// answered records the gateway's answer to push k: its seq, or -1 when it was not accepted.
func (l *ledger) answered(k int, seq int64) { l.seq[k].Store(seq) }

// valid reports whether k is a push number of this run.
func (l *ledger) valid(k int) bool { return k >= 0 && k < len(l.user) }

// received records push k reaching the application at t with seq (0 in raw mode). It
// reports whether this was its first arrival.
func (l *ledger) received(k int, seq int64, t time.Duration) bool {
	if l.got[k].Add(1) != 1 {
		return false
	}
	l.gotSeq[k].Store(seq)
	l.at[k].Store(int64(t))
	return true
}

// onWire records push k crossing the wire.
func (l *ledger) onWire(k int) { l.wire[k].Add(1) }

func (l *ledger) reconnected(r reconnect) {
	l.mu.Lock()
	l.reconnects = append(l.reconnects, r)
	l.mu.Unlock()
}

// tally is what the ledger adds up to at the end of a run.
type tally struct {
	Sent       int64 `json:"sent"`
	Accepted   int64 `json:"accepted"`   // answered 200 with a seq
	Delivered  int64 `json:"delivered"`  // accepted pushes that reached the application
	Missing    int64 `json:"missing"`    // accepted pushes that never did
	Duplicates int64 `json:"duplicates"` // arrivals at the application beyond the first
	// OnWire counts pushes seen crossing the wire at least once, WireDuplicates the frames
	// beyond the first that carried the same push: the client package drops a numbered one
	// it already has, so these can exceed Duplicates.
	OnWire         int64 `json:"on_wire"`
	WireDuplicates int64 `json:"wire_duplicates"`
	Mismatched     int64 `json:"mismatched_seq"`       // v1: arrived with another seq than the answer gave
	Unaccepted     int64 `json:"unaccepted_delivered"` // pushes not answered 200 that arrived anyway
	Outstanding    int64 `json:"-"`                    // accepted, not delivered yet (while running)

	// Replays: reconnects after a freeze that had something to catch up on (pushes sent
	// before the reconnect and not yet received), the pushes caught up, the reconnects that
	// found nothing to catch up on, and how long catching up took.
	Replays        int           `json:"replays"`
	Replayed       int64         `json:"replayed_messages"`
	NothingPending int           `json:"reconnects_nothing_pending"`
	ReplayDelays   []float64     `json:"-"` // ms
	Outages        []float64     `json:"-"` // ms, freeze to reconnect
	lastArrival    time.Duration // of any delivery
}

// count adds up deliveries; v1 says whether seqs are checked.
func (l *ledger) count(v1 bool) tally {
	var t tally
	for k := range l.user {
		if l.user[k] < 0 {
			continue
		}
		t.Sent++
		got, seq := int64(l.got[k].Load()), l.seq[k].Load()
		if w := int64(l.wire[k].Load()); w > 0 {
			t.OnWire++
			t.WireDuplicates += w - 1
		}
		if got > 1 {
			t.Duplicates += got - 1
		}
		if at := time.Duration(l.at[k].Load()); got > 0 && at > t.lastArrival {
			t.lastArrival = at
		}
		if seq <= 0 {
			if got > 0 {
				t.Unaccepted++
			}
			continue
		}
		t.Accepted++
		if got == 0 {
			t.Missing++
			continue
		}
		t.Delivered++
		if v1 && l.gotSeq[k].Load() != seq {
			t.Mismatched++
		}
	}
	t.Outstanding = t.Missing
	return t
}

// replays fills in the replay figures. A reconnect is caught up when every push sent to its
// user before it (and received at all) has arrived: the delay is from the reconnect to the
// last such arrival. Only pushes that arrived after the reconnect count as caught up on.
func (l *ledger) replays(t *tally) {
	l.mu.Lock()
	recs := slices.Clone(l.reconnects)
	l.mu.Unlock()
	byUser := map[int][]int{}
	for _, r := range recs {
		byUser[r.user] = nil
	}
	for k, u := range l.user {
		if _, ok := byUser[int(u)]; ok && u >= 0 {
			byUser[int(u)] = append(byUser[int(u)], k)
		}
	}
	for _, r := range recs {
		if r.frozenAt > 0 {
			t.Outages = append(t.Outages, ms(r.at-r.frozenAt))
		}
		var last time.Duration
		n := int64(0)
		for _, k := range byUser[r.user] {
			at := time.Duration(l.at[k].Load())
			if l.got[k].Load() == 0 || time.Duration(l.sentAt[k].Load()) >= r.at || at < r.at {
				continue
			}
			n++
			last = max(last, at)
		}
		if n == 0 {
			t.NothingPending++
			continue
		}
		t.Replays++
		t.Replayed += n
		t.ReplayDelays = append(t.ReplayDelays, ms(last-r.at))
	}
}

// quantile of sorted-on-demand values (nearest rank); 0 when there are none.
func quantile(vals []float64, q float64) float64 {
	if len(vals) == 0 {
		return 0
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}
