package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/protocol"
)

// route decides the queue for this request and records the decision. need
// says what finishing the task takes (it may probe the upload); it is asked
// only when the answer matters, for gpu=true with a key. nil: nothing
// beyond consuming the queue.
func (g *Gateway) route(c echo.Context, gpu bool, need func() auth.Need) (auth.Decision, auth.Need) {
	user := auth.UserFrom(c)
	var n auth.Need
	if gpu && user != nil && need != nil {
		n = need()
	}
	d := auth.Route(c.Request().Context(), user, gpu, n, g.fleet)
	g.metrics.routed(d)
	return d, n
}

// routingMeta is metadata.routing: where the task went and why.
func routingMeta(d auth.Decision) map[string]any {
	m := map[string]any{"queue": d.Queue, "reason": d.Reason}
	if d.Detail != "" {
		m["detail"] = d.Detail
	}
	return m
}

// errTaskTooLarge is a task message over -max-task-bytes (413).
var errTaskTooLarge = errors.New("task message too large")

// errEncode is a task the client's input made unencodable (422).
var errEncode = errors.New("task cannot be encoded")

// send enqueues a task on d.Queue and records its owner in the same Redis
// transaction (see ownership.go), then logs the routing. A message larger
// than -max-task-bytes is refused before it reaches Redis.
func (g *Gateway) send(c echo.Context, d auth.Decision, name string, args []any) (*protocol.AsyncResult, error) {
	ctx := c.Request().Context()
	opts, err := g.sendOptions(c, d.Queue)
	if err != nil {
		return nil, err
	}
	m, err := protocol.NewTaskMessage(name, args, nil, opts, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errEncode, err)
	}
	env, err := protocol.Encode(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errEncode, err)
	}
	if int64(len(env)) > g.cfg.MaxTaskBytes {
		g.log.Warn().Str("task", name).Int("bytes", len(env)).Int64("limit", g.cfg.MaxTaskBytes).Str("user", d.UserID).
			Msg("task message over -max-task-bytes; refused")
		return nil, fmt.Errorf("%w: the task would be %d bytes, over the gateway's limit of %d (-max-task-bytes); send large content as a file upload",
			errTaskTooLarge, len(env), g.cfg.MaxTaskBytes)
	}
	var notReplicated *protocol.ReplicationError
	if err := g.broker.PublishWith(ctx, m.RoutingKey, env, m.Priority, g.ownerCommand(m.ID, d.UserID)); errors.As(err, &notReplicated) {
		g.log.Warn().Err(err).Str("task_id", m.ID).Str("task", name).Str("queue", d.Queue).Str("user", d.UserID).
			Msg("task queued on the master but not confirmed by -redis-min-replicas replicas; a failover now could lose it")
	} else if err != nil {
		g.log.Error().Err(err).Str("task", name).Str("queue", d.Queue).Str("user", d.UserID).Msg("enqueue failed")
		return nil, err
	}
	g.log.Info().Str("task_id", m.ID).Str("task", name).Str("queue", d.Queue).Str("user", d.UserID).
		Str("reason", d.Reason).Dur("time_limit", opts.TimeLimit).Msg("task enqueued")
	return g.client.Result(m.ID), nil
}

// enqueueError answers a failed enqueue: the client's fault (too large,
// unencodable) is a 4xx, anything else is Redis.
func enqueueError(c echo.Context, err error) error {
	var bf *errBadForm
	if errors.As(err, &bf) { // a refused time_limit
		return inputError(c, http.StatusBadRequest, "%s", bf.msg)
	}
	switch {
	case errors.Is(err, errTaskTooLarge):
		return inputError(c, http.StatusRequestEntityTooLarge, "%v", err)
	case errors.Is(err, errEncode):
		return inputError(c, http.StatusUnprocessableEntity, "%v", err)
	}
	return detail(c, http.StatusServiceUnavailable, "Could not enqueue the task: %v; check that Redis is reachable", err)
}

// ProcessingResult is MoRAG's ProcessingResultResponse, field order kept.
type ProcessingResult struct {
	Success        bool           `json:"success"`
	Content        string         `json:"content"`
	Metadata       map[string]any `json:"metadata"`
	ProcessingTime pyFloat        `json:"processing_time"`
	ErrorMessage   *string        `json:"error_message"`
	Thumbnails     []string       `json:"thumbnails"`
}

// Accepted is the 202 answer of an async request.
type Accepted struct {
	TaskID    string `json:"task_id"`
	StatusURL string `json:"status_url"`
	Queue     string `json:"queue"`
	Reason    string `json:"reason"`
}

func (g *Gateway) accepted(c echo.Context, id string, d auth.Decision) error {
	return c.JSON(http.StatusAccepted, Accepted{TaskID: id, StatusURL: "/api/v1/status/" + id, Queue: d.Queue, Reason: d.Reason})
}

// toResult turns a ready meta into MoRAG's response; a failed task is
// success:false with the error.
func (g *Gateway) toResult(meta *protocol.ResultMeta, d auth.Decision) ProcessingResult {
	md := map[string]any{}
	out := ProcessingResult{Metadata: md}
	if err := meta.Err(); err != nil {
		msg := err.Error()
		out.ErrorMessage = &msg
		g.metrics.outcome("failure")
	} else {
		var v any
		if err := meta.DecodeResult(&v); err != nil {
			msg := err.Error()
			out.ErrorMessage = &msg
			g.metrics.outcome("failure")
		} else {
			out = resultFromValue(v)
			md = out.Metadata
			if out.Success {
				g.metrics.outcome("success")
			} else {
				g.metrics.outcome("failure")
			}
		}
	}
	out.ErrorMessage = g.publicMessage(meta.TaskID, out.ErrorMessage)
	md["routing"] = routingMeta(d)
	md["task_id"] = meta.TaskID
	return out
}

// resultFromValue reads the 5-key dict the tasks return and shapes it as
// MoRAG's server shapes a result (normalize_processing_result, then
// ProcessingResultResponse): content always a string (a non-string one as
// json.dumps(..., indent=2)), metadata always an object, processing_time
// always a float; the task's other keys (user_id) are not part of the
// response.
func resultFromValue(v any) ProcessingResult {
	out := ProcessingResult{Metadata: map[string]any{}}
	m, ok := v.(map[string]any)
	if !ok {
		b, _ := json.Marshal(v)
		out.Success, out.Content = true, string(b)
		return out
	}
	out.Success, _ = m["success"].(bool)
	switch ct := m["content"].(type) {
	case string:
		out.Content = ct
	case nil:
	default:
		b, _ := json.MarshalIndent(ct, "", "  ")
		out.Content = string(b)
	}
	if md, ok := m["metadata"].(map[string]any); ok {
		out.Metadata = md
	}
	out.ProcessingTime = pyFloat(toFloat(m["processing_time"]))
	if s, ok := m["error_message"].(string); ok {
		out.ErrorMessage = &s
	}
	if th, ok := m["thumbnails"].([]any); ok {
		for _, t := range th {
			if s, ok := t.(string); ok {
				out.Thumbnails = append(out.Thumbnails, s)
			}
		}
	}
	return out
}
