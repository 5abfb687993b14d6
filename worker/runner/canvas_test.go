package runner

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"morag-gpu/protocol"
)

func TestSignatureMessage(t *testing.T) {
	s := &Server{cfg: Config{Route: func(name string) string { return "routed-" + name }}}
	parent := &protocol.Message{ID: "P", RootID: "R"}
	now := time.Unix(1700000000, 0)
	sig := protocol.Signature{
		Task: "next", Args: []any{json.Number("4")}, Kwargs: map[string]any{"k": "v"},
		Options: map[string]any{"task_id": "C", "countdown": json.Number("2"), "priority": json.Number("5"),
			"link": map[string]any{"task": "cb", "args": []any{}, "kwargs": map[string]any{}, "options": map[string]any{}, "subtask_type": nil, "immutable": false}},
	}
	chain := []protocol.Signature{{Task: "later"}}
	m, err := s.signatureMessage(parent, sig, []any{"ret"}, chain, now)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "C" || m.ParentID != "P" || m.RootID != "R" || m.RoutingKey != "routed-next" || m.Priority != 5 {
		t.Errorf("message = %+v", m)
	}
	if !reflect.DeepEqual(m.Args, []any{"ret", json.Number("4")}) {
		t.Errorf("args = %v; the parent's return value must be prepended", m.Args)
	}
	if m.ETA == nil || !m.ETA.Equal(now.Add(2*time.Second)) {
		t.Errorf("ETA = %v", m.ETA)
	}
	if len(m.Embed.Chain) != 1 || len(m.Embed.Callbacks) != 1 || m.Embed.Callbacks[0].Task != "cb" {
		t.Errorf("embed = %+v", m.Embed)
	}

	sig.Immutable = true
	sig.Options = map[string]any{"task_id": "C", "queue": "explicit"}
	m, _ = s.signatureMessage(&protocol.Message{ID: "P"}, sig, []any{"ret"}, nil, now)
	if !reflect.DeepEqual(m.Args, []any{json.Number("4")}) || m.RoutingKey != "explicit" || m.RootID != "P" {
		t.Errorf("immutable signature: args %v queue %s root %s", m.Args, m.RoutingKey, m.RootID)
	}

	group := "group"
	if _, err := s.signatureMessage(parent, protocol.Signature{Task: "g", SubtaskType: &group}, nil, nil, now); err == nil {
		t.Error("group signatures are not supported and must be refused")
	}
}
