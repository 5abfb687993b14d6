//go:build !wip_backend

// Stub of the result backend and client API; owned by the backend work.
package protocol

import (
	"context"
	"encoding/json"
	"time"

	"github.com/gomodule/redigo/redis"
)

// BackendOptions configure the Redis result backend.
type BackendOptions struct {
	Expires   time.Duration // result_expires, default 24h; <0 means no expiry
	KeyPrefix string        // result backend global_keyprefix
}

// Backend is Celery's Redis result backend.
type Backend struct{}

// NewBackend wraps pool.
func NewBackend(pool *redis.Pool, opts BackendOptions) *Backend { panic("stub") }

// Store writes celery-task-meta-<id> with SETEX and PUBLISHes it, atomically,
// and never overwrites a stored SUCCESS (as Celery does).
func (b *Backend) Store(ctx context.Context, req StoreRequest) error { panic("stub") }

// Get reads the current meta; a missing key is PENDING.
func (b *Backend) Get(ctx context.Context, taskID string) (*ResultMeta, error) { panic("stub") }

// Wait subscribes to the task's channel, then reads the key, and returns as
// soon as the state is ready (no polling). It survives reconnects.
func (b *Backend) Wait(ctx context.Context, taskID string) (*ResultMeta, error) { panic("stub") }

// Watch is like Wait but also delivers every intermediate state (STARTED,
// PROGRESS, RETRY, ...) to fn. It returns the ready meta.
func (b *Backend) Watch(ctx context.Context, taskID string, fn func(*ResultMeta)) (*ResultMeta, error) {
	panic("stub")
}

// Forget deletes the stored result.
func (b *Backend) Forget(ctx context.Context, taskID string) error { panic("stub") }

// DecodeResult unmarshals meta.Result into v (kombu JSON rules).
func (m *ResultMeta) DecodeResult(v any) error { panic("stub") }

// Err returns the *TaskError for FAILURE/REVOKED/RETRY metas, else nil.
func (m *ResultMeta) Err() error { panic("stub") }

// SendOptions are apply_async's options.
type SendOptions struct {
	TaskID        string
	Queue         string // default "celery"
	Priority      int
	Countdown     time.Duration
	ETA           time.Time
	Expires       time.Time
	TimeLimit     time.Duration // hard
	SoftTimeLimit time.Duration
	Headers       map[string]any
	Link          []Signature
	LinkError     []Signature
	ParentID      string
	RootID        string
	IgnoreResult  bool
	Shadow        string
}

// Client sends tasks and reads their results.
type Client struct{}

// NewClient returns a client on broker and backend.
func NewClient(broker *Broker, backend *Backend) *Client { panic("stub") }

// Send publishes task name with args/kwargs and returns its result handle.
func (c *Client) Send(ctx context.Context, name string, args []any, kwargs map[string]any, opts SendOptions) (*AsyncResult, error) {
	panic("stub")
}

// AsyncResult is a handle on one task's result.
type AsyncResult struct {
	ID string
}

// Result returns the handle for an id.
func (c *Client) Result(id string) *AsyncResult { panic("stub") }

// Get waits for the task to finish and returns its raw JSON result, or the
// *TaskError it failed with.
func (r *AsyncResult) Get(ctx context.Context) (json.RawMessage, error) { panic("stub") }

// State returns the current state.
func (r *AsyncResult) State(ctx context.Context) (State, error) { panic("stub") }

// Meta returns the current meta.
func (r *AsyncResult) Meta(ctx context.Context) (*ResultMeta, error) { panic("stub") }
