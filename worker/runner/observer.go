package runner

import (
	"time"

	"morag-gpu/protocol"
)

// Observer is told what the runner does, for metrics (see worker/metrics).
// The runner calls it synchronously from its own goroutines, so an
// implementation must be safe for concurrent use and must not block.
// Embed NopObserver to implement only some methods, and to keep compiling
// when methods are added.
type Observer interface {
	// TaskReceived: a decoded message for task name is now held.
	TaskReceived(name string)
	// TaskStarted: its handler starts.
	TaskStarted(name string)
	// TaskDone: the task reached a final state for this delivery (SUCCESS,
	// FAILURE, RETRY or REVOKED, stored and acknowledged). runtime is the
	// time since its handler started, 0 when it never started.
	TaskDone(name string, state protocol.State, runtime time.Duration)
	// TaskForwarded: the task was handed, unchanged, to queue.
	TaskForwarded(name, queue string)
	// Held is the number of messages held (received and not yet
	// acknowledged or requeued) after each change.
	Held(n int)
	// LeaseRefreshed: one lease refresh of n held messages, err when it
	// failed.
	LeaseRefreshed(n int, err error)
	// DeadLettered: an undecodable message was moved to the dead-letter
	// list.
	DeadLettered(reason string)
}

// NopObserver ignores everything. It is the default Config.Observer.
type NopObserver struct{}

func (NopObserver) TaskReceived(string)                            {}
func (NopObserver) TaskStarted(string)                             {}
func (NopObserver) TaskDone(string, protocol.State, time.Duration) {}
func (NopObserver) TaskForwarded(string, string)                   {}
func (NopObserver) Held(int)                                       {}
func (NopObserver) LeaseRefreshed(int, error)                      {}
func (NopObserver) DeadLettered(string)                            {}

// observeDone reports r's final state with the time since its handler
// started.
func (s *Server) observeDone(r *request, state protocol.State) {
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	var runtime time.Duration
	if !started.IsZero() {
		runtime = s.cfg.Clock.Now().Sub(started)
	}
	s.cfg.Observer.TaskDone(r.msg.Task, state, runtime)
}
