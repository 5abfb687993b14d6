package auth

import (
	"math"
	"sync"
	"time"
)

// Limiter is an in-memory token bucket per client that counts failed API-key
// attempts: each failure takes a token, tokens come back at a steady rate,
// and a client with no token left is blocked. Idle clients are forgotten
// lazily, during calls, so the Limiter needs no goroutine.
type Limiter struct {
	rate       float64 // tokens per second
	burst      float64
	maxEntries int
	now        func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// Defaults for NewLimiter arguments that are zero or negative.
const (
	DefaultFailuresPerMinute = 10
	defaultMaxClients        = 100_000
	sweepEvery               = time.Minute
)

// NewLimiter allows burst failures at once per client, refilled at
// failuresPerMinute. Zero or negative values mean DefaultFailuresPerMinute,
// and a burst equal to the per-minute rate.
func NewLimiter(failuresPerMinute, burst int) *Limiter {
	if failuresPerMinute <= 0 {
		failuresPerMinute = DefaultFailuresPerMinute
	}
	if burst <= 0 {
		burst = failuresPerMinute
	}
	return &Limiter{
		rate:       float64(failuresPerMinute) / 60,
		burst:      float64(burst),
		maxEntries: defaultMaxClients,
		now:        time.Now,
		buckets:    make(map[string]*bucket),
	}
}

// refill brings b up to date; callers hold l.mu.
func (l *Limiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.rate)
	}
	b.last = now
}

// Blocked reports whether client has used up its failures and, if so, how
// long until it may try again.
func (l *Limiter) Blocked(client string) (retryAfter time.Duration, blocked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	b, ok := l.buckets[client]
	if !ok {
		return 0, false
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		return 0, false
	}
	return time.Duration((1 - b.tokens) / l.rate * float64(time.Second)), true
}

// Fail records one failed attempt by client.
func (l *Limiter) Fail(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	b, ok := l.buckets[client]
	if !ok {
		if len(l.buckets) >= l.maxEntries {
			// Under a flood of distinct clients, forget an arbitrary one
			// rather than grow without bound.
			for k := range l.buckets {
				delete(l.buckets, k)
				break
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[client] = b
	}
	l.refill(b, now)
	b.tokens = math.Max(0, b.tokens-1)
}

// sweep drops clients whose bucket has refilled completely: they carry no
// information any more. It runs at most once a minute; callers hold l.mu.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// Len is how many clients the limiter currently remembers.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
