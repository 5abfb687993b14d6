package runner

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"morag-gpu/protocol"
)

// outcome is how one handler call ended.
type outcome struct {
	value      any
	err        error
	cause      error // context.Cause of the handler's context when it returned
	panicked   any
	stack      []byte
	hardLimit  bool
	terminated bool
}

// slot runs reserved tasks one at a time until stopCtx ends or the pool
// shrinks below it; Concurrency slots run side by side.
func (s *Server) slot(id int, stopCtx, ioCtx, base context.Context) {
	for {
		r := s.next(stopCtx, id)
		if r == nil {
			return
		}
		s.execute(ioCtx, base, r)
		s.mu.Lock()
		s.active--
		s.wakeFetchersLocked()
		s.mu.Unlock()
	}
}

// next takes the oldest reserved task, or returns nil once the server is
// stopping (what is still reserved then is requeued by Run) or slot id is
// to retire because the pool shrank.
func (s *Server) next(stopCtx context.Context, id int) *request {
	var r *request
	s.waitFor(stopCtx, slotWaiter, func() bool {
		if s.stopping || s.retireLocked(id) {
			return true
		}
		dropped := false
		defer func() {
			// Taking a task moves it from ready to active, which changes
			// no one's condition; dropping one frees room for a fetch.
			if dropped {
				s.wakeFetchersLocked()
			}
		}()
		for len(s.ready) > 0 {
			c := s.ready[0]
			s.ready[0] = nil
			s.ready = s.ready[1:]
			if c.transition(stateActive, stateReserved) {
				r = c
				s.active++
				s.writes[id]++
				return true
			}
			dropped = true
		}
		return false
	})
	return r
}

// execute runs one task to its outcome. Its handler runs in a goroutine of
// its own so that a hard time limit, a terminate or a forced shutdown can
// free the slot while a handler that ignores its context keeps running
// (Go cannot kill a goroutine; that handler's result is discarded).
func (s *Server) execute(ioCtx, base context.Context, r *request) {
	msg := r.msg
	now := s.cfg.Clock.Now()
	if expired := r.expired(now); expired || s.revoked.Contains(now, msg.ID) {
		if expired {
			s.revoked.Add(now, msg.ID)
		}
		s.revoke(ioCtx, r, revokeReason(expired), false, nil)
		return
	}

	hctx, cancel := context.WithCancelCause(r.log.WithContext(base))
	attrs, _ := s.mux.taskAttrs(msg.Task)
	limits := effectiveTimeLimit(msg.TimeLimit, attrs)
	r.mu.Lock()
	r.started = now
	r.cancel = cancel
	r.limits = limits
	r.mu.Unlock()
	s.countStart(msg.Task)
	s.cfg.Observer.TaskStarted(msg.Task)

	// Count the start (poison-message detection) and store STARTED
	// (task_track_started) in the group commit. A message that was
	// delivered before, or every message under Config.CountBeforeRun, is
	// counted before its handler runs: a handler that kills the process at
	// once must already be counted. A first delivery's start goes out
	// while its handler runs, count and STARTED in one op, so that a
	// worker full of short tasks does not wait a round trip per task; one
	// that kills the process before that commit lands is counted from its
	// second delivery on. A task that ends before its start was taken by a
	// committer withdraws it (settleStarted): a no-op task then costs one
	// write, its outcome. A poller sees PENDING and the final state, as it
	// may for any task shorter than its polling interval; a task that runs
	// longer than a commit shows STARTED.
	var started *commitReq
	if s.cfg.CountBeforeRun || r.d.Starts > 0 || msg.Redelivered {
		if !s.countStartFirst(ioCtx, r) {
			cancel(ErrShutdown)
			return // still held: Run requeues it
		}
		if r.isCounted() && !msg.IgnoreResult {
			started = s.queueStart(ioCtx, r, true)
		}
	} else {
		started = s.queueStart(ioCtx, r, false)
	}
	s.taskEvent("task-started", map[string]any{"uuid": msg.ID})
	r.log.Info().Msg("task started")

	if soft := limits.Soft; soft > 0 {
		t := s.cfg.Clock.AfterFunc(soft, func() {
			r.log.Warn().Dur("soft_time_limit", soft).Msg("soft time limit exceeded; cancelling the handler's context")
			cancel(ErrSoftTimeLimit)
		})
		defer t.Stop()
	}
	var hardC <-chan time.Time
	if hard := limits.Hard; hard > 0 {
		t := s.cfg.Clock.NewTimer(hard)
		defer t.Stop()
		hardC = t.C()
	}

	task := &Task{
		ID:       msg.ID,
		Name:     msg.Task,
		Queue:    r.d.Queue,
		Args:     msg.Args,
		Kwargs:   msg.Kwargs,
		Retries:  msg.Retries,
		Hostname: s.cfg.Hostname,
		Info:     s.cfg.Info,
		Message:  msg,
		srv:      s,
	}
	if task.Args == nil {
		task.Args = []any{}
	}
	if task.Kwargs == nil {
		task.Kwargs = map[string]any{}
	}
	start := s.cfg.Clock.Now()
	done := make(chan outcome, 1)
	go func() { done <- call(hctx, r.handler, task) }() // owner: this slot, until its ctx is cancelled

	var o outcome
	select {
	case o = <-done:
	case <-hardC:
		o = outcome{hardLimit: true}
	case <-r.terminate:
		o = outcome{terminated: true}
	case <-ioCtx.Done():
		s.settleStarted(r, started)
		cancel(ErrShutdown)
		return // still held: Run requeues it
	}
	s.settleStarted(r, started)
	if r.terminated() {
		o = outcome{terminated: true}
	}
	switch {
	case o.hardLimit:
		cancel(ErrTimeLimit)
	case o.terminated:
		cancel(ErrTerminated)
	default:
		cancel(nil)
	}
	s.finish(ioCtx, r, o, s.cfg.Clock.Now().Sub(start))
}

// countStartFirst commits r's start count and waits for it; false: the
// worker is shutting down and r was not started.
func (s *Server) countStartFirst(ctx context.Context, r *request) bool {
	st, err := s.commits.commit(ctx, protocol.CommitOp{Kind: protocol.CommitStart, Tag: r.d.Tag, Starts: r.d.Starts})
	switch {
	case err != nil && ctx.Err() != nil:
		return false
	case err != nil:
		r.log.Warn().Err(err).Msg("could not count the start; running the task anyway")
	case st[0] != protocol.CommitHeld:
		// Redis lost it (restarted empty) or another consumer restored
		// it: running it is the only way a lost task still gets done.
		r.log.Warn().Msg("the message was no longer held when the task started; running it anyway")
	default:
		r.markCounted()
	}
	return true
}

// queueStart queues r's start without waiting for it: the count, unless
// countStartFirst already committed it (then it is written again with the
// same value), and STARTED unless the task ignores its result. With no
// Result, protocol stores Celery's {"pid", "hostname"} (this process's pid
// and Worker) without a map to build and sort per task. Nothing is written
// once r is no longer held.
func (s *Server) queueStart(ctx context.Context, r *request, counted bool) *commitReq {
	op := protocol.CommitOp{Kind: protocol.CommitStart, Tag: r.d.Tag, Starts: r.d.Starts}
	if !r.msg.IgnoreResult {
		op.Store = &protocol.StoreRequest{
			TaskID:  r.msg.ID,
			State:   protocol.StateStarted,
			Message: r.msg,
			Worker:  s.cfg.Hostname,
		}
	}
	req := &commitReq{
		ops: []protocol.CommitOp{op},
		then: func(st []protocol.CommitStatus, err error) {
			switch {
			case err != nil:
				r.log.Warn().Err(err).Msg("could not count the start or store STARTED")
			case st[0] == protocol.CommitHeld && !counted:
				r.markCounted()
			}
		},
	}
	if !s.commits.submit(ctx, req) {
		return nil
	}
	return req
}

// settleStarted withdraws r's queued start (queueStart) if no commit has
// taken it yet. One already on its way is not waited for, so that a task
// that ended at once costs no extra round trip: it may land before the
// outcome, or after the outcome's ack, when the commit no longer finds the
// message held and writes nothing. Either way it never follows the
// outcome. (A started message goes back to a queue, under the same tag,
// only once the commits have drained at shutdown, or after its lease
// lapsed, when nothing of this run is written.)
func (s *Server) settleStarted(r *request, req *commitReq) {
	if req != nil && req.withdraw() {
		r.mu.Lock()
		// A first delivery's queued start was its only count: withdrawn,
		// nothing was counted.
		r.uncounted = !r.counted
		r.mu.Unlock()
	}
}

// call runs the handler, turning a panic into an outcome.
func call(ctx context.Context, h Handler, t *Task) (o outcome) {
	defer func() {
		if p := recover(); p != nil {
			o = outcome{panicked: p, stack: debug.Stack()}
		}
	}()
	v, err := h.ServeTask(ctx, t)
	return outcome{value: v, err: err, cause: context.Cause(ctx)}
}

// finish stores and acknowledges what the handler's outcome calls for.
func (s *Server) finish(ctx context.Context, r *request, o outcome, runtime time.Duration) {
	ctx, stop, lost := s.guardOutcome(ctx, r)
	defer stop()
	if lost {
		return
	}
	switch {
	case o.terminated:
		r.mu.Lock()
		signum := r.signum
		r.mu.Unlock()
		s.revoke(ctx, r, "terminated", true, signum)
	case o.hardLimit:
		r.mu.Lock()
		limits := r.limits
		r.mu.Unlock()
		// billiard raises TimeLimitExceeded(job._timeout): the number as
		// the worker received it, 2 or 2.0.
		var limit any = limits.HardRaw
		if limits.HardRaw == "" {
			limit = pyFloatNumber(limits.Hard.Seconds())
		}
		te := &protocol.TaskError{ExcType: "TimeLimitExceeded", ExcModule: modBilliard, ExcMessage: []any{limit}}
		r.log.Error().Float64("time_limit", limits.Hard.Seconds()).Msg("hard time limit exceeded; abandoning the handler")
		// Python's on_timeout stores the failure without a traceback.
		s.fail(ctx, r, te, "")
	case o.panicked != nil:
		te := protocol.NewTaskError("RuntimeError", modBuiltins, fmt.Sprintf("panic: %v", o.panicked))
		if isTypePanic(o.panicked) {
			// A failed type assertion on an argument is Python's TypeError.
			te.ExcType = "TypeError"
		}
		s.fail(ctx, r, te, panicTraceback(te, o.stack))
	case o.err != nil:
		var re *RetryError
		var fe *ForwardError
		switch {
		case errors.As(o.err, &re):
			s.retry(ctx, r, re, o.cause)
		case errors.As(o.err, &fe):
			s.forward(ctx, r, fe)
		default:
			te := taskError(o.err, o.cause)
			s.fail(ctx, r, te, errorTraceback(te, o.err, r.msg.Task))
		}
	default:
		s.succeed(ctx, r, o.value, runtime)
	}
}

func (s *Server) countStart(name string) {
	s.mu.Lock()
	s.processed++
	s.total[name]++
	s.mu.Unlock()
}

// isTypePanic reports a panic from a failed interface conversion.
func isTypePanic(p any) bool {
	_, ok := p.(*runtime.TypeAssertionError)
	return ok
}
