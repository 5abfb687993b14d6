package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol"
)

// The outcome paths below share one order, Python's: side effects
// (continuations), then the result, then the ack, then the event. Each
// Redis write is retried until it succeeds or a forced shutdown stops it;
// in that case the message stays held and Run requeues (or, with its
// result stored, acks) it.

func (s *Server) succeed(ctx context.Context, r *request, value any, runtime time.Duration) {
	encoded, err := protocol.EncodeResult(value)
	if err != nil {
		te := protocol.NewTaskError("EncodeError", "kombu.exceptions",
			fmt.Sprintf("the result of %s cannot be encoded as JSON: %v", r.msg.Task, err))
		s.fail(ctx, r, te, traceback(te, ""))
		return
	}
	// retval is what Python's callbacks and event repr see; decoding it
	// costs as much as encoding, so only when something reads it.
	events := s.taskEvents.Load()
	var retval any
	if events || len(r.msg.Embed.Callbacks) > 0 || len(r.msg.Embed.Chain) > 0 {
		retval = decodeGeneric(encoded)
	}
	children, ok := s.continueCanvas(ctx, r, retval)
	if !ok {
		return
	}
	success := protocol.StoreRequest{
		TaskID:   r.msg.ID,
		State:    protocol.StateSuccess,
		Result:   json.RawMessage(encoded),
		Message:  r.msg,
		Worker:   s.cfg.Hostname,
		Children: children,
	}
	if isChordPart(r) {
		// Result, then the chord join, then the ack: see chordPartReturn.
		if !r.msg.IgnoreResult && s.store(ctx, r, "store SUCCESS", success) != nil {
			return
		}
		if !s.chordPartReturn(ctx, r, protocol.StateSuccess, json.RawMessage(encoded)) {
			return
		}
		r.markStored()
		if !s.ack(ctx, r) {
			return
		}
		if events {
			s.taskEvent("task-succeeded", map[string]any{
				"uuid":    r.msg.ID,
				"result":  pyRepr(retval, 1024),
				"runtime": runtime.Seconds(),
			})
		}
		s.observeDone(r, protocol.StateSuccess)
		r.log.Info().Float64("runtime", runtime.Seconds()).Msg("task succeeded")
		return
	}
	// The result, the ack and the task-succeeded event go to Redis in the
	// group commit while this slot takes its next task: the message stays
	// held (and counted against the prefetch limit) until they are in.
	var store *protocol.StoreRequest
	if !r.msg.IgnoreResult {
		store = &success
	}
	ops := []protocol.CommitOp{r.finishOp(store)}
	if events {
		ops = s.appendEvent(ops, "task-succeeded", map[string]any{
			"uuid":    r.msg.ID,
			"result":  pyRepr(retval, 1024),
			"runtime": runtime.Seconds(),
		})
	}
	s.finishAsync(ctx, r, "store SUCCESS and acknowledge the message", ops, func() {
		s.observeDone(r, protocol.StateSuccess)
		r.log.Info().Float64("runtime", runtime.Seconds()).Msg("task succeeded")
	})
}

func (s *Server) fail(ctx context.Context, r *request, te *protocol.TaskError, tb string) {
	req := protocol.StoreRequest{
		TaskID:    r.msg.ID,
		State:     protocol.StateFailure,
		Result:    te,
		Traceback: tb,
		Message:   r.msg,
		Worker:    s.cfg.Hostname,
	}
	if len(r.msg.Embed.Chain) == 0 && len(r.msg.Embed.Errbacks) == 0 && !isChordPart(r) {
		// Nothing to send in between: result and ack in one step of the
		// group commit, which writes no result for a message restored
		// elsewhere meanwhile.
		if !s.storeAndAck(ctx, r, "store FAILURE", req) {
			return
		}
	} else {
		if err := s.store(ctx, r, "store FAILURE", req); err != nil {
			return
		}
		// A chord part is marked stored only once the join has it: a forced
		// shutdown before that requeues the part rather than lose its count.
		if !s.chordPartReturn(ctx, r, protocol.StateFailure, te) {
			return
		}
		r.markStored()
		if !s.failChain(ctx, r, te, tb) || !s.sendErrbacks(ctx, r) {
			return
		}
		if !s.ack(ctx, r) {
			return
		}
	}
	s.taskEvent("task-failed", map[string]any{
		"uuid":      r.msg.ID,
		"exception": excRepr(te),
		"traceback": tb,
	})
	s.observeDone(r, protocol.StateFailure)
	r.log.Error().Str("exception", excRepr(te)).Msg("task failed")
}

func (s *Server) retry(ctx context.Context, r *request, re *RetryError, cause error) {
	var te *protocol.TaskError
	if re.Cause != nil {
		te = taskError(re.Cause, cause)
	}
	if re.MaxRetries >= 0 && r.msg.Retries >= re.MaxRetries {
		if te == nil {
			te = protocol.NewTaskError("MaxRetriesExceededError", modCelery, maxRetriesMessage(r.msg))
		}
		r.log.Warn().Int("retries", r.msg.Retries).Int("max_retries", re.MaxRetries).Msg("max retries exceeded")
		s.fail(ctx, r, te, errorTraceback(te, re, r.msg.Task))
		return
	}
	next := retryMessage(r.msg, r.d.Queue, re.Countdown, s.cfg.Clock.Now())
	envelope, err := protocol.Encode(next)
	if err != nil {
		enc := protocol.NewTaskError("EncodeError", "kombu.exceptions", fmt.Sprintf("cannot republish %s for retry: %v", r.msg.Task, err))
		s.fail(ctx, r, enc, traceback(enc, ""))
		return
	}
	tb := ""
	var result any // JSON null when retried without an exception, as in Python
	if te != nil {
		tb = traceback(te, "")
		result = te
	}
	err = s.store(ctx, r, "store RETRY", protocol.StoreRequest{
		TaskID:    r.msg.ID,
		State:     protocol.StateRetry,
		Result:    result,
		Traceback: tb,
		Message:   r.msg,
		Worker:    s.cfg.Hostname,
	})
	if err != nil {
		return
	}
	// Republish and ack in one step, as forward does: a retried Publish
	// after a lost reply, or a crash between publish and ack, would
	// otherwise leave two live copies of the task. When the original is no
	// longer held, whoever restored it owns the task and nothing is sent.
	var held bool
	err = persist(ctx, r.log, "republish the task for retry", func(ctx context.Context) error {
		var err error
		held, err = s.tr.Forward(ctx, r.d.Tag, r.d.Queue, envelope, next.Priority)
		return err
	})
	if err != nil {
		return
	}
	r.markStored()
	s.acked(r, held)
	if !held {
		return
	}
	s.taskEvent("task-retried", map[string]any{
		"uuid":      r.msg.ID,
		"exception": excRepr(te),
		"traceback": tb,
	})
	s.observeDone(r, protocol.StateRetry)
	r.log.Info().Int("retries", next.Retries).Dur("countdown", re.Countdown).Msg("task retried")
}

// retryMessage is Task.retry's new message: the same task with retries+1
// and an ETA, published where the original came from.
func retryMessage(m *protocol.Message, queue string, countdown time.Duration, now time.Time) *protocol.Message {
	next := *m
	next.Retries = m.Retries + 1
	next.ETA = nil
	if countdown > 0 {
		eta := now.Add(countdown)
		next.ETA = &eta
	}
	next.Headers = make(map[string]any, len(m.Headers))
	for k, v := range m.Headers {
		if k != "redelivered" {
			next.Headers[k] = v
		}
	}
	next.DeliveryTag = ""
	next.Redelivered = false
	next.Exchange = ""
	next.RoutingKey = queue
	return &next
}

func (s *Server) forward(ctx context.Context, r *request, fe *ForwardError) {
	queue, reason := fe.Queue, fe.Reason
	from := forwardedFrom(r.msg.Headers)
	if queue == "" || queue == r.d.Queue || contains(from, queue) {
		te := protocol.NewTaskError("RuntimeError", modBuiltins, fmt.Sprintf(
			"cannot forward %s to queue %q (%s): it already came through that queue, so forwarding would loop",
			r.msg.Task, queue, reason))
		s.fail(ctx, r, te, traceback(te, ""))
		return
	}
	if msg := s.deadEnd(ctx, r, fe); msg != "" {
		te := protocol.NewTaskError("RuntimeError", modBuiltins, msg)
		r.log.Warn().Str("to_queue", queue).Str("reason", reason).Msg("not forwarding: no live worker on the queue can take the task; failing it")
		s.fail(ctx, r, te, traceback(te, ""))
		return
	}
	envelope, err := retarget(r.d.Raw, r.d.Queue, queue, protocol.NewID())
	if err != nil {
		te := protocol.NewTaskError("RuntimeError", modBuiltins, fmt.Sprintf("cannot forward %s to queue %q: %v", r.msg.Task, queue, err))
		s.fail(ctx, r, te, traceback(te, ""))
		return
	}
	// Publish and ack in one step: a crash can neither lose nor duplicate
	// the task.
	var held bool
	err = persist(ctx, r.log, "forward the task", func(ctx context.Context) error {
		var err error
		held, err = s.tr.Forward(ctx, r.d.Tag, queue, envelope, r.msg.Priority)
		return err
	})
	if err != nil && permanent(err) {
		// The transport will never take it there (a gateway-mediated
		// worker may forward only into its user's queues).
		te := protocol.NewTaskError("RuntimeError", modBuiltins, fmt.Sprintf("cannot forward %s to queue %q: %v", r.msg.Task, queue, err))
		s.fail(ctx, r, te, traceback(te, ""))
		return
	}
	if err != nil {
		return
	}
	r.markStored()
	s.acked(r, held)
	if held {
		s.cfg.Observer.TaskForwarded(r.msg.Task, queue)
		r.log.Info().Str("to_queue", queue).Str("reason", reason).Msg("task forwarded")
	}
}

// unknownTask forwards a task no handler is registered for, or fails it
// as NotRegistered (Python's on_unknown_task) when forwarding would loop.
func (s *Server) unknownTask(ctx context.Context, r *request) {
	r.transition(stateActive, stateReserved)
	to := s.cfg.ForwardUnknown
	if to != "" && to != r.d.Queue && !contains(forwardedFrom(r.msg.Headers), to) {
		s.forward(ctx, r, &ForwardError{Queue: to, Reason: "no handler registered for this task name on this worker"})
		return
	}
	te := protocol.NewTaskError("NotRegistered", modCelery, r.msg.Task)
	if !s.storeAndAck(ctx, r, "store FAILURE (NotRegistered)", protocol.StoreRequest{
		TaskID:  r.msg.ID,
		State:   protocol.StateFailure,
		Result:  te,
		Message: r.msg,
		Worker:  s.cfg.Hostname,
	}) {
		return
	}
	s.taskEvent("task-failed", map[string]any{
		"uuid":      r.msg.ID,
		"exception": "NotRegistered(" + pyfmt.StrRepr(r.msg.Task) + ")",
	})
	s.observeDone(r, protocol.StateFailure)
	r.log.Error().Msg("received unregistered task and nowhere to forward it; failed it as NotRegistered")
}

// revoke stores REVOKED with TaskRevokedError(reason), acks, and sends
// task-revoked. signum is the terminate signal number, or nil.
func (s *Server) revoke(ctx context.Context, r *request, reason string, terminated bool, signum any) {
	te := protocol.NewTaskError("TaskRevokedError", modCelery, reason)
	revoked := protocol.StoreRequest{
		TaskID:  r.msg.ID,
		State:   protocol.StateRevoked,
		Result:  te,
		Message: r.msg,
		Worker:  s.cfg.Hostname,
	}
	if isChordPart(r) {
		if s.store(ctx, r, "store REVOKED", revoked) != nil {
			return
		}
		if !s.chordPartReturn(ctx, r, protocol.StateRevoked, te) {
			return
		}
		r.markStored()
		if !s.ack(ctx, r) {
			return
		}
	} else if !s.storeAndAck(ctx, r, "store REVOKED", revoked) {
		return
	}
	s.taskEvent("task-revoked", map[string]any{
		"uuid":       r.msg.ID,
		"terminated": terminated,
		"signum":     signum,
		"expired":    reason == "expired",
	})
	s.observeDone(r, protocol.StateRevoked)
	r.log.Info().Str("reason", reason).Msg("task revoked")
}

// store writes a state, retrying through Redis outages.
func (s *Server) store(ctx context.Context, r *request, what string, req protocol.StoreRequest) error {
	return persist(ctx, r.log, what, func(ctx context.Context) error { return s.tr.Store(ctx, req) })
}

// ack removes the message from the broker's unacked set and forgets it.
// It reports false when a forced shutdown stopped it first.
func (s *Server) ack(ctx context.Context, r *request) bool {
	return s.finishCommit(ctx, r, "acknowledge the message", nil)
}

// storeAndAck stores the final state and acks the message in one atomic
// Redis step (result first, as ack does after store), in the group commit,
// retrying through outages. It reports false when a forced shutdown
// stopped it first; the message then stays held, and Run requeues it
// unless the step had already succeeded, in which case the requeue finds
// nothing to restore.
func (s *Server) storeAndAck(ctx context.Context, r *request, what string, req protocol.StoreRequest) bool {
	return s.finishCommit(ctx, r, what+" and acknowledge the message", &req)
}

// finishCommit commits a CommitFinish for r. A message another consumer
// restored after this worker started it gets no result from this run: it
// runs again there, and that run writes the result.
func (s *Server) finishCommit(ctx context.Context, r *request, what string, req *protocol.StoreRequest) bool {
	st, err := s.commits.commit(ctx, r.finishOp(req))
	if err != nil {
		var ee *protocol.CommitEncodeError
		if errors.As(err, &ee) && req != nil && req.State != protocol.StateFailure {
			te := protocol.NewTaskError("EncodeError", "kombu.exceptions", fmt.Sprintf("%s: %v", what, ee.Err))
			s.fail(ctx, r, te, traceback(te, ""))
			return false
		}
		r.log.Error().Err(err).Msg(what + " failed")
		return false
	}
	s.settle(r, st[0])
	return true
}

// settle is what a landed CommitFinish leaves: r's outcome is stored, and
// r is acked, or, when another consumer restored the message while it ran,
// dropped without an ack (the task runs again there). It reports whether
// r was acked.
func (s *Server) settle(r *request, st protocol.CommitStatus) bool {
	r.markStored()
	if st == protocol.CommitElsewhere {
		r.mu.Lock()
		r.state = stateDone
		r.mu.Unlock()
		s.unhold(r)
		r.log.Warn().Msg("another consumer restored this message while it ran (a visibility timeout shorter than the task?): " +
			"not writing this run's result, the task runs again there")
		return false
	}
	s.acked(r, st == protocol.CommitHeld)
	return true
}

// finishAsync queues ops (a CommitFinish for r first, then events) in the
// group commit without waiting; done runs once they are in, unless the
// message was restored elsewhere meanwhile. Until then r stays held and
// counts against the committing allowance (fetchLoop). If a forced shutdown stops the commit,
// r stays held and Run requeues it.
func (s *Server) finishAsync(ctx context.Context, r *request, what string, ops []protocol.CommitOp, done func()) {
	s.mu.Lock()
	s.committing++
	s.mu.Unlock()
	req := &commitReq{ops: ops}
	req.then = func(st []protocol.CommitStatus, err error) {
		defer func() {
			s.mu.Lock()
			s.committing--
			s.wakeFetchersLocked()
			s.mu.Unlock()
		}()
		if err != nil {
			r.log.Error().Err(err).Msg(what + " failed; the message stays held and returns to its queue")
			return
		}
		if s.settle(r, st[0]) && done != nil {
			done()
		}
	}
	if !s.commits.submit(ctx, req) {
		err := ctx.Err()
		if err == nil {
			err = errors.New("the worker stopped committing task states")
		}
		req.then(nil, err)
	}
}

// appendEvent adds a task event to a commit when task events are on.
func (s *Server) appendEvent(ops []protocol.CommitOp, typ string, fields map[string]any) []protocol.CommitOp {
	channel, env, err := s.tr.EncodeEvent(typ, fields)
	if err != nil {
		s.log.Debug().Err(err).Str("event", typ).Msg("could not encode event")
		return ops
	}
	return append(ops, protocol.CommitOp{Kind: protocol.CommitPublish, Channel: channel, Payload: env})
}

// acked forgets an acknowledged message.
func (s *Server) acked(r *request, held bool) {
	r.mu.Lock()
	r.state = stateDone
	r.mu.Unlock()
	s.unhold(r)
	if !held {
		r.log.Warn().Msg("the message was no longer held when acknowledged: it was restored by another consumer " +
			"(a shorter visibility timeout, or Redis lost it), so this task may run again")
	}
}

// decodeGeneric decodes JSON into plain values with json.Number numbers,
// what Python's json.loads would see.
func decodeGeneric(data []byte) any {
	v, err := protocol.DecodeJSON(data)
	if err != nil {
		return string(data)
	}
	return v
}
