package protocol

import (
	"encoding/json"
	"testing"
)

// TestMarshalSignature: a canvas signature is written as Celery's Signature
// dict, nil args, kwargs and options as empty ones (the Signature case of
// kombujson's TestMarshalJSON, which knows no signatures).
func TestMarshalSignature(t *testing.T) {
	want := `{"task":"t","args":[],"kwargs":{},"options":{},"subtask_type":null,"immutable":false}`
	got, err := marshalJSON(Signature{Task: "t"})
	if err != nil || string(got) != want {
		t.Errorf("marshalJSON(%#v) = %s, %v; want %s", Signature{Task: "t"}, got, err, want)
	}
	if err == nil && !json.Valid(got) {
		t.Errorf("invalid JSON: %s", got)
	}
}
