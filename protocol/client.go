package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"
)

// SendOptions are apply_async's options.
type SendOptions struct {
	TaskID   string
	Queue    string // default "celery"
	Priority int
	// Countdown delays execution (the eta header is now+Countdown); it
	// takes precedence over ETA, as in Celery.
	Countdown     time.Duration
	ETA           time.Time
	Expires       time.Time
	TimeLimit     time.Duration // hard
	SoftTimeLimit time.Duration
	// Headers are custom headers (apply_async(headers=...)); the task sees
	// them as request.headers. Names the protocol uses are refused.
	Headers map[string]any
	// Link and LinkError are the callbacks and errbacks (link=, link_error=).
	Link      []Signature
	LinkError []Signature
	ParentID  string
	RootID    string
	// IgnoreResult tells the worker not to store a result; Get then
	// returns ErrNoResult.
	IgnoreResult bool
	Shadow       string
}

// isProtocolHeader reports whether name is a v2 header Message has a field
// for; a custom header of that name would silently replace the real one.
func isProtocolHeader(name string) bool {
	switch name {
	case "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index",
		"retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr",
		"origin", "ignore_result":
		return true
	}
	return false
}

// resultWaiter is how an AsyncResult waits: a connection per wait
// (*Backend) or a shared one (*ResultListener).
type resultWaiter interface {
	watch(ctx context.Context, taskID string, fn func(*ResultMeta)) (*ResultMeta, error)
}

// Client sends tasks and reads their results.
type Client struct {
	broker  *Broker
	backend *Backend
	waiter  resultWaiter
}

// NewClient returns a client on broker and backend. Its AsyncResults wait
// on a connection of their own each; see WithListener.
func NewClient(broker *Broker, backend *Backend) *Client {
	c := &Client{broker: broker, backend: backend}
	if backend != nil {
		c.waiter = backend
	}
	return c
}

// WithListener returns a client whose AsyncResults wait through l, sharing
// one connection among all waits. l must be running (ResultListener.Run).
func (c *Client) WithListener(l *ResultListener) *Client {
	c2 := *c
	c2.waiter = l
	return &c2
}

// Send publishes task name with args/kwargs and returns its result handle.
func (c *Client) Send(ctx context.Context, name string, args []any, kwargs map[string]any, opts SendOptions) (*AsyncResult, error) {
	if c.broker == nil {
		return nil, errors.New("protocol: the client has no broker; create it with NewClient(broker, backend)")
	}
	m, err := NewTaskMessage(name, args, kwargs, opts, time.Now())
	if err != nil {
		return nil, err
	}
	if err := c.broker.publishMessage(ctx, m); err != nil {
		return nil, fmt.Errorf("protocol: send task %s to queue %s: %w", name, m.RoutingKey, err)
	}
	r := c.Result(m.ID)
	r.ignored = opts.IgnoreResult
	return r, nil
}

// NewTaskMessage builds the message apply_async would send for name with
// opts at time now. Client.Send publishes it; it is exported for callers
// that publish themselves (e.g. with their own broker or in a pipeline).
func NewTaskMessage(name string, args []any, kwargs map[string]any, opts SendOptions, now time.Time) (*Message, error) {
	if name == "" {
		return nil, errors.New("protocol: a task needs a name")
	}
	for k := range opts.Headers {
		if isProtocolHeader(k) {
			return nil, fmt.Errorf("protocol: custom header %q of task %s is a protocol header; use the SendOptions field instead", k, name)
		}
	}
	if opts.TimeLimit < 0 || opts.SoftTimeLimit < 0 {
		return nil, fmt.Errorf("protocol: negative time limit for task %s", name)
	}
	if args == nil {
		args = []any{}
	}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	id := opts.TaskID
	if id == "" {
		id = NewID()
	}
	root := opts.RootID
	if root == "" {
		root = id
	}
	queue := opts.Queue
	if queue == "" {
		queue = DefaultQueue
	}
	m := &Message{
		ID:           id,
		Task:         name,
		Lang:         "go",
		Shadow:       opts.Shadow,
		TimeLimit:    TimeLimit{Hard: opts.TimeLimit, Soft: opts.SoftTimeLimit},
		RootID:       root,
		ParentID:     opts.ParentID,
		IgnoreResult: opts.IgnoreResult,
		Headers:      maps.Clone(opts.Headers),
		Args:         args,
		Kwargs:       kwargs,
		Embed: Embed{
			Callbacks: normalizeSignatures(opts.Link),
			Errbacks:  normalizeSignatures(opts.LinkError),
		},
		CorrelationID: id,
		Priority:      opts.Priority,
		// The anonymous exchange with the queue as routing key is what
		// Celery sends for direct queues: kombu delivers it with a plain
		// LPUSH and restores it without a binding lookup.
		Exchange:   "",
		RoutingKey: queue,
		Protocol:   2,
	}
	switch {
	case opts.Countdown != 0:
		eta := now.Add(opts.Countdown).UTC()
		m.ETA = &eta
	case !opts.ETA.IsZero():
		eta := opts.ETA.UTC()
		m.ETA = &eta
	}
	if !opts.Expires.IsZero() {
		exp := opts.Expires.UTC()
		m.Expires = &exp
	}
	return m, nil
}

// normalizeSignatures copies sigs with nil args/kwargs/options replaced by
// empty ones: Python's Signature.apply_async does tuple(self.args) and
// fails on null.
func normalizeSignatures(sigs []Signature) []Signature {
	if len(sigs) == 0 {
		return nil
	}
	out := make([]Signature, len(sigs))
	for i, s := range sigs {
		if s.Args == nil {
			s.Args = []any{}
		}
		if s.Kwargs == nil {
			s.Kwargs = map[string]any{}
		}
		if s.Options == nil {
			s.Options = map[string]any{}
		}
		out[i] = s
	}
	return out
}

// AsyncResult is a handle on one task's result.
type AsyncResult struct {
	ID string

	backend *Backend
	waiter  resultWaiter
	ignored bool
}

// Result returns the handle for an id.
func (c *Client) Result(id string) *AsyncResult {
	return &AsyncResult{ID: id, backend: c.backend, waiter: c.waiter}
}

var errNoBackend = errors.New("protocol: the client has no result backend; create it with NewClient(broker, backend)")

// Get waits for the task to finish and returns its raw JSON result, or the
// *TaskError it failed with (FAILURE or REVOKED).
func (r *AsyncResult) Get(ctx context.Context) (json.RawMessage, error) {
	meta, err := r.Wait(ctx)
	if err != nil {
		return nil, err
	}
	if err := meta.Err(); err != nil {
		return nil, err
	}
	return meta.Result, nil
}

// Wait waits for the task to reach a ready state and returns its meta.
func (r *AsyncResult) Wait(ctx context.Context) (*ResultMeta, error) {
	return r.Watch(ctx, nil)
}

// Watch is Wait that also hands every intermediate state (STARTED,
// PROGRESS, RETRY) to fn.
func (r *AsyncResult) Watch(ctx context.Context, fn func(*ResultMeta)) (*ResultMeta, error) {
	if r.ignored {
		return nil, ErrNoResult
	}
	if r.waiter == nil {
		return nil, errNoBackend
	}
	return r.waiter.watch(ctx, r.ID, fn)
}

// State returns the current state.
func (r *AsyncResult) State(ctx context.Context) (State, error) {
	meta, err := r.meta(ctx)
	if err != nil {
		return "", err
	}
	return meta.Status, nil
}

// meta returns the current meta.
func (r *AsyncResult) meta(ctx context.Context) (*ResultMeta, error) {
	if r.backend == nil {
		return nil, errNoBackend
	}
	return r.backend.Get(ctx, r.ID)
}
