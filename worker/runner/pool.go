package runner

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"morag-gpu/protocol"
)

// The pool: Concurrency execution slots, each a goroutine that runs one
// task at a time. Its size can change while the worker runs (remote
// pool_grow, pool_shrink and autoscale, as on a Python prefork pool)
// without dropping work: a grown pool starts slots at once; a shrunk one
// retires idle slots, and busy ones when their task is done. The prefetch
// limit follows the size (Python's _update_prefetch_count).

// autoscaleInterval and autoscaleKeepalive are Celery's Autoscaler
// defaults: look every second, shrink no sooner than 30 s after growing.
const (
	autoscaleInterval  = time.Second
	autoscaleKeepalive = 30 * time.Second
)

// slotContexts are the contexts Run gives the slots, kept for slots
// started later by a pool change.
type slotContexts struct{ stop, io, base context.Context }

// initPoolLocked sets the pool's starting size.
func (s *Server) initPoolLocked() {
	s.concurrency = s.cfg.Concurrency
	s.prefetchPer = float64(s.cfg.Prefetch) / float64(s.cfg.Concurrency)
	s.prefetch = s.cfg.Prefetch
	s.autoscale = s.cfg.Autoscale
	s.writes = map[int]int64{}
}

// setConcurrencyLocked resizes the pool to n slots (at least 1) and starts
// slots when it grew. It reports false when the worker is stopping.
func (s *Server) setConcurrencyLocked(n int) bool {
	if s.stopping || s.slotCtx.stop == nil {
		return false
	}
	n = max(1, n)
	if n > s.concurrency {
		s.lastScaleUp = s.cfg.Clock.Now()
	}
	s.concurrency = n
	s.prefetch = int(math.Round(s.prefetchPer * float64(n)))
	for s.slots < s.concurrency {
		s.startSlotLocked()
	}
	s.broadcastLocked() // retiring slots and fetchers re-check
	return true
}

// startSlotLocked starts one slot goroutine, owned by s.work.
func (s *Server) startSlotLocked() {
	s.slots++
	s.nextSlot++
	id := s.nextSlot
	s.writes[id] = 0
	c := s.slotCtx
	s.work.Go(func() { s.slot(id, c.stop, c.io, c.base) })
}

// retireLocked reports whether slot id should end because the pool shrank,
// and forgets it if so.
func (s *Server) retireLocked(id int) bool {
	if s.slots <= s.concurrency {
		return false
	}
	s.slots--
	delete(s.writes, id)
	return true
}

func (s *Server) ctlPoolGrow(_ context.Context, req *protocol.ControlRequest) (any, error) {
	n := argInt(req.Arguments["n"], 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.autoscale.Max > 0 {
		return nok("pool_grow is not supported with autoscale. Adjust autoscale range instead."), nil
	}
	if n < 1 {
		return nok(fmt.Sprintf("pool_grow needs n >= 1, got %d", n)), nil
	}
	if !s.setConcurrencyLocked(s.concurrency + n) {
		return nok("the worker is shutting down"), nil
	}
	s.log.Info().Int("n", n).Int("concurrency", s.concurrency).Msg("pool grown (remote pool_grow)")
	return ok("pool will grow"), nil
}

func (s *Server) ctlPoolShrink(_ context.Context, req *protocol.ControlRequest) (any, error) {
	n := argInt(req.Arguments["n"], 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.autoscale.Max > 0 {
		return nok("pool_shrink is not supported with autoscale. Adjust autoscale range instead."), nil
	}
	if n < 1 || s.concurrency-n < 1 {
		return nok(fmt.Sprintf("cannot shrink the pool of %d slots by %d: at least one slot must remain", s.concurrency, n)), nil
	}
	if !s.setConcurrencyLocked(s.concurrency - n) {
		return nok("the worker is shutting down"), nil
	}
	s.log.Info().Int("n", n).Int("concurrency", s.concurrency).Msg("pool shrinking (remote pool_shrink); busy slots finish their task first")
	return ok("pool will shrink"), nil
}

// ctlAutoscale is Celery's autoscale(max, min). Python refuses it on a
// worker started without --autoscale; goroutine slots cost nothing to
// keep, so here it turns autoscaling on.
func (s *Server) ctlAutoscale(_ context.Context, req *protocol.ControlRequest) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hi := argInt(req.Arguments["max"], s.autoscale.Max)
	lo := argInt(req.Arguments["min"], s.autoscale.Min)
	if hi <= 0 {
		hi = max(s.concurrency, lo, 1)
	}
	if lo < 0 || lo > hi {
		return nok(fmt.Sprintf("autoscale max=%d min=%d: use 0 <= min <= max", hi, lo)), nil
	}
	s.autoscale = AutoscaleRange{Max: hi, Min: lo}
	s.broadcastLocked()
	s.log.Info().Int("max", hi).Int("min", lo).Msg("autoscale range set (remote autoscale)")
	return ok(fmt.Sprintf("autoscale now max=%d min=%d", hi, lo)), nil
}

// autoscaleLoop is Celery's Autoscaler: every second, grow to the number
// of tasks in hand (running and reserved) up to max, or shrink towards it,
// no lower than min and no sooner than 30 s after the last growth.
func (s *Server) autoscaleLoop(ctx context.Context) {
	t := s.cfg.Clock.NewTicker(autoscaleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			s.mu.Lock()
			s.autoscaleLocked(s.cfg.Clock.Now())
			s.mu.Unlock()
		}
	}
}

func (s *Server) autoscaleLocked(now time.Time) {
	a := s.autoscale
	if a.Max <= 0 {
		return
	}
	qty := s.active + len(s.ready)
	switch {
	case min(qty, a.Max) > s.concurrency:
		s.setConcurrencyLocked(min(qty, a.Max))
	case max(qty, a.Min, 1) < s.concurrency && now.Sub(s.lastScaleUp) >= autoscaleKeepalive:
		s.setConcurrencyLocked(max(qty, a.Min, 1))
	case s.concurrency > a.Max:
		s.setConcurrencyLocked(a.Max)
	}
}

// poolStats is `inspect stats`' pool entry in a prefork pool's shape; the
// per-slot task counts stand for its per-process writes.
func (s *Server) poolStats() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]int, 0, len(s.writes))
	for id := range s.writes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var total int64
	for _, id := range ids {
		total += s.writes[id]
	}
	per := func(v float64) string {
		if v == 0 || total == 0 {
			return "0.00"
		}
		return strconv.FormatFloat(v/float64(total), 'f', 2, 64)
	}
	all, raw := make([]string, len(ids)), make([]string, len(ids))
	for i, id := range ids {
		all[i] = per(float64(s.writes[id]))
		raw[i] = strconv.FormatInt(s.writes[id], 10)
	}
	avg := "0.00"
	if total > 0 && len(ids) > 0 {
		avg = per(float64(total) / float64(len(ids)))
	}
	procs := make([]any, s.concurrency)
	for i := range procs {
		procs[i] = s.pid
	}
	stats := map[string]any{
		"max-concurrency":          s.concurrency,
		"processes":                procs,
		"max-tasks-per-child":      "N/A",
		"put-guarded-by-semaphore": false,
		"timeouts":                 []any{0, 0},
		"implementation":           "goroutines",
		"writes": map[string]any{
			"total":    total,
			"avg":      avg,
			"all":      strings.Join(all, ", "),
			"raw":      strings.Join(raw, ", "),
			"strategy": "fair",
			"inqueues": map[string]any{"total": s.concurrency, "active": s.active},
		},
	}
	if s.autoscale.Max > 0 {
		stats["autoscaler"] = map[string]any{"max": s.autoscale.Max, "min": s.autoscale.Min, "qty": s.active + len(s.ready)}
	}
	return stats
}

// argInt reads an integer control argument (JSON number or numeric
// string), or def when absent.
func argInt(v any, def int) int {
	switch x := v.(type) {
	case nil:
		return def
	case float64:
		return int(x)
	case int:
		return x
	case string:
		if n, err := strconv.Atoi(strings.TrimSpace(x)); err == nil {
			return n
		}
	case interface{ Int64() (int64, error) }:
		if n, err := x.Int64(); err == nil {
			return int(n)
		}
	}
	return def
}

// prefetchCount is `inspect stats`' prefetch_count: running plus waiting.
func (s *Server) prefetchCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limitLocked()
}
