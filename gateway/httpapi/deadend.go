package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/contract"
)

// warningHeader carries, on an asynchronous answer, why the task may wait
// until a worker starts; MoRAG's response bodies stay as they are.
const warningHeader = "X-Morag-Warning"

// deadEndTimeout bounds the liveness check: usually cached, at worst one
// confirming active_queues broadcast (a second).
const deadEndTimeout = 5 * time.Second

// checkDeadEnd looks for a live worker that can finish the task. For a
// synchronous request it returns why there is none (confirmed with fresh
// active_queues replies), and the caller answers 503; for an asynchronous
// one it puts the reason in the X-Morag-Warning header, answers from what
// the directory knows (no broadcast on the hot path), and returns "": the
// task is queued all the same, to wait for a worker.
func (g *Gateway) checkDeadEnd(c echo.Context, d auth.Decision, need auth.Need, async bool) string {
	why := g.deadEnd(c.Request().Context(), d, need, !async)
	if why == "" || !async {
		return why
	}
	c.Response().Header().Set(warningHeader, why)
	// Debug, not Warn: under load with no worker this would be a line per
	// request; the client has the header, the operator the 503s and metrics.
	g.log.Debug().Str("queue", d.Queue).Str("user", d.UserID).Str("detail", why).Msg("queueing a task no live worker can finish yet")
	return ""
}

// deadEnd returns why no live worker on d.Queue can finish a task with
// need, naming what to start, or "" when one can. With confirm, an empty
// answer is checked against fresh active_queues replies first. When
// liveness cannot be determined it does not object.
func (g *Gateway) deadEnd(ctx context.Context, d auth.Decision, need auth.Need, confirm bool) string {
	ctx, cancel := context.WithTimeout(ctx, deadEndTimeout)
	defer cancel()
	list, err := g.fleet.Consumers(ctx, d.Queue, confirm)
	if err != nil && len(list) == 0 {
		g.log.Warn().Err(err).Str("queue", d.Queue).Msg("cannot tell whether a live worker consumes the queue; enqueueing anyway")
		return ""
	}
	var missing string
	if len(list) == 0 {
		missing = fmt.Sprintf("no live worker consumes queue %q", d.Queue)
	} else if need.Transcript {
		var why []string
		for _, w := range list {
			ok, reason := w.CanTranscribe()
			if ok {
				return ""
			}
			why = append(why, w.Hostname+": "+reason)
		}
		missing = fmt.Sprintf("the %s needs a transcript and no live worker on queue %q can make one (%s)",
			needWhat(need), d.Queue, strings.Join(why, "; "))
	} else {
		return ""
	}
	msg := "No live worker can finish this task: "
	if d.Detail != "" && d.Queue == contract.DefaultQueue {
		msg += d.Detail + ", and " // why the GPU queue was passed over
	}
	msg += missing + ". Start "
	if need.Transcript {
		msg += "a worker with whisper (make worker-whisper)"
		if d.UserID != "" && auth.ValidateUserID(d.UserID) == nil {
			msg += " on " + contract.GPUQueue(d.UserID) + ","
		}
		msg += " or "
	}
	return msg + fmt.Sprintf("a Python MoRAG worker on %q (celery -A morag.worker worker --queues=%s), or send the request with async=true to queue it until one runs", d.Queue, d.Queue)
}

func needWhat(n auth.Need) string {
	if n.What == "" {
		return "content"
	}
	return n.What
}

// unreachable answers a synchronous request that no live worker could
// finish: 503 at once rather than a wait of up to -wait-timeout.
func (g *Gateway) unreachable(c echo.Context, d auth.Decision, why string) error {
	routingHeaders(c, d)
	g.metrics.outcome("no_live_worker")
	g.log.Warn().Str("queue", d.Queue).Str("user", d.UserID).Str("reason", d.Reason).Str("detail", why).
		Msg("refused a synchronous request: no live worker can finish it")
	return detail(c, http.StatusServiceUnavailable, "%s", why)
}
