package runner

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol"
)

// TaskOption sets a per-task attribute at registration, as the options of
// Python's @app.task(...) do.
type TaskOption func(*taskAttrs) error

// taskAttrs are the per-task attributes Python keeps on the Task class and
// remote control changes at runtime (rate_limit, time_limit).
type taskAttrs struct {
	rateLimit string // Celery syntax, "" for none
	// hard and soft are the time limits as the number Python would hold
	// (int or float), empty for none.
	hard, soft json.Number
}

// RateLimit limits how often the task starts on this worker, in Celery's
// syntax: "10/m", "100/s", "5/h", or a bare number per second. As in
// Celery the limit is per worker and per task name, a token bucket of
// capacity one; tasks over it wait in the worker without holding a slot.
func RateLimit(rate string) TaskOption {
	return func(a *taskAttrs) error {
		if _, err := ParseRate(rate); err != nil {
			return err
		}
		a.rateLimit = rate
		return nil
	}
}

// TimeLimit sets the task's default hard and soft time limits (zero: none),
// used when a message carries none, as Python's task time_limit and
// soft_time_limit are.
func TimeLimit(hard, soft time.Duration) TaskOption {
	return func(a *taskAttrs) error {
		if hard < 0 || soft < 0 {
			return fmt.Errorf("runner: negative time limit (hard %s, soft %s)", hard, soft)
		}
		a.hard, a.soft = secondsNumber(hard), secondsNumber(soft)
		return nil
	}
}

// secondsNumber is d as the number a Python user would have written:
// 2 for whole seconds, 2.5 otherwise; empty for zero.
func secondsNumber(d time.Duration) json.Number {
	if d <= 0 {
		return ""
	}
	if d%time.Second == 0 {
		return json.Number(strconv.FormatInt(int64(d/time.Second), 10))
	}
	return pyFloatNumber(d.Seconds())
}

// numberSeconds is the duration of a limit number; 0 for none.
func numberSeconds(n json.Number) time.Duration {
	if n == "" {
		return 0
	}
	f, err := n.Float64()
	if err != nil || f <= 0 || math.IsNaN(f) {
		return 0
	}
	return seconds(f)
}

// rateError is what Python's rate() raises: ValueError for a bad number,
// KeyError for a bad unit.
type rateError struct{ te *protocol.TaskError }

func (e *rateError) Error() string { return "invalid rate limit: " + excRepr(e.te) }

// ParseRate is celery.utils.time.rate: "100/m" is 100/60 tasks per
// second; "" and "0" mean no limit (0).
func ParseRate(r string) (float64, error) {
	if r == "" {
		return 0, nil
	}
	ops, modifier, _ := strings.Cut(r, "/")
	var div float64
	switch modifier {
	case "", "s":
		div = 1
	case "m":
		div = 60
	case "h":
		div = 3600
	default:
		return 0, &rateError{&protocol.TaskError{ExcType: "KeyError", ExcModule: modBuiltins, ExcMessage: []any{modifier}}}
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(ops), 64)
	if err != nil {
		return 0, &rateError{protocol.NewTaskError("ValueError", modBuiltins, "could not convert string to float: "+pyfmt.StrRepr(ops))}
	}
	return n / div, nil
}

// tokenBucket is kombu's TokenBucket(rate, capacity=1) as the consumer
// uses it: one task may start at once, the next 1/rate seconds later. A
// request reserves its turn, so waiting requests keep their order.
type tokenBucket struct {
	interval time.Duration
	next     time.Time // when the next token is available
}

// reserve takes the next token and returns how long to wait for it.
func (b *tokenBucket) reserve(now time.Time) time.Duration {
	at := b.next
	if at.Before(now) {
		at = now
	}
	b.next = at.Add(b.interval)
	return at.Sub(now)
}

// rateLimiter holds the consumer's task_buckets: one bucket per task name
// with a rate limit, rebuilt when the limit changes (reset_rate_limits).
type rateLimiter struct {
	mu      sync.Mutex
	buckets map[string]*tokenBucket
	rates   map[string]string // the limit each bucket was built for
}

func newRateLimiter() *rateLimiter {
	return &rateLimiter{buckets: map[string]*tokenBucket{}, rates: map[string]string{}}
}

// reserve returns how long a task of this name must wait before it may
// start under rate (Celery syntax); 0 without a limit.
func (l *rateLimiter) reserve(name, rate string, now time.Time) time.Duration {
	if rate == "" {
		return 0
	}
	perSec, err := ParseRate(rate)
	if err != nil || perSec <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[name]
	if b == nil || l.rates[name] != rate {
		b = &tokenBucket{interval: time.Duration(float64(time.Second) / perSec)}
		l.buckets[name], l.rates[name] = b, rate
	}
	return b.reserve(now)
}

// effectiveTimeLimit is Request.execute_using_pool's choice: the
// message's limits, else the task's.
func effectiveTimeLimit(msg protocol.TimeLimit, attrs taskAttrs) protocol.TimeLimit {
	tl := msg
	if tl.Hard <= 0 && attrs.hard != "" {
		tl.Hard, tl.HardRaw = numberSeconds(attrs.hard), attrs.hard
	}
	if tl.Soft <= 0 && attrs.soft != "" {
		tl.Soft, tl.SoftRaw = numberSeconds(attrs.soft), attrs.soft
	}
	return tl
}

// pyStr is str(getattr(task, item)) for the attributes registered shows,
// "" when unset (None is left out).
func (a taskAttrs) pyStr(item string) string {
	switch item {
	case "rate_limit":
		return a.rateLimit
	case "time_limit":
		return pyNumberStr(a.hard)
	case "soft_time_limit":
		return pyNumberStr(a.soft)
	}
	return ""
}

// pyNumberStr is Python's str() of a JSON number: "2", "2.0", "0.5".
func pyNumberStr(n json.Number) string {
	if n == "" {
		return ""
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return strconv.FormatInt(i, 10)
	}
	f, err := n.Float64()
	if err != nil {
		return string(n)
	}
	return pyfmt.FloatRepr(f)
}

// rateLimitWait takes the request's turn under its task's rate limit, once
// per request, and returns how long it must wait for it.
func (s *Server) rateLimitWait(r *request, now time.Time) time.Duration {
	r.mu.Lock()
	done := r.rateTaken
	r.rateTaken = true
	r.mu.Unlock()
	if done {
		return 0
	}
	attrs, _ := s.mux.taskAttrs(r.msg.Task)
	wait := s.limiter.reserve(r.msg.Task, attrs.rateLimit, now)
	if wait > 0 {
		r.log.Debug().Str("rate_limit", attrs.rateLimit).Dur("wait", wait).Msg("task waits for its rate limit")
	}
	return wait
}

// countRateWait counts r against the prefetch limit while it waits for its
// rate limit; uncountRateWait (deferred by the waiter) releases it.
func (s *Server) countRateWait(r *request) {
	r.mu.Lock()
	r.rateCounted = true
	r.mu.Unlock()
	s.mu.Lock()
	s.rateWaiting++
	s.mu.Unlock()
}

func (s *Server) uncountRateWait(r *request) {
	r.mu.Lock()
	counted := r.rateCounted
	r.rateCounted = false
	r.mu.Unlock()
	if !counted {
		return
	}
	s.mu.Lock()
	s.rateWaiting--
	s.broadcastLocked()
	s.mu.Unlock()
}
