package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram records durations in nanoseconds in log-linear buckets: exact below 128 ns, then
// 64 buckets per power of two, so any value is known within 1/64 (1.6 %) — HdrHistogram's
// layout with two significant digits. Record is lock-free (one atomic add), because every
// client reader goroutine records into the same histogram.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64 // ns; wraps only after ~584 years of summed latency
	max    atomic.Uint64
}

const (
	subBits     = 6
	subCount    = 1 << subBits      // buckets per power of two
	histBuckets = subCount * 60     // covers up to 2^59 ns (18 years)
	linearLimit = 2 * subCount      // values below are their own bucket
	maxRecorded = uint64(1)<<58 - 1 // clamp
)

// bucketOf maps v to its bucket: shift*64 + v>>shift with shift = max(0, len(v)-7).
func bucketOf(v uint64) int {
	if v > maxRecorded {
		v = maxRecorded
	}
	shift := bits.Len64(v) - (subBits + 1)
	if shift < 0 {
		shift = 0
	}
	return shift*subCount + int(v>>uint(shift))
}

// bucketRange returns the lowest value of bucket i and its width.
func bucketRange(i int) (low, width uint64) {
	if i < linearLimit {
		return uint64(i), 1
	}
	shift := i/subCount - 1
	mant := uint64(i - shift*subCount)
	return mant << uint(shift), uint64(1) << uint(shift)
}

func (h *histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// snapshot copies the counts, for quantiles and charts.
func (h *histogram) snapshot() *histSnapshot {
	s := &histSnapshot{max: h.max.Load(), sum: h.sum.Load()}
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] = c
		s.total += c
	}
	return s
}

type histSnapshot struct {
	counts [histBuckets]uint64
	total  uint64
	sum    uint64
	max    uint64
}

// Quantile returns the value at q (0..1): the upper edge of the bucket that holds it (the
// "highest equivalent value", as HdrHistogram reports), never above the recorded maximum.
func (s *histSnapshot) Quantile(q float64) time.Duration {
	if s.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.total)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			low, w := bucketRange(i)
			return time.Duration(min(low+w-1, s.max))
		}
	}
	return time.Duration(s.max)
}

func (s *histSnapshot) Mean() time.Duration {
	if s.total == 0 {
		return 0
	}
	return time.Duration(s.sum / s.total)
}

func (s *histSnapshot) Max() time.Duration { return time.Duration(s.max) }

// counters are the run's totals, updated by publishers and client readers.
type counters struct {
	sent      atomic.Int64 // requests (or PUBLISHes) started
	accepted  atomic.Int64 // answered 200 (or PUBLISH/FCALL succeeded)
	sendErrs  atomic.Int64 // non-200, transport errors
	expected  atomic.Int64 // deliveries the accepted sends promise (online recipients)
	offline   atomic.Int64 // recipients the API reported offline (stored, not delivered now)
	received  atomic.Int64 // scenario messages received, duplicates included
	dup       atomic.Int64
	reordered atomic.Int64
	probes    atomic.Int64 // probe messages received
	closed    atomic.Int64 // connections that ended during the run
	badFrames atomic.Int64 // frames that were not a wsbench payload
	lagMax    atomic.Int64 // ns: worst delay of an actual send behind its schedule
}

func (c *counters) noteLag(d time.Duration) {
	for {
		m := c.lagMax.Load()
		if int64(d) <= m || c.lagMax.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// payload is what a wsbench message carries, in this order, as the start of a JSON object:
// {"p":<publisher, 0 = probe>,"s":<sequence of that publisher, from 1>,"t":<ns since the run's
// base time: the scheduled send time>,"x":"<padding>"}.
type payload struct {
	pub int
	seq uint64
	ts  int64
}

// parsePayload reads the three numbers without a JSON decoder: it runs once per delivery on
// the generator's one core, so it must cost nanoseconds, not microseconds.
func parsePayload(b []byte) (payload, bool) {
	var p payload
	var ok bool
	var n uint64
	if b, ok = expect(b, `{"p":`); !ok {
		return p, false
	}
	if n, b, ok = number(b); !ok {
		return p, false
	}
	p.pub = int(n)
	if b, ok = expect(b, `,"s":`); !ok {
		return p, false
	}
	if p.seq, b, ok = number(b); !ok {
		return p, false
	}
	if b, ok = expect(b, `,"t":`); !ok {
		return p, false
	}
	if n, _, ok = number(b); !ok {
		return p, false
	}
	p.ts = int64(n)
	return p, true
}

func expect(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return nil, false
	}
	return b[len(prefix):], true
}

func number(b []byte) (uint64, []byte, bool) {
	var n uint64
	i := 0
	for ; i < len(b) && i < 20 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + uint64(b[i]-'0')
	}
	return n, b[i:], i > 0
}

// appendPayload writes a payload of about size bytes into dst.
func appendPayload(dst []byte, p payload, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"p":`...)
	dst = appendUint(dst, uint64(p.pub))
	dst = append(dst, `,"s":`...)
	dst = appendUint(dst, p.seq)
	dst = append(dst, `,"t":`...)
	dst = appendUint(dst, uint64(p.ts))
	dst = append(dst, `,"x":"`...)
	for len(dst)-start < size-2 {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

func appendUint(dst []byte, n uint64) []byte {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

// order tracks, for one connection, the last sequence number seen from each publisher. Only
// that connection's reader touches it.
type order struct {
	last []uint64 // by publisher id
}

// see classifies seq from pub: in order (a gap may be a loss or a message still to come),
// a duplicate of the last one, or behind it (reordered, or a late duplicate).
func (o *order) see(pub int, seq uint64) (dup, reordered bool) {
	if pub >= len(o.last) {
		grown := make([]uint64, pub+1)
		copy(grown, o.last)
		o.last = grown
	}
	last := o.last[pub]
	switch {
	case seq > last:
		o.last[pub] = seq
		return false, false
	case seq == last:
		return true, false
	default:
		return false, true
	}
}
