// Package tasks holds the task handlers the Go worker registers. Each group
// has a Register function that adds its handlers to a runner.Mux.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/worker/runner"
)

// Diagnostics task names.
const (
	DiagEcho  = "diag.echo"
	DiagSleep = "diag.sleep"
	DiagFail  = "diag.fail"
	DiagRetry = "diag.retry"
	// DiagExhaust retries until it runs out of retries.
	DiagExhaust = "diag.exhaust"
	DiagCrash   = "diag.crash"
)

// RegisterDiagnostics adds the diag.* tasks operators use to probe a fleet:
//
//	diag.echo(*args, **kwargs) -> {"args": [...], "kwargs": {...}, "worker": hostname}
//	diag.sleep(seconds)        -> seconds, reporting PROGRESS every second
//	diag.fail(message)         -> raises RuntimeError(message)
//	diag.retry(times, countdown=1) -> retries `times` times, then returns the retry count
//	diag.exhaust(max_retries)  -> retries at once until MaxRetriesExceededError, then returns "exhausted"
//	diag.crash()               -> SIGKILLs the worker process (a poison message, for tests)
//
// Missing or mistyped arguments fail them with TypeError, as in Python.
func RegisterDiagnostics(mux *runner.Mux) {
	mux.HandleFunc(DiagEcho, diagEcho)
	mux.HandleFunc(DiagSleep, diagSleep)
	mux.HandleFunc(DiagFail, diagFail)
	mux.HandleFunc(DiagRetry, diagRetry)
	mux.HandleFunc(DiagExhaust, diagExhaust)
	mux.HandleFunc(DiagCrash, diagCrash)
}

// diagExhaust shows a handler seeing MaxRetriesExceededError, as a Python
// task catching it around self.retry does.
func diagExhaust(_ context.Context, t *runner.Task) (any, error) {
	arg, ok := argAt(t, 0, "max_retries")
	if !ok {
		return nil, runner.MissingArguments("exhaust", "max_retries")
	}
	n, err := number(arg)
	if err != nil || n < 0 || n != math.Trunc(n) {
		return nil, runner.TypeError("max_retries must be a non-negative integer, got %v", arg)
	}
	err = t.Retry(nil, 0, int(n))
	var mre *runner.MaxRetriesExceededError
	if errors.As(err, &mre) {
		return "exhausted", nil
	}
	return nil, err
}

// diagCrash kills its own worker with SIGKILL, as a segfault in cgo or the
// OOM killer would: the message stays unacked and is redelivered after the
// visibility timeout, which is what poison-message detection is for.
func diagCrash(ctx context.Context, t *runner.Task) (any, error) {
	zerolog.Ctx(ctx).Warn().Str("task_id", t.ID).Msg("diag.crash: killing this worker with SIGKILL")
	if err := syscall.Kill(os.Getpid(), syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("diag.crash: kill: %w", err)
	}
	select {} // SIGKILL cannot be caught; this line is never passed
}

func diagEcho(_ context.Context, t *runner.Task) (any, error) {
	return map[string]any{"args": t.Args, "kwargs": t.Kwargs, "worker": t.Hostname}, nil
}

func diagSleep(ctx context.Context, t *runner.Task) (any, error) {
	arg, ok := argAt(t, 0, "seconds")
	if !ok {
		return nil, runner.MissingArguments("sleep", "seconds")
	}
	secs, err := number(arg)
	if err != nil || secs < 0 || math.IsInf(secs, 0) {
		return nil, runner.TypeError("diag.sleep: seconds must be a non-negative number, got %v", arg)
	}
	total := time.Duration(secs * float64(time.Second))
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(total)
	defer end.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-end.C:
			return arg, nil
		case <-tick.C:
			elapsed := time.Since(start)
			msg := fmt.Sprintf("slept %.0fs of %gs", elapsed.Seconds(), secs)
			if err := t.Progress(ctx, elapsed.Seconds()/secs, msg); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("could not report progress")
			}
		}
	}
}

func diagFail(_ context.Context, t *runner.Task) (any, error) {
	msg := "diag.fail"
	if v, ok := argAt(t, 0, "message"); ok {
		if s, isStr := v.(string); isStr {
			msg = s
		} else {
			msg = fmt.Sprint(v)
		}
	}
	return nil, errors.New(msg)
}

func diagRetry(_ context.Context, t *runner.Task) (any, error) {
	arg, ok := argAt(t, 0, "times")
	if !ok {
		return nil, runner.MissingArguments("retry", "times")
	}
	times, err := number(arg)
	if err != nil || times < 0 || times != math.Trunc(times) {
		return nil, runner.TypeError("diag.retry: times must be a non-negative integer, got %v", arg)
	}
	countdown := time.Second
	if v, ok := argAt(t, 1, "countdown"); ok {
		c, err := number(v)
		if err != nil || c < 0 {
			return nil, runner.TypeError("diag.retry: countdown must be a non-negative number, got %v", v)
		}
		countdown = time.Duration(c * float64(time.Second))
	}
	if t.Retries < int(times) {
		cause := fmt.Errorf("diag.retry: retry %d of %d", t.Retries+1, int(times))
		return nil, runner.Retry(cause, countdown, int(times))
	}
	return t.Retries, nil
}

// argAt returns positional argument i, or the keyword argument name.
func argAt(t *runner.Task, i int, name string) (any, bool) {
	if i < len(t.Args) {
		return t.Args[i], true
	}
	v, ok := t.Kwargs[name]
	return v, ok
}

// number reads a JSON number argument (json.Number, float64 or a numeric
// string).
func number(v any) (float64, error) {
	switch x := v.(type) {
	case json.Number:
		return x.Float64()
	case float64:
		return x, nil
	case int:
		return float64(x), nil
	case string:
		return strconv.ParseFloat(x, 64)
	}
	return 0, fmt.Errorf("not a number: %T", v)
}
