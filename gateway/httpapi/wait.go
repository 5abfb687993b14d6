package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/protocol"
)

// watchEvery is how often a synchronous wait checks that a live worker can
// still pick its task up; the fleet's alive window is 10 s, so a worker
// that vanished is noticed within about 10-15 s.
const watchEvery = 3 * time.Second

// deadEndError ends a synchronous wait whose task no live worker can pick
// up any more; the task itself stays queued.
type deadEndError struct{ why string }

func (e *deadEndError) Error() string { return e.why }

// wait waits for a task's result up to WaitTimeout. Until some worker has
// taken the task (any state but PENDING), it checks every watchEvery that
// a live worker on d.Queue can still finish it (taken means Watch saw a
// state other than PENDING stored), and stops waiting with a
// *deadEndError when twice in a row none can: the one that was there at
// enqueue time may have gone. A nil meta with nil error means the request
// context ended (client gone).
func (g *Gateway) wait(c echo.Context, res *protocol.AsyncResult, d auth.Decision, need auth.Need) (*protocol.ResultMeta, error) {
	ctx, abort := context.WithCancelCause(c.Request().Context())
	defer abort(nil)
	tctx, cancel := context.WithTimeout(ctx, g.cfg.WaitTimeout)
	defer cancel()
	var taken atomic.Bool
	watched := make(chan struct{})
	go func() { // owner: wait; ends when the wait does or the task is taken
		defer close(watched)
		g.watchDeadEnd(tctx, res, d, need, &taken, abort)
	}()
	meta, err := res.Watch(tctx, func(m *protocol.ResultMeta) {
		if m.Status != protocol.StatePending {
			taken.Store(true)
		}
	})
	cancel()
	<-watched
	var de *deadEndError
	if err != nil && errors.As(context.Cause(ctx), &de) {
		return nil, de
	}
	return meta, err
}

// watchDeadEnd is wait's watchdog; see wait.
func (g *Gateway) watchDeadEnd(ctx context.Context, res *protocol.AsyncResult, d auth.Decision, need auth.Need,
	taken *atomic.Bool, abort context.CancelCauseFunc) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if taken.Load() {
			return // a worker has it; its lease and the visibility timeout cover it from here
		}
		why := g.deadEnd(ctx, d, need, true)
		if why == "" {
			misses = 0
			continue
		}
		if misses++; misses >= 2 {
			g.log.Warn().Str("task_id", res.ID).Str("queue", d.Queue).Str("detail", why).
				Msg("stopped waiting: no live worker can pick the task up any more; it stays queued")
			abort(&deadEndError{why: why})
			return
		}
	}
}

// waitError answers a wait that did not produce a result.
func (g *Gateway) waitError(c echo.Context, id string, err error) error {
	var de *deadEndError
	switch {
	case errors.As(err, &de):
		g.metrics.outcome("no_live_worker")
		return c.JSON(http.StatusServiceUnavailable, map[string]any{
			"detail":     de.why + ". The task stays queued for the worker you start; poll status_url for it",
			"task_id":    id,
			"status_url": "/api/v1/status/" + id,
		})
	case errors.Is(err, context.DeadlineExceeded) && c.Request().Context().Err() == nil:
		g.metrics.outcome("timeout")
		return c.JSON(http.StatusGatewayTimeout, map[string]any{
			"detail":     fmt.Sprintf("task %s did not finish within %s; poll status_url for its result", id, g.cfg.WaitTimeout),
			"task_id":    id,
			"status_url": "/api/v1/status/" + id,
		})
	}
	return detail(c, http.StatusServiceUnavailable, "waiting for task %s failed: %v", id, err)
}

// submit is the route-independent half of a task route: refuse a dead end
// (503), send name(args) on d.Queue, answer 202 when async, else wait for
// the result. A nil meta means the answer is already written and the
// returned error is the handler's; otherwise the caller shapes meta.
func (g *Gateway) submit(c echo.Context, d auth.Decision, need auth.Need, async bool, name string, args []any) (*protocol.ResultMeta, error) {
	if why := g.checkDeadEnd(c, d, need, async); why != "" {
		return nil, g.unreachable(c, d, why)
	}
	res, err := g.send(c, d, name, args)
	if err != nil {
		return nil, enqueueError(c, err)
	}
	if async {
		return nil, g.accepted(c, res.ID, d)
	}
	meta, err := g.wait(c, res, d, need)
	if err != nil {
		return nil, g.waitError(c, res.ID, err)
	}
	return meta, nil
}
