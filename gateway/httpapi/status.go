package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/contract"
	"morag-gpu/protocol"
)

// TaskStatus is MoRAG's TaskStatus, field order kept.
type TaskStatus struct {
	TaskID                 string  `json:"task_id"`
	Status                 string  `json:"status"`
	Progress               pyFloat `json:"progress"`
	Message                *string `json:"message"`
	Result                 any     `json:"result"`
	Error                  *string `json:"error"`
	CreatedAt              *string `json:"created_at"`
	StartedAt              *string `json:"started_at"`
	CompletedAt            *string `json:"completed_at"`
	EstimatedTimeRemaining *int    `json:"estimated_time_remaining"`
}

// taskStatus maps a result meta the way MoRAG's handler does (§1.7).
func taskStatus(meta *protocol.ResultMeta) TaskStatus {
	st := TaskStatus{TaskID: meta.TaskID, Status: string(meta.Status)}
	if meta.Status == protocol.StateStarted {
		st.Status = string(protocol.StateProgress)
	}
	var info any
	_ = meta.DecodeResult(&info)
	infoMap, _ := info.(map[string]any)
	switch meta.Status {
	case protocol.StateSuccess:
		st.Progress = 1.0
		st.Result = info
	case protocol.StateProgress:
		if p, ok := infoMap["progress"]; ok {
			st.Progress = pyFloat(toFloat(p))
		}
	case protocol.StateFailure:
		msg := "Task failed"
		var te *protocol.TaskError
		if errors.As(meta.Err(), &te) && len(te.ExcMessage) > 0 {
			msg = fmt.Sprint(te.ExcMessage...)
		}
		st.Error = &msg
	}
	// Upstream reads message from info whatever the state, a successful
	// result's own "message" included.
	if infoMap != nil {
		if m, ok := infoMap["message"].(string); ok {
			st.Message = &m
		}
	}
	if meta.DateDone != nil && meta.Status.Ready() {
		st.CompletedAt = meta.DateDone
	}
	return st
}

func toFloat(v any) float64 {
	switch n := v.(type) {
	case interface{ Float64() (float64, error) }:
		f, _ := n.Float64()
		return f
	case float64:
		return n
	case int:
		return float64(n)
	case int64:
		return float64(n)
	}
	return 0
}

// taskNotFound is the one answer for an unknown id, a malformed one and
// another user's task, so that nobody learns which ids exist.
func taskNotFound(c echo.Context) error {
	return detail(c, http.StatusNotFound, "Task not found")
}

// taskStatus is GET /api/v1/status/{task_id}: only the owner's keys see a
// task submitted with a key (see ownership.go).
func (g *Gateway) taskStatus(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("task_id")
	if !validTaskID(id) {
		return taskNotFound(c)
	}
	owner, err := g.owner(ctx, id)
	if err != nil {
		return detail(c, http.StatusServiceUnavailable, "Failed to get task status: %v; check that Redis is reachable", err)
	}
	if owner.issued && !owner.allows(auth.UserFrom(c)) {
		return taskNotFound(c)
	}
	meta, err := g.backend.Get(ctx, id)
	if err != nil {
		return detail(c, http.StatusServiceUnavailable, "Failed to get task status: %v; check that Redis is reachable", err)
	}
	// An id the gateway did not issue is shown only when it has a result
	// (a task sent straight to Celery); otherwise it is unknown.
	if !owner.issued && meta.Status == protocol.StatePending {
		return taskNotFound(c)
	}
	return c.JSON(http.StatusOK, g.publicStatus(meta))
}

// statusActive is GET /api/v1/status/: the running tasks the caller owns;
// an anonymous caller gets only the count of all running tasks.
func (g *Gateway) statusActive(c echo.Context) error {
	ctx := c.Request().Context()
	ids, err := g.fleet.ActiveTaskIDs(ctx)
	if err != nil && len(ids) == 0 {
		return detail(c, http.StatusServiceUnavailable, "Failed to get active tasks: %v", err)
	}
	user := auth.UserFrom(c)
	if user == nil {
		return c.JSON(http.StatusOK, map[string]any{"active_tasks": []string{}, "count": len(ids)})
	}
	own, err := g.ownedBy(ctx, ids, user.UserID)
	if err != nil {
		return detail(c, http.StatusServiceUnavailable, "Failed to get active tasks: %v; check that Redis is reachable", err)
	}
	return c.JSON(http.StatusOK, map[string]any{"active_tasks": own, "count": len(own)})
}

// knownQueues are the queues worth reporting: celery, every queue a live
// worker consumes (the fleet is kept in memory from events) and every queue
// this gateway routed to since it started. Nothing here reads Redis: a
// scrape or status call must not cost O(keyspace), as a SCAN for kombu's
// bindings did.
func (g *Gateway) knownQueues() []string {
	set := map[string]bool{contract.DefaultQueue: true}
	for _, w := range g.fleet.Workers() {
		for _, q := range w.Queues {
			set[q] = true
		}
	}
	for _, q := range g.metrics.routedQueues() {
		set[q] = true
	}
	out := make([]string, 0, len(set))
	for q := range set {
		out = append(out, q)
	}
	sort.Strings(out)
	return out
}

// queueLengths reads every known queue's length over all priority bands.
func (g *Gateway) queueLengths(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	for _, q := range g.knownQueues() {
		n, err := g.broker.QueueLength(ctx, q)
		if err != nil {
			return out, err
		}
		out[q] = n
	}
	return out, nil
}

// statusQueues is GET /api/v1/status/stats/queues: MoRAG's four counters
// meaning what they mean there (pending: tasks the workers hold with an ETA,
// inspect().scheduled(); active: tasks running), plus every queue's length
// (queues) and their sum (queued): what waits for a worker.
func (g *Gateway) statusQueues(c echo.Context) error {
	ctx := c.Request().Context()
	lengths, err := g.queueLengths(ctx)
	if err != nil {
		return detail(c, http.StatusInternalServerError, "Failed to get queue stats: %v", err)
	}
	var queued int64
	for _, n := range lengths {
		queued += n
	}
	workers := g.fleet.Workers()
	active := 0
	hosts := make([]string, 0, len(workers))
	for _, w := range workers {
		active += w.ActiveTasks
		hosts = append(hosts, w.Hostname)
	}
	pending := 0
	if len(hosts) > 0 {
		// Addressed to the live workers, so the call returns as soon as
		// each has answered (at most a second, Celery's inspect timeout).
		replies, err := g.control.Broadcast(ctx, "scheduled", nil, hosts, time.Second)
		if err != nil && len(replies) == 0 && ctx.Err() == nil {
			g.log.Warn().Err(err).Msg("inspect scheduled failed; pending counts 0")
		}
		for _, r := range replies {
			if list, ok := r.([]any); ok {
				pending += len(list)
			}
		}
	}
	return c.JSON(http.StatusOK, map[string]any{
		"pending": pending, "active": active, "completed": 0, "failed": 0, "queued": queued, "queues": lengths,
	})
}

// statusWorkers is GET /api/v1/status/workers in MoRAG's shape, with the
// per-user queues and each worker's implementation.
func (g *Gateway) statusWorkers(c echo.Context) error {
	ctx := c.Request().Context()
	workers := g.fleet.Workers()
	details := map[string]any{}
	gpuWorkers, cpuWorkers := 0, 0
	perQueue := map[string]int{}
	for _, w := range workers {
		typ := "cpu"
		if w.GPU {
			typ = "gpu"
			gpuWorkers++
		} else {
			cpuWorkers++
		}
		for _, q := range w.Queues {
			perQueue[q]++
		}
		details[w.Hostname] = map[string]any{
			"type": typ, "active_tasks": w.ActiveTasks, "max_tasks": w.MaxTasks, "queues": w.Queues,
			"implementation": w.Implementation, "sw_ident": w.SWIdent, "gpu": w.GPU,
			"last_heartbeat": w.LastSeen.UTC().Format(time.RFC3339Nano),
		}
		// What routing goes by: whether gpu=true audio/video may go there.
		can, why := w.CanTranscribe()
		details[w.Hostname].(map[string]any)["transcriber"] = map[string]any{"available": can, "reason": nullable(why)}
	}
	lengths, err := g.queueLengths(ctx)
	if err != nil {
		return detail(c, http.StatusInternalServerError, "Failed to get worker status: %v", err)
	}
	var gpuLen int64
	queues := map[string]any{}
	for q, n := range lengths {
		if contract.IsGPUQueue(q) {
			gpuLen += n
		}
		queues[q] = map[string]any{"length": n, "workers": perQueue[q]}
	}
	// "gpu-tasks" is MoRAG's response field summing every user's GPU
	// queue, not a queue.
	queues["gpu-tasks"] = map[string]any{"length": gpuLen, "workers": gpuWorkers}
	queues[contract.DefaultQueue] = map[string]any{"length": lengths[contract.DefaultQueue], "workers": perQueue[contract.DefaultQueue]}
	return c.JSON(http.StatusOK, map[string]any{
		"workers":       map[string]any{"total": len(workers), "gpu": gpuWorkers, "cpu": cpuWorkers, "details": details},
		"queues":        queues,
		"gpu_available": gpuWorkers > 0,
	})
}

// cancelTask is DELETE /api/v1/ingest/{task_id}: revoke with terminate via
// pidbox and record REVOKED. Only ids this gateway issued can be
// cancelled (each cancel is a broadcast to every worker and a stored
// result), and a task submitted with a key only with a key of its user.
func (g *Gateway) cancelTask(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("task_id")
	if !validTaskID(id) {
		return inputError(c, http.StatusBadRequest, "Invalid task id: at most 128 letters, digits and . _ : -")
	}
	// Fail closed: without the owner we cannot tell whether this caller
	// may cancel the task.
	owner, err := g.owner(ctx, id)
	if err != nil {
		return detail(c, http.StatusServiceUnavailable, "Failed to cancel task: %v; check that Redis is reachable", err)
	}
	if !owner.issued || !owner.allows(auth.UserFrom(c)) {
		return taskNotFound(c)
	}
	if _, err := g.control.Broadcast(ctx, "revoke",
		map[string]any{"task_id": id, "terminate": true, "signal": "SIGTERM"}, nil, 0); err != nil {
		return detail(c, http.StatusInternalServerError, "Failed to cancel task: %v", err)
	}
	// A finished task keeps its result: REVOKED would overwrite it, and
	// revoking cannot undo the work anyway (Celery leaves it too).
	if meta, err := g.backend.Get(ctx, id); err == nil && meta.Status.Ready() {
		g.log.Info().Str("task_id", id).Str("state", string(meta.Status)).Msg("revoke of a finished task: result kept")
		return c.JSON(http.StatusOK, map[string]string{"message": fmt.Sprintf("Task %s cancelled successfully", id)})
	}
	if err := g.backend.Store(ctx, protocol.StoreRequest{TaskID: id, State: protocol.StateRevoked,
		Result: protocol.NewTaskError("TaskRevokedError", "celery.exceptions", "revoked")}); err != nil {
		return detail(c, http.StatusInternalServerError, "Task revoked but its state was not recorded: %v", err)
	}
	g.log.Info().Str("task_id", id).Msg("task revoked")
	return c.JSON(http.StatusOK, map[string]string{"message": fmt.Sprintf("Task %s cancelled successfully", id)})
}
