package runner

import (
	"context"
	"errors"
	"fmt"
	"math"

	"morag-gpu/protocol"
)

// Task is what a handler gets: the decoded message and ways to report
// progress. Handlers must not modify Message.
type Task struct {
	ID      string
	Name    string
	Queue   string // the queue it was fetched from
	Args    []any  // numbers are json.Number
	Kwargs  map[string]any
	Retries int
	// Hostname is this worker's node name (e.g. "celery@host").
	Hostname string
	// Info is Config.Info (read-only).
	Info    map[string]any
	Message *protocol.Message

	srv *Server
}

// Progress stores the custom PROGRESS state with meta
// {"progress": fraction, "message": message}, for clients to poll.
// fraction is clamped to [0, 1].
func (t *Task) Progress(ctx context.Context, fraction float64, message string) error {
	if math.IsNaN(fraction) {
		return errors.New("runner: Progress fraction is NaN; pass a value between 0 and 1")
	}
	fraction = math.Max(0, math.Min(1, fraction))
	return t.SetState(ctx, protocol.StateProgress, map[string]any{"progress": fraction, "message": message})
}

// SetState stores a custom state with meta as its result, like Python's
// update_state(state=..., meta=...). The task's final state (SUCCESS,
// FAILURE, ...) overwrites it when the handler returns. For a task sent
// with ignore_result it stores nothing.
func (t *Task) SetState(ctx context.Context, state protocol.State, meta map[string]any) error {
	if state == "" {
		return errors.New("runner: SetState with an empty state")
	}
	if t.srv == nil || t.Message == nil {
		return errors.New("runner: SetState on a Task the runner did not create")
	}
	if t.Message.IgnoreResult {
		return nil
	}
	err := t.srv.tr.Store(ctx, protocol.StoreRequest{
		TaskID:  t.ID,
		State:   state,
		Result:  meta,
		Message: t.Message,
		Worker:  t.Hostname,
	})
	if err != nil {
		return fmt.Errorf("runner: store state %s of task %s: %w", state, t.ID, err)
	}
	return nil
}

// ConsumerQueues lists the queues this worker consumes from right now.
func (t *Task) ConsumerQueues() []string {
	if t.srv == nil {
		return nil
	}
	return t.srv.queues()
}
