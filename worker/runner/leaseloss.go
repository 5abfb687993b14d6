package runner

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// ErrLeaseLost is the cause of a handler's context when the worker could
// not refresh the task's lease for longer than the visibility timeout:
// by then any restorer (Python's too) may have put the message back on
// its queue and another worker may be running it. This copy is
// abandoned: it stores no result, does not ack (the ack would remove the
// other worker's hold, which has the same delivery tag), and leaves the
// message to the restore.
var ErrLeaseLost = errors.New("runner: lease lost: the worker could not refresh the task's lease for longer than the visibility timeout, " +
	"so the message may have been restored and taken by another worker; this run is abandoned and stores no result")

// leaseWatch remembers when the lease of every held message was last
// known good: the start of the last refresh round in which every Touch
// succeeded (the scores it wrote are no older than that), and whether the
// latest round failed. Only a failing refresh loses a lease: while rounds
// succeed, a message is safe however it was fetched.
type leaseWatch struct {
	lastOK  atomic.Int64 // UnixNano
	failing atomic.Bool
}

func newLeaseWatch(now time.Time) *leaseWatch {
	w := &leaseWatch{}
	w.lastOK.Store(now.UnixNano())
	return w
}

// round records the outcome of the refresh round that started at start.
func (w *leaseWatch) round(start time.Time, ok bool) {
	if ok {
		w.lastOK.Store(start.UnixNano())
	}
	w.failing.Store(!ok)
}

// leaseStart is when r's lease was last known to be renewed: the last
// good refresh round, or its fetch if that came later (the score written
// at fetch may precede the receipt by up to one blocking fetch).
func (w *leaseWatch) leaseStart(r *request) time.Time {
	ok := time.Unix(0, w.lastOK.Load())
	if fetched := r.received.Add(-fetchTimeout); fetched.After(ok) {
		return fetched
	}
	return ok
}

// lapsed reports whether r's lease, last renewed at since, is strictly
// older than vt at now; while refreshes succeed no lease lapses. It takes
// now instead of reading a clock, so a test can decide the boundary to
// the nanosecond instead of sleeping across it.
func (w *leaseWatch) lapsed(r *request, now time.Time, vt time.Duration) (since time.Time, lost bool) {
	if !w.failing.Load() {
		return time.Time{}, false
	}
	since = w.leaseStart(r)
	return since, now.Sub(since) > vt
}

// checkInterval is how often leases are checked against the visibility
// timeout: a twentieth of it, so the decision comes at most 5% late, but
// not busier than every 50 ms.
func checkInterval(vt time.Duration) time.Duration { return max(vt/20, 50*time.Millisecond) }

// watchLeases abandons every held message whose lease could not be
// refreshed for longer than the visibility timeout, until ctx ends. Its
// owner is leaseLoop.
func (s *Server) watchLeases(ctx context.Context, w *leaseWatch) {
	t := s.cfg.Clock.NewTicker(checkInterval(s.cfg.VisibilityTimeout))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C():
			if !w.failing.Load() {
				continue
			}
			for _, r := range s.snapshot() {
				if since, lost := w.lapsed(r, now, s.cfg.VisibilityTimeout); lost {
					s.loseLease(r, since)
				}
			}
		}
	}
}

// loseLease abandons r: a task not started yet is dropped, a running one
// has its handler cancelled (cause ErrLeaseLost) and its outcome writes
// stopped. Either way the worker forgets the message without acking it,
// so the restore hands it to exactly one worker.
func (s *Server) loseLease(r *request, since time.Time) {
	if !r.leaseLost.CompareAndSwap(false, true) {
		return
	}
	log := r.log.Error().Time("lease_refreshed", since).Dur("visibility_timeout", s.cfg.VisibilityTimeout)
	s.unhold(r)
	if r.transition(stateDone, stateReserved, stateScheduled) {
		log.Msg("lease lost before the task started (Redis unreachable for longer than the visibility timeout); " +
			"dropping this copy without acking it: the message returns to its queue through the restore")
		return
	}
	r.mu.Lock()
	if r.state == stateActive {
		if r.cancel != nil {
			r.cancel(ErrLeaseLost)
		}
		select {
		case <-r.terminate:
		default:
			close(r.terminate) // frees the slot even if the handler ignores its context
		}
	}
	stopIO := r.stopIO
	r.mu.Unlock()
	if stopIO != nil {
		stopIO(ErrLeaseLost)
	}
	log.Msg("lease lost while the task ran (Redis unreachable for longer than the visibility timeout); " +
		"cancelled the handler, storing no result and not acking: another worker may have restored and run it")
}

// guardOutcome returns ctx for writing r's outcome: it ends, with cause
// ErrLeaseLost, if the lease is lost meanwhile, so that a store or ack
// retried through an outage stops instead of landing after another
// worker took the task. lost reports that the lease is already lost:
// write nothing.
func (s *Server) guardOutcome(ctx context.Context, r *request) (out context.Context, stop func(), lost bool) {
	ctx, cancel := context.WithCancelCause(ctx)
	r.mu.Lock()
	r.stopIO = cancel
	r.mu.Unlock()
	stop = func() {
		r.mu.Lock()
		r.stopIO = nil
		r.mu.Unlock()
		cancel(nil)
	}
	if r.leaseLost.Load() {
		r.transition(stateDone, stateActive)
		r.log.Warn().Msg("the task ended after its lease was lost; its outcome is discarded")
		return ctx, stop, true
	}
	return ctx, stop, false
}
