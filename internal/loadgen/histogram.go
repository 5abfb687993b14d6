package loadgen

import (
	"math/bits"
	"time"
)

// histogram records latencies in microseconds with a relative error below
// 1.6%, in a fixed amount of memory however many requests a duration-bound
// run makes: values under 128 µs are exact, larger ones fall into 64
// sub-buckets per power of two.
type histogram struct {
	counts []uint64
	n      uint64
	max    time.Duration
}

const (
	histExact   = 128 // values below this are their own bucket
	histSubBits = 6   // 64 sub-buckets per power of two
	histSub     = 1 << histSubBits
	histMaxExp  = 40 // 2^(40+7) µs is far beyond any request timeout
)

func newHistogram() *histogram {
	return &histogram{counts: make([]uint64, histExact+histMaxExp*histSub)}
}

func bucketOf(us uint64) int {
	if us < histExact {
		return int(us)
	}
	e := bits.Len64(us) - (histSubBits + 1) // >= 1 because us >= 128
	if e > histMaxExp {
		return histExact + histMaxExp*histSub - 1
	}
	m := us >> uint(e) // in [64, 128)
	return histExact + (e-1)*histSub + int(m-histSub)
}

// bucketValue is the midpoint of bucket i, in microseconds.
func bucketValue(i int) uint64 {
	if i < histExact {
		return uint64(i)
	}
	e := (i-histExact)/histSub + 1
	m := uint64((i-histExact)%histSub + histSub)
	lo := m << uint(e)
	hi := (m+1)<<uint(e) - 1
	return lo + (hi-lo)/2
}

func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.counts[bucketOf(uint64(us))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the value at or below which a fraction q of the records
// lie (nearest rank), or 0 for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.9999999)
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := time.Duration(bucketValue(i)) * time.Microsecond
			// A midpoint can exceed the largest value recorded.
			return min(v, h.max)
		}
	}
	return h.max
}
