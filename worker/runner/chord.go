package runner

import (
	"context"
	"fmt"
	"time"

	"morag-gpu/protocol"
)

// isChordPart reports whether the task is a chord header part: Python's
// mark_as_done/mark_as_failure/mark_as_revoked call on_chord_part_return
// exactly when request.chord is set.
func isChordPart(r *request) bool {
	return r.msg.Embed.Chord != nil && r.msg.Group != ""
}

// chordPartReturn is RedisBackend.on_chord_part_return for a part that
// ended in state with result (the value, or a *protocol.TaskError). The
// part that completes the chord applies the body with the parts' results
// in group order, or, when a part failed, stores ChordError on the body
// and sends its errbacks; then it deletes the chord's keys. It runs
// before the part's message is acked, so a worker killed halfway leaves
// the message to be redelivered, and the rerun (the same .j member)
// completes the chord again. It reports false when a forced shutdown
// stopped it.
func (s *Server) chordPartReturn(ctx context.Context, r *request, state protocol.State, result any) bool {
	if !isChordPart(r) {
		return true
	}
	return s.joinChordPart(ctx, r, protocol.ChordPart{
		GroupID: r.msg.Group, TaskID: r.msg.ID, GroupIndex: r.msg.GroupIndex, State: state, Result: result,
	}, *r.msg.Embed.Chord)
}

// joinChordPart records one part of the chord whose body is body and, for
// the completing part, applies or fails the body.
func (s *Server) joinChordPart(ctx context.Context, r *request, part protocol.ChordPart, body protocol.Signature) bool {
	gid := part.GroupID
	log := r.log.With().Str("group_id", gid).Str("chord_part", part.TaskID).Logger()
	var join *protocol.ChordJoin
	err := persist(ctx, log, "record the chord part", func(ctx context.Context) error {
		var err error
		join, err = s.tr.ChordPartReturn(ctx, part)
		return err
	})
	if err != nil {
		return false
	}
	if !join.Complete {
		log.Debug().Int("ready", join.Ready).Int("total", join.Total).Msg("chord part recorded")
		return true
	}
	bodyID := optString(body.Options, "task_id")
	log = log.With().Str("chord_body", body.Task).Str("chord_body_id", bodyID).Logger()

	if saved, err := s.tr.SavedGroupResult(ctx, gid); err == nil && saved {
		// Python joins a saved (nested) GroupResult instead of the
		// flat parts; this worker does not, so say so on the body rather
		// than hand it a differently shaped result.
		if !s.chordError(ctx, r, gid, body, "Join error: "+excRepr(protocol.NewTaskError("NotImplementedError", modBuiltins,
			"the Go worker cannot join a chord whose header contains groups"))) {
			return false
		}
	} else if results, te := chordResults(join.Parts); te != nil {
		log.Warn().Str("exception", excRepr(te)).Msg("chord header part failed; failing the chord body with ChordError")
		if !s.chordError(ctx, r, gid, body, te.ExcMessage[0].(string)) {
			return false
		}
	} else {
		msgs, err := s.chordBodyMessages(r.msg, body, results, s.cfg.Clock.Now())
		for _, m := range msgs {
			if err != nil {
				break
			}
			_, err = s.publishMessage(ctx, log, m)
			if err != nil && ctx.Err() != nil {
				return false
			}
		}
		if err != nil {
			if !s.chordError(ctx, r, gid, body, "Callback error: "+excRepr(protocol.NewTaskError("RuntimeError", modBuiltins, err.Error()))) {
				return false
			}
		} else {
			log.Info().Int("parts", len(results)).Msg("chord complete: body sent")
		}
	}
	return persist(ctx, log, "delete the joined chord's keys", func(ctx context.Context) error {
		return s.tr.ChordCleanup(ctx, gid)
	}) == nil
}

// chordResults is _unpack_chord_result over the joined parts: the
// results in order, or the ChordError for the first part that failed
// ("Dependency <id> raised <repr>").
func chordResults(parts []protocol.ChordPartResult) ([]any, *protocol.TaskError) {
	out := make([]any, 0, len(parts))
	for _, p := range parts {
		if exc := p.Err(); exc != nil {
			return nil, protocol.NewTaskError("ChordError", modCelery,
				fmt.Sprintf("Dependency %s raised %s", p.TaskID, excRepr(exc)))
		}
		out = append(out, decodeGeneric(p.Result))
	}
	return out, nil
}

// chordBodyMessages is callback.delay(results): the body signature with
// the results list prepended, its own options (task id, root and parent
// ids when frozen with them) winning over the completing part's. A group
// body is one message per task, each with the results, in the group the
// body was frozen as.
func (s *Server) chordBodyMessages(part *protocol.Message, body protocol.Signature, results []any, now time.Time) ([]*protocol.Message, error) {
	if body.SubtaskType == nil || *body.SubtaskType != "group" {
		m, err := s.chordBodyMessage(part, body, body, results, now)
		if err != nil {
			return nil, err
		}
		return []*protocol.Message{m}, nil
	}
	tasks := optSignatures(body.Kwargs["tasks"])
	if len(tasks) == 0 {
		return nil, fmt.Errorf("chord body is a group without tasks")
	}
	gid := optString(body.Options, "task_id")
	if gid == "" {
		gid = protocol.NewID()
	}
	out := make([]*protocol.Message, 0, len(tasks))
	for i, t := range tasks {
		m, err := s.chordBodyMessage(part, body, t, results, now)
		if err != nil {
			return nil, err
		}
		idx := i
		m.Group, m.GroupIndex = gid, &idx
		out = append(out, m)
	}
	return out, nil
}

// chordBodyMessage builds the message for one body task sig (body itself,
// or one task of a group body).
func (s *Server) chordBodyMessage(part *protocol.Message, body, sig protocol.Signature, results []any, now time.Time) (*protocol.Message, error) {
	first, chain, err := flattenChain(sig)
	if err != nil {
		return nil, err
	}
	m, err := s.signatureMessage(part, first, []any{results}, chain, now)
	if err != nil {
		return nil, err
	}
	for _, o := range []map[string]any{body.Options, first.Options} {
		if v := optString(o, "root_id"); v != "" {
			m.RootID = v
		}
		if v := optString(o, "parent_id"); v != "" {
			m.ParentID = v
		}
	}
	return m, nil
}

// flattenChain turns a chain body (chord(header, a | b)) into its first
// task and the reversed rest, as chain.apply_async sends it; a plain
// signature is returned as is.
func flattenChain(sig protocol.Signature) (protocol.Signature, []protocol.Signature, error) {
	if sig.SubtaskType == nil || *sig.SubtaskType != "chain" {
		return sig, nil, nil
	}
	tasks := optSignatures(sig.Kwargs["tasks"])
	if len(tasks) == 0 {
		return sig, nil, fmt.Errorf("chord body is a chain without tasks")
	}
	for _, t := range tasks {
		if t.SubtaskType != nil && *t.SubtaskType != "" {
			return sig, nil, fmt.Errorf("chord body chain contains a %q; the Go worker applies only chains of plain tasks", *t.SubtaskType)
		}
	}
	rest := make([]protocol.Signature, 0, len(tasks)-1)
	for i := len(tasks) - 1; i >= 1; i-- {
		rest = append(rest, tasks[i])
	}
	return tasks[0], rest, nil
}

// chordError is chord_error_from_stack: the body's link_error signatures
// are sent as Python's old-style errbacks (one group, the body's id
// prepended), then ChordError(reason) is stored as the body's FAILURE.
func (s *Server) chordError(ctx context.Context, r *request, gid string, body protocol.Signature, reason string) bool {
	bodyID := optString(body.Options, "task_id")
	te := protocol.NewTaskError("ChordError", modCelery, reason)
	if errbacks := optSignatures(body.Options["link_error"]); len(errbacks) > 0 && bodyID != "" {
		fake := &protocol.Message{ID: bodyID, RootID: bodyID}
		gid := protocol.NewID()
		for i, eb := range errbacks {
			m, err := s.signatureMessage(fake, eb, []any{bodyID}, nil, s.cfg.Clock.Now())
			if err != nil {
				r.log.Error().Err(err).Str("errback", eb.Task).Msg("chord errback not sent")
				continue
			}
			m.Group = gid
			idx := i
			m.GroupIndex = &idx
			if _, err := s.publishMessage(ctx, r.log, m); err != nil && ctx.Err() != nil {
				return false
			}
		}
	}
	if bodyID == "" {
		r.log.Error().Str("exception", excRepr(te)).Msg("chord failed, and its body has no task id to store the ChordError on")
		return true
	}
	tb := traceback(te, "  chord "+gid+" joined by "+s.cfg.Hostname+" (Go worker)\n")
	return s.store(ctx, r, "store the chord body's ChordError", protocol.StoreRequest{
		TaskID: bodyID, State: protocol.StateFailure, Result: te, Traceback: tb,
	}) == nil
}

// chainElementChordPart is mark_as_failure's care for a failed chain
// whose later element is a chord header part (chord([a | b, c], body)):
// that element will never run, so its failure is recorded in the chord
// in its place, or the chord would wait forever.
func (s *Server) chainElementChordPart(ctx context.Context, r *request, sig protocol.Signature, state protocol.State, te *protocol.TaskError) bool {
	bodies := optSignatures(sig.Options["chord"])
	id, gid := optString(sig.Options, "task_id"), optString(sig.Options, "group_id")
	if len(bodies) != 1 || id == "" || gid == "" {
		return true
	}
	part := protocol.ChordPart{GroupID: gid, TaskID: id, State: state, Result: te}
	if gi, ok := optFloat(sig.Options, "group_index"); ok {
		i := int(gi)
		part.GroupIndex = &i
	}
	return s.joinChordPart(ctx, r, part, bodies[0])
}
