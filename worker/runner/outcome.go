package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"morag-gpu/protocol"
)

// The outcome paths below share one order, Python's: side effects
// (continuations), then the result, then the ack, then the event. Each
// Redis write is retried until it succeeds or a forced shutdown stops it;
// in that case the message stays held and Run requeues (or, with its
// result stored, acks) it.

func (s *Server) succeed(ctx context.Context, r *request, value any, runtime time.Duration) {
	encoded, err := protocol.MarshalJSON(value)
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
	switch {
	case isChordPart(r):
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
	case r.msg.IgnoreResult:
		r.markStored()
		if !s.ack(ctx, r) {
			return
		}
	default:
		if !s.storeAndAck(ctx, r, "store SUCCESS", success) {
			return
		}
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
}

func (s *Server) fail(ctx context.Context, r *request, te *protocol.TaskError, tb string) {
	err := s.store(ctx, r, "store FAILURE", protocol.StoreRequest{
		TaskID:    r.msg.ID,
		State:     protocol.StateFailure,
		Result:    te,
		Traceback: tb,
		Message:   r.msg,
		Worker:    s.cfg.Hostname,
	})
	if err != nil {
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
	next := retryMessage(r.msg, r.d.Queue, re.Countdown, time.Now())
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
		held, err = s.broker.Forward(ctx, r.d.Tag, r.d.Queue, envelope, next.Priority)
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
		held, err = s.broker.Forward(ctx, r.d.Tag, queue, envelope, r.msg.Priority)
		return err
	})
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
		"exception": "NotRegistered(" + protocol.PyStrRepr(r.msg.Task) + ")",
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
	return persist(ctx, r.log, what, func(ctx context.Context) error { return s.backend.Store(ctx, req) })
}

// ack removes the message from the broker's unacked set and forgets it.
// It reports false when a forced shutdown stopped it first.
func (s *Server) ack(ctx context.Context, r *request) bool {
	var held bool
	err := persist(ctx, r.log, "acknowledge the message", func(ctx context.Context) error {
		var err error
		held, err = s.broker.Ack(ctx, r.d.Tag)
		return err
	})
	if err != nil {
		return false
	}
	s.acked(r, held)
	return true
}

// storeAndAck stores the final state and acks the message in one atomic
// Redis step (result first, as ack does after store), retrying through
// outages. It reports false when a forced shutdown stopped it first; the
// message then stays held, and Run requeues it unless the step had
// already succeeded, in which case the requeue finds nothing to restore.
func (s *Server) storeAndAck(ctx context.Context, r *request, what string, req protocol.StoreRequest) bool {
	var held bool
	err := persist(ctx, r.log, what+" and acknowledge the message", func(ctx context.Context) error {
		var err error
		held, err = s.broker.StoreAndAck(ctx, s.backend, req, r.d.Tag)
		return err
	})
	if err != nil {
		return false
	}
	r.markStored()
	s.acked(r, held)
	return true
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
	var v any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return string(data)
	}
	return v
}
