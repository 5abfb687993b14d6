package runner

import (
	"context"
	"fmt"

	"morag-gpu/protocol"
)

// Poison messages. When a task kills its worker (a segfault in cgo, the
// OOM killer, a GPU driver hang that stops the process), kombu redelivers
// the message after the visibility timeout with retries still 0, and it
// kills the next worker the same way: a fleet-wide crash loop. Every Go
// worker counts the starts of a message in Redis (protocol.CommitStart,
// keyed by delivery tag, surviving restarts of any worker) and clears the
// count when the task finishes; a message that arrives with
// Config.MaxDeliveries unfinished starts behind it is not run again but
// failed with billiard's WorkerLostError, which Python clients know, and
// moved to the dead-letter list with the reason.
//
// Only starts on Go workers count: a Python worker that restores the
// message and runs it itself neither counts nor clears it (its completion
// leaves a stale count that expires with its TTL).

// poison fails r without running it.
func (s *Server) poison(ctx context.Context, r *request) {
	d, msg := r.d, r.msg
	reason := fmt.Sprintf("poison: started %d times and never finished (each worker that took it died or hung); max deliveries %d",
		d.Starts, s.cfg.MaxDeliveries)
	te := protocol.NewTaskError("WorkerLostError", modBilliard, fmt.Sprintf(
		"Task %s[%s] was delivered %d times and killed or hung the worker each time; not running it again "+
			"(-max-deliveries %d). The message is in the dead-letter list %s.",
		msg.Task, msg.ID, d.Starts, s.cfg.MaxDeliveries, s.tr.DeadLetterList()))
	tb := traceback(te, "")
	req := &protocol.StoreRequest{
		TaskID:    msg.ID,
		State:     protocol.StateFailure,
		Result:    te,
		Traceback: tb,
		Message:   msg,
		Worker:    s.cfg.Hostname,
	}
	var held bool
	err := persist(ctx, r.log, "fail a poison message", func(ctx context.Context) error {
		var err error
		held, err = s.tr.Poison(ctx, d, req, reason)
		return err
	})
	if err != nil {
		return // forced shutdown: still held, Run requeues it
	}
	r.markStored()
	s.acked(r, held)
	if !held {
		return
	}
	s.taskEvent("task-failed", map[string]any{
		"uuid":      msg.ID,
		"exception": excRepr(te),
		"traceback": tb,
	})
	r.log.Error().Int("deliveries", d.Starts).Int("max_deliveries", s.cfg.MaxDeliveries).
		Str("dead_letter_list", s.tr.DeadLetterList()).
		Msg("poison message: it killed or hung a worker every time it ran; failed it as WorkerLostError instead of running it again")
}
