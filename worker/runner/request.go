package runner

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/protocol"
)

// reqState is where a held message is in its life.
type reqState int

const (
	stateReserved  reqState = iota // fetched, waiting for a slot
	stateScheduled                 // waiting for its ETA
	stateActive                    // its handler runs
	stateDone                      // acked, requeued or forwarded: nothing left to do
)

func (s reqState) String() string {
	return [...]string{"reserved", "scheduled", "active", "done"}[s]
}

// request is one held message: it is in the broker's unacked bookkeeping
// from fetch until it reaches stateDone.
type request struct {
	d        *protocol.Delivery
	msg      *protocol.Message
	handler  Handler // nil for unknown task names
	log      zerolog.Logger
	received time.Time

	mu        sync.Mutex
	state     reqState
	started   time.Time
	cancel    context.CancelCauseFunc // the handler's context, while active
	terminate chan struct{}           // closed by revoke(terminate=True)
	wake      chan struct{}           // closed by revoke: an ETA waiter re-checks
	wakeOnce  sync.Once
	stored    bool // the final state is in the backend
	counted   bool // its start is counted in Redis (poison detection)
	// uncounted: no start of this delivery was ever counted (its queued
	// start was withdrawn), so its finish has no count to drop.
	uncounted bool
	signum    int  // the signal revoke(terminate) named
	rateTaken bool // the request took its turn under its task's rate limit
	// rateCounted: it counts against the prefetch limit while it waits.
	rateCounted bool
	// limits are the time limits it runs under (message, else task).
	limits protocol.TimeLimit
	// leaseLost and stopIO belong to leaseloss.go: the lease could not be
	// refreshed in time, and what stops the outcome's Redis writes.
	leaseLost atomic.Bool
	stopIO    context.CancelCauseFunc
}

func newRequest(d *protocol.Delivery, h Handler, log zerolog.Logger, now time.Time) *request {
	return &request{
		d:         d,
		msg:       d.Message,
		handler:   h,
		log:       log,
		received:  now,
		terminate: make(chan struct{}),
		wake:      make(chan struct{}),
	}
}

// transition moves the request from one of the states in from to to, and
// reports whether it did. Every path that finishes a message claims it
// this way first, so exactly one of them acks, requeues or forwards it.
func (r *request) transition(to reqState, from ...reqState) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range from {
		if r.state == f {
			r.state = to
			return true
		}
	}
	return false
}

func (r *request) getState() reqState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// markStored records that the final state is in the backend, so that a
// forced shutdown acks the message instead of requeueing it.
func (r *request) markStored() {
	r.mu.Lock()
	r.stored = true
	r.mu.Unlock()
}

// markCounted records that r's start is counted in Redis, so that a
// shutdown that gives r back undoes its count (RestoreStarted).
func (r *request) markCounted() {
	r.mu.Lock()
	r.counted = true
	r.mu.Unlock()
}

// finishOp is r's CommitFinish, storing store (nil: nothing).
func (r *request) finishOp(store *protocol.StoreRequest) protocol.CommitOp {
	r.mu.Lock()
	defer r.mu.Unlock()
	return protocol.CommitOp{Kind: protocol.CommitFinish, Tag: r.d.Tag, Store: store, Uncounted: r.uncounted}
}

func (r *request) isCounted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counted
}

// requestTerminate cancels the running handler (revoke with terminate) and
// reports whether the task was running.
func (r *request) requestTerminate(signum int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != stateActive {
		return false
	}
	select {
	case <-r.terminate:
	default:
		r.signum = signum
		close(r.terminate)
		if r.cancel != nil {
			r.cancel(ErrTerminated)
		}
	}
	return true
}

// wakeUp makes an ETA waiter re-check the revoked set now.
func (r *request) wakeUp() { r.wakeOnce.Do(func() { close(r.wake) }) }

// name is the display name: the shadow name when the sender set one.
func (r *request) name() string {
	if r.msg.Shadow != "" {
		return r.msg.Shadow
	}
	return r.msg.Task
}

func (r *request) terminated() bool {
	select {
	case <-r.terminate:
		return true
	default:
		return false
	}
}

// expired reports whether the message's expires time has passed.
func (r *request) expired(now time.Time) bool {
	return r.msg.Expires != nil && now.After(*r.msg.Expires)
}

// info is Python's Request.info(): the shape of one entry in
// `inspect active/reserved/scheduled/query_task`.
func (r *request) info(hostname string, pid int, safe bool) map[string]any {
	r.mu.Lock()
	started, state := r.started, r.state
	r.mu.Unlock()
	var args, kwargs any = r.msg.Args, r.msg.Kwargs
	if args == nil {
		args = []any{}
	}
	if r.msg.Kwargs == nil {
		kwargs = map[string]any{}
	}
	if safe {
		args, kwargs = argsRepr(r.msg), kwargsRepr(r.msg)
	}
	var timeStart, workerPid any
	if state == stateActive && !started.IsZero() {
		timeStart = float64(started.UnixNano()) / 1e9
		workerPid = pid
	}
	var redelivered any
	if r.msg.Redelivered {
		redelivered = true
	}
	return map[string]any{
		"id":         r.msg.ID,
		"name":       r.name(),
		"args":       args,
		"kwargs":     kwargs,
		"type":       r.msg.Task,
		"hostname":   hostname,
		"time_start": timeStart,
		// Python acks at start; this worker acks when the result is
		// stored. Report what operators read it for: whether it started.
		"acknowledged": timeStart != nil,
		"delivery_info": map[string]any{
			"exchange":    r.msg.Exchange,
			"routing_key": r.d.Queue,
			"priority":    r.msg.Priority,
			"redelivered": redelivered,
		},
		"worker_pid": workerPid,
	}
}

func argsRepr(m *protocol.Message) string {
	if m.ArgsRepr != "" {
		return m.ArgsRepr
	}
	return pyArgsRepr(m.Args)
}

func kwargsRepr(m *protocol.Message) string {
	if m.KwargsRepr != "" {
		return m.KwargsRepr
	}
	if m.Kwargs == nil {
		return "{}"
	}
	return pyRepr(m.Kwargs, 0)
}
