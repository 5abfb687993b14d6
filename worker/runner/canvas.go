package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol"
)

// continueCanvas sends what follows a successful task, as Celery's trace
// does before storing the result: every link callback and the next chain
// element, each with the return value prepended to its args (unless
// immutable), parent_id = this task and its root_id. It returns the
// children tuples for the stored result, and false when a forced shutdown
// interrupted it.
func (s *Server) continueCanvas(ctx context.Context, r *request, retval any) ([]any, bool) {
	children := []any{}
	for _, sig := range r.msg.Embed.Callbacks {
		id, err := s.sendSignature(ctx, r, sig, []any{retval}, nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil, false
			}
			continue
		}
		children = append(children, childTuple(id))
	}
	if chain := r.msg.Embed.Chain; len(chain) > 0 {
		next, rest := chain[len(chain)-1], chain[:len(chain)-1]
		id, err := s.sendSignature(ctx, r, next, []any{retval}, rest)
		if err != nil && ctx.Err() != nil {
			return nil, false
		}
		if err == nil {
			children = append(children, childTuple(id))
		}
	}
	return children, true
}

// sendErrbacks sends the link_error signatures with the failed task's id
// prepended, as Celery does for new-style errbacks.
func (s *Server) sendErrbacks(ctx context.Context, r *request) bool {
	for _, sig := range r.msg.Embed.Errbacks {
		if _, err := s.sendSignature(ctx, r, sig, []any{r.msg.ID}, nil); err != nil && ctx.Err() != nil {
			return false
		}
	}
	return true
}

// failChain stores the failure for every task of the rest of the chain
// too, as Celery's mark_as_failure does, so that clients waiting on the
// chain's last result do not wait forever.
func (s *Server) failChain(ctx context.Context, r *request, te *protocol.TaskError, tb string) bool {
	for _, sig := range r.msg.Embed.Chain {
		id := optString(sig.Options, "task_id")
		if id == "" {
			continue
		}
		err := s.store(ctx, r, "store FAILURE for a chained task", protocol.StoreRequest{
			TaskID: id, State: protocol.StateFailure, Result: te, Traceback: tb,
		})
		if err != nil || !s.chainElementChordPart(ctx, r, sig, protocol.StateFailure, te) {
			return false
		}
	}
	return true
}

// sendSignature publishes one canvas signature as a task message.
func (s *Server) sendSignature(ctx context.Context, r *request, sig protocol.Signature, prepend []any, chain []protocol.Signature) (string, error) {
	m, err := s.signatureMessage(r.msg, sig, prepend, chain, s.cfg.Clock.Now())
	if err != nil {
		r.log.Error().Err(err).Str("next_task", sig.Task).Msg("canvas continuation not sent")
		return "", err
	}
	return s.publishMessage(ctx, r.log, m)
}

// publishMessage sends a canvas continuation, retrying through outages.
func (s *Server) publishMessage(ctx context.Context, log zerolog.Logger, m *protocol.Message) (string, error) {
	log = log.With().Str("next_task", m.Task).Logger()
	envelope, err := protocol.Encode(m)
	if err != nil {
		log.Error().Err(err).Msg("canvas continuation cannot be encoded; not sent")
		return "", err
	}
	err = persist(ctx, log, "send canvas continuation", func(ctx context.Context) error {
		return s.tr.Publish(ctx, m.RoutingKey, envelope, m.Priority)
	})
	if err != nil {
		return "", err
	}
	log.Info().Str("next_task_id", m.ID).Str("to_queue", m.RoutingKey).Msg("canvas continuation sent")
	return m.ID, nil
}

// signatureMessage builds the message Signature.apply_async would send.
func (s *Server) signatureMessage(parent *protocol.Message, sig protocol.Signature, prepend []any, chain []protocol.Signature, now time.Time) (*protocol.Message, error) {
	if sig.SubtaskType != nil && *sig.SubtaskType != "" {
		return nil, fmt.Errorf("canvas element of type %q (task %q) is not supported by the Go worker", *sig.SubtaskType, sig.Task)
	}
	if sig.Task == "" {
		return nil, fmt.Errorf("canvas signature without a task name")
	}
	o := sig.Options
	args := append([]any{}, sig.Args...)
	if !sig.Immutable && len(prepend) > 0 {
		args = append(append([]any{}, prepend...), sig.Args...)
	}
	kwargs := sig.Kwargs
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	root := parent.RootID
	if root == "" {
		root = parent.ID
	}
	queue := optQueue(o)
	if queue == "" {
		queue = s.cfg.Route(sig.Task)
	}
	m := &protocol.Message{
		ID:           optString(o, "task_id"),
		Task:         sig.Task,
		Shadow:       optString(o, "shadow"),
		Group:        optString(o, "group_id"),
		RootID:       root,
		ParentID:     parent.ID,
		IgnoreResult: optBool(o, "ignore_result"),
		Args:         args,
		Kwargs:       kwargs,
		Exchange:     "",
		RoutingKey:   queue,
	}
	if m.ID == "" {
		m.ID = protocol.NewID()
	}
	if p, ok := optFloat(o, "priority"); ok {
		m.Priority = int(p)
	}
	if gi, ok := optFloat(o, "group_index"); ok {
		i := int(gi)
		m.GroupIndex = &i
	}
	if cd, ok := optFloat(o, "countdown"); ok && cd > 0 {
		eta := now.Add(seconds(cd))
		m.ETA = &eta
	}
	if v := optString(o, "eta"); v != "" {
		if t, err := pyfmt.FromISOFormat(v); err == nil {
			m.ETA = &t
		}
	}
	if secs, ok := optFloat(o, "expires"); ok {
		exp := now.Add(seconds(secs))
		m.Expires = &exp
	} else if v := optString(o, "expires"); v != "" {
		if t, err := pyfmt.FromISOFormat(v); err == nil {
			m.Expires = &t
		}
	}
	if v, ok := optFloat(o, "time_limit"); ok {
		m.TimeLimit.Hard = seconds(v)
	}
	if v, ok := optFloat(o, "soft_time_limit"); ok {
		m.TimeLimit.Soft = seconds(v)
	}
	if h, ok := o["headers"].(map[string]any); ok {
		m.Headers = h
	}
	if chain == nil {
		// Signature.apply_async passes its own options' chain when the
		// caller names none (callbacks, chord bodies).
		chain = optSignatures(o["chain"])
	}
	m.Embed.Chain = chain
	if c := optSignatures(o["chord"]); len(c) == 1 {
		m.Embed.Chord = &c[0]
	}
	m.Embed.Callbacks = optSignatures(o["link"])
	m.Embed.Errbacks = optSignatures(o["link_error"])
	return m, nil
}

func childTuple(id string) []any { return []any{[]any{id, nil}, nil} }

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

func optString(o map[string]any, key string) string {
	s, _ := o[key].(string)
	return s
}

func optBool(o map[string]any, key string) bool {
	b, _ := o[key].(bool)
	return b
}

// optFloat reads a number option (json.Number or float64).
func optFloat(o map[string]any, key string) (float64, bool) {
	switch v := o[key].(type) {
	case json.Number:
		f, err := v.Float64()
		return f, err == nil && !math.IsNaN(f)
	case float64:
		return v, true
	case int:
		return float64(v), true
	case string:
		f, err := strconv.ParseFloat(v, 64)
		return f, err == nil && !math.IsNaN(f)
	}
	return 0, false
}

// optQueue reads options["queue"]: a queue name, or kombu's Queue.as_dict.
func optQueue(o map[string]any) string {
	switch q := o["queue"].(type) {
	case string:
		return q
	case map[string]any:
		name, _ := q["name"].(string)
		return name
	}
	return ""
}

// optSignatures reads a link/link_error option: one signature or a list.
func optSignatures(v any) []protocol.Signature {
	if v == nil {
		return nil
	}
	if _, one := v.(map[string]any); one {
		v = []any{v}
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var sigs []protocol.Signature
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if dec.Decode(&sigs) != nil {
		return nil
	}
	return sigs
}
