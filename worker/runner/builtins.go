package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"

	"morag-gpu/protocol"
)

// Celery's built-in canvas tasks (celery/app/builtins.py). The worker runs
// celery.map, celery.starmap and celery.chunks when it has the inner
// task's handler, and forwards them (as any unknown task) otherwise;
// celery.accumulate needs no inner task.
const (
	builtinMap        = "celery.map"
	builtinStarmap    = "celery.starmap"
	builtinChunks     = "celery.chunks"
	builtinAccumulate = "celery.accumulate"
)

// handlerFor is the handler for a message: the registered one, else a
// built-in canvas task this worker can run, else nil (forwarded or
// NotRegistered).
func (s *Server) handlerFor(msg *protocol.Message) Handler {
	if h := s.mux.Handler(msg.Task); h != nil {
		return h
	}
	switch msg.Task {
	case builtinAccumulate:
		return HandlerFunc(accumulate)
	case builtinMap, builtinStarmap, builtinChunks:
		inner, _ := builtinInner(msg.Kwargs)
		if inner.Task == "" || s.mux.Handler(inner.Task) == nil {
			return nil
		}
		if msg.Task == builtinChunks {
			return HandlerFunc(s.chunks)
		}
		return HandlerFunc(s.mapTask)
	}
	return nil
}

// builtinInner reads the "task" signature and "it" list of a map,
// starmap or chunks message (positional args work too, as in Python).
func builtinInner(kwargs map[string]any, args ...any) (protocol.Signature, []any) {
	get := func(i int, name string) any {
		if v, ok := kwargs[name]; ok {
			return v
		}
		if i < len(args) {
			return args[i]
		}
		return nil
	}
	var sig protocol.Signature
	switch v := get(0, "task").(type) {
	case map[string]any:
		if sigs := optSignatures(v); len(sigs) == 1 {
			sig = sigs[0]
		}
	case string:
		sig.Task = v
	}
	it, _ := get(1, "it").([]any)
	return sig, it
}

// accumulate is celery.accumulate(*args, index=None): args[index], or
// all args.
func accumulate(_ context.Context, t *Task) (any, error) {
	idx, ok := optFloat(t.Kwargs, "index")
	if !ok {
		return t.Args, nil
	}
	i := int(idx)
	if i < 0 {
		i += len(t.Args)
	}
	if i < 0 || i >= len(t.Args) {
		return nil, &protocol.TaskError{ExcType: "IndexError", ExcModule: modBuiltins, ExcMessage: []any{"tuple index out of range"}}
	}
	return t.Args[i], nil
}

// mapTask is celery.map ([task(item) for item in it]) and celery.starmap
// ([task(*item) for item in it]): the inner handler runs in this task, in
// order, and the first failure fails the whole task, as in Python.
func (s *Server) mapTask(ctx context.Context, t *Task) (any, error) {
	inner, it := builtinInner(t.Kwargs, t.Args...)
	if inner.Task == "" {
		return nil, MissingArguments("x"+t.Name[len("celery."):], "task", "it")
	}
	h := s.mux.Handler(inner.Task)
	if h == nil {
		return nil, fmt.Errorf("%s: task %s is not registered on this worker", t.Name, inner.Task)
	}
	out := make([]any, 0, len(it))
	for _, item := range it {
		args := []any{item}
		if t.Name == builtinStarmap {
			list, ok := item.([]any)
			if !ok {
				return nil, TypeError("%s() argument after * must be an iterable, not %s", inner.Task, pyTypeName(item))
			}
			args = list
		}
		sub := *t
		sub.Name, sub.Args, sub.Kwargs = inner.Task, args, map[string]any{}
		v, err := h.ServeTask(ctx, &sub)
		if err != nil {
			return nil, calledDirectly(err)
		}
		out = append(out, v)
	}
	return out, nil
}

// calledDirectly is what a task's own Retry or Forward means when it is
// called in-process, as map calls it: Python's retry re-raises exc when
// the task was called directly.
func calledDirectly(err error) error {
	var re *RetryError
	if errors.As(err, &re) {
		if re.Cause != nil {
			return re.Cause
		}
		return &protocol.TaskError{ExcType: "Retry", ExcModule: modCelery, ExcMessage: []any{"Task can be retried", nil}}
	}
	var fe *ForwardError
	if errors.As(err, &fe) {
		return fmt.Errorf("cannot forward a task called inside celery.map: %w", fe)
	}
	return err
}

// chunks is celery.chunks(task, it, n): the items are split into groups of
// n and sent as a group of celery.starmap tasks routed like the inner
// task; the result is the GroupResult's tuple, as Python stores it.
func (s *Server) chunks(ctx context.Context, t *Task) (any, error) {
	inner, it := builtinInner(t.Kwargs, t.Args...)
	nv, ok := t.Kwargs["n"]
	if !ok && len(t.Args) > 2 {
		nv, ok = t.Args[2], true
	}
	if !ok {
		return nil, MissingArguments("chunks", "n")
	}
	n, okN := optFloat(map[string]any{"n": nv}, "n")
	if !okN || n < 1 {
		return nil, TypeError("chunks: n must be a positive integer, got %v", nv)
	}
	taskSig := map[string]any{"task": inner.Task, "args": inner.Args, "kwargs": inner.Kwargs,
		"options": inner.Options, "subtask_type": nil, "immutable": inner.Immutable}
	gid := protocol.NewID()
	root := t.ID
	if t.Message != nil && t.Message.RootID != "" {
		root = t.Message.RootID
	}
	var results []any
	for i, start := 0, 0; start < len(it); i, start = i+1, start+int(n) {
		part := it[start:min(start+int(n), len(it))]
		idx := i
		m := &protocol.Message{
			ID: protocol.NewID(), Task: builtinStarmap, Group: gid, GroupIndex: &idx,
			RootID: root, ParentID: t.ID,
			Args:       []any{},
			Kwargs:     map[string]any{"task": taskSig, "it": part},
			RoutingKey: s.cfg.Route(inner.Task),
		}
		if _, err := s.publishMessage(ctx, *zerolog.Ctx(ctx), m); err != nil {
			return nil, err
		}
		results = append(results, childTuple(m.ID))
	}
	if results == nil {
		results = []any{}
	}
	return []any{[]any{gid, nil}, results}, nil
}

// pyTypeName is type(v).__name__ for a JSON value.
func pyTypeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "NoneType"
	case bool:
		return "bool"
	case string:
		return "str"
	case map[string]any:
		return "dict"
	case []any:
		return "list"
	case float64:
		return "float"
	case json.Number:
		if strings.ContainsAny(x.String(), ".eE") {
			return "float"
		}
	}
	return "int"
}
