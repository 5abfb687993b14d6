package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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
	// Queue (Config.LiveConsumers), e.g. "start a worker with whisper";
	// empty: "start a worker that registers <task> on <queue>".
	Remedy string
	// Accept, when set, says whether a live consumer of Queue can finish
	// the task (and if not, why); with Config.LiveConsumers a forward needs
	// one that can. Nil: any live consumer will do.
	Accept func(WorkerInfo) (ok bool, why string)
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
	var ae *ArgumentError
	if errors.As(err, &ae) {
		return protocol.NewTaskError("TypeError", modBuiltins, ae.Msg)
	}
	var mre *MaxRetriesExceededError
	if errors.As(err, &mre) {
		if mre.Cause != nil {
			// Task.retry re-raises the exc it was given.
			return taskError(mre.Cause, cause)
		}
		return protocol.NewTaskError("MaxRetriesExceededError", modCelery, mre.msg)
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

// ArgumentError fails a task with Python's TypeError, what a Python task
// called with wrong or missing arguments raises.
type ArgumentError struct{ Msg string }

func (e *ArgumentError) Error() string { return "TypeError: " + e.Msg }

// TypeError returns an *ArgumentError with the formatted message.
func TypeError(format string, a ...any) error {
	return &ArgumentError{Msg: fmt.Sprintf(format, a...)}
}

// MissingArguments is Python's TypeError for a call without required
// positional arguments: "f() missing 2 required positional arguments:
// 'a' and 'b'".
func MissingArguments(function string, names ...string) error {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "'" + n + "'"
	}
	var list string
	switch len(quoted) {
	case 0:
		return TypeError("%s() missing required arguments", function)
	case 1:
		return TypeError("%s() missing 1 required positional argument: %s", function, quoted[0])
	case 2:
		list = quoted[0] + " and " + quoted[1]
	default:
		list = strings.Join(quoted[:len(quoted)-1], ", ") + ", and " + quoted[len(quoted)-1]
	}
	return TypeError("%s() missing %d required positional arguments: %s", function, len(quoted), list)
}

// TooManyArguments is Python's TypeError for too many positional
// arguments: "f() takes 2 positional arguments but 3 were given".
func TooManyArguments(function string, takes, given int) error {
	plural := "s"
	if takes == 1 {
		plural = ""
	}
	were := "were"
	if given == 1 {
		were = "was"
	}
	return TypeError("%s() takes %d positional argument%s but %d %s given", function, takes, plural, given, were)
}

// MaxRetriesExceededError is what Task.Retry returns once the task has
// used its retries, as Python's Task.retry raises it: a handler may
// handle it (errors.As) or return it. Returned, the task fails with Cause
// when one was given (Python re-raises exc), else with Celery's
// MaxRetriesExceededError("Can't retry name[id] args:... kwargs:...").
type MaxRetriesExceededError struct {
	Cause      error
	MaxRetries int
	msg        string
}

func (e *MaxRetriesExceededError) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("max retries (%d) exceeded: %v", e.MaxRetries, e.Cause)
	}
	return "MaxRetriesExceededError: " + e.msg
}

func (e *MaxRetriesExceededError) Unwrap() error { return e.Cause }

// Retry is Python's self.retry(exc=cause, countdown=..., max_retries=...)
// for this task: it returns the error to return from the handler to
// retry, or, when the task already ran maxRetries retries, a
// *MaxRetriesExceededError the handler sees first. maxRetries < 0 retries
// forever (Python's max_retries=None).
func (t *Task) Retry(cause error, countdown time.Duration, maxRetries int) error {
	if maxRetries >= 0 && t.Retries >= maxRetries {
		m := t.Message
		if m == nil {
			m = &protocol.Message{ID: t.ID, Task: t.Name, Args: t.Args, Kwargs: t.Kwargs}
		}
		return &MaxRetriesExceededError{Cause: cause, MaxRetries: maxRetries, msg: maxRetriesMessage(m)}
	}
	return Retry(cause, countdown, maxRetries)
}

// maxRetriesMessage is Task.retry's MaxRetriesExceededError text.
func maxRetriesMessage(m *protocol.Message) string {
	return fmt.Sprintf("Can't retry %s[%s] args:%s kwargs:%s", m.Task, m.ID, pyArgsRepr(m.Args), kwargsRepr(m))
}
