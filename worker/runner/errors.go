package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"morag-gpu/fleet"
	"morag-gpu/protocol"
)

// Causes of a handler context's cancellation (see context.Cause).
var (
	// ErrSoftTimeLimit: the task's soft time limit passed. A handler that
	// returns it (or ctx.Err() after it) fails with Python's
	// SoftTimeLimitExceeded.
	ErrSoftTimeLimit = errors.New("runner: soft time limit exceeded")
	// ErrTimeLimit: the task's hard time limit passed; it was failed with
	// TimeLimitExceeded and whatever the handler returns is discarded.
	ErrTimeLimit = errors.New("runner: hard time limit exceeded; result discarded")
	// ErrTerminated: the task was revoked with terminate=True.
	ErrTerminated = errors.New("runner: task revoked with terminate")
	// ErrShutdown: the worker is shutting down and stopped waiting; the
	// task's message is requeued, so whatever the handler returns is
	// discarded.
	ErrShutdown = errors.New("runner: worker shutting down; task requeued")
)

// RetryError is returned by Retry.
type RetryError struct {
	Cause      error
	Countdown  time.Duration
	MaxRetries int // negative: unlimited
}

func (e *RetryError) Error() string {
	if e.Cause == nil {
		return fmt.Sprintf("retry in %s", e.Countdown)
	}
	return fmt.Sprintf("retry in %s: %v", e.Countdown, e.Cause)
}

func (e *RetryError) Unwrap() error { return e.Cause }

// Retry, returned by a handler, retries the task as Python's Task.retry
// does: the same message (same id, args and headers) is republished with
// retries+1 and an ETA countdown from now, and RETRY is stored with cause
// as its exception. When the task already ran maxRetries retries it fails
// instead, with cause (or MaxRetriesExceededError when cause is nil).
// maxRetries < 0 retries forever.
func Retry(cause error, countdown time.Duration, maxRetries int) error {
	if countdown < 0 {
		countdown = 0
	}
	return &RetryError{Cause: cause, Countdown: countdown, MaxRetries: maxRetries}
}

// ForwardError is returned by Forward. A handler may build one itself to
// add a Remedy.
type ForwardError struct {
	Queue  string
	Reason string
	// Remedy is what an operator should start when no live worker consumes
	// Queue (Config.ForwardOnlyToLive), e.g. "start a worker with whisper";
	// empty: "start a worker that registers <task> on <queue>".
	Remedy string
	// Accept, when set, says whether a live consumer of Queue can finish
	// the task (and if not, why); with ForwardOnlyToLive a forward needs
	// one that can. Nil: any live consumer will do.
	Accept func(fleet.Worker) (ok bool, why string)
}

func (e *ForwardError) Error() string {
	return fmt.Sprintf("forward to queue %q: %s", e.Queue, e.Reason)
}

// Forward, returned by a handler, hands the task to another queue: the
// original message (same id, args, headers, retries) is published to queue
// and acknowledged here; nothing is stored. Forwarding to the queue the
// task came from, or to one it was already forwarded from, would loop, so
// the task fails instead.
func Forward(queue, reason string) error {
	return &ForwardError{Queue: queue, Reason: reason}
}

// Python's exception classes for failures the runner itself reports.
const (
	modBuiltins = "builtins"
	modCelery   = "celery.exceptions"
	modBilliard = "billiard.exceptions"
)

// taskError turns what a handler returned into the exception Python will
// raise. cause is context.Cause of the handler's context.
func taskError(err error, cause error) *protocol.TaskError {
	var te *protocol.TaskError
	if errors.As(err, &te) {
		return te
	}
	if errors.Is(err, ErrSoftTimeLimit) ||
		(cause == ErrSoftTimeLimit && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))) {
		return &protocol.TaskError{ExcType: "SoftTimeLimitExceeded", ExcModule: modBilliard, ExcMessage: []any{}}
	}
	return protocol.NewTaskError("RuntimeError", modBuiltins, err.Error())
}

// traceback renders a Go failure where Python keeps its traceback text.
func traceback(te *protocol.TaskError, detail string) string {
	s := "Traceback (most recent call last):\n"
	if detail != "" {
		s += detail
		if s[len(s)-1] != '\n' {
			s += "\n"
		}
	}
	return s + pyExceptionLine(te) + "\n"
}

// pyExceptionLine is the last line of a Python traceback: "Type: message".
func pyExceptionLine(te *protocol.TaskError) string {
	switch len(te.ExcMessage) {
	case 0:
		return te.ExcType
	case 1:
		return fmt.Sprintf("%s: %v", te.ExcType, te.ExcMessage[0])
	}
	return fmt.Sprintf("%s: %s", te.ExcType, pyRepr(te.ExcMessage, 1024))
}

// excRepr is repr(exc) as Python's events carry it, e.g.
// "RuntimeError('boom')".
func excRepr(te *protocol.TaskError) string {
	if te == nil {
		return "None"
	}
	args := ""
	for i, a := range te.ExcMessage {
		if i > 0 {
			args += ", "
		}
		args += pyRepr(a, 1024)
	}
	return te.ExcType + "(" + args + ")"
}
