package fleet

import (
	"strings"
	"testing"
)

// TestCanTranscribe: Python workers finish what they register; a Go worker
// transcribes only when its stats say it has a transcriber.
func TestCanTranscribe(t *testing.T) {
	rows := []struct {
		name  string
		w     Worker
		ok    bool
		why   string
		stats map[string]any
	}{
		{"python", Worker{Implementation: "python"}, true, "", nil},
		{"go, stats unknown", Worker{Implementation: "go"}, false, "not known", nil},
		{"go, no whisper", Worker{Implementation: "go"}, false, "no transcriber: built without whisper tag",
			map[string]any{"transcriber": map[string]any{"available": false, "reason": "built without whisper tag"}}},
		{"go, whisper", Worker{Implementation: "go"}, true, "",
			map[string]any{"transcriber": map[string]any{"available": true, "model": "m.bin"}, "gpu": map[string]any{"nvdec": true}}},
		{"go, no media tasks", Worker{Implementation: "go"}, false, "reports no transcriber", map[string]any{}},
	}
	for _, r := range rows {
		if r.stats != nil {
			r.w.Capabilities = parseCapabilities(r.stats)
		}
		ok, why := r.w.CanTranscribe()
		if ok != r.ok || !strings.Contains(why, r.why) {
			t.Errorf("%s: CanTranscribe = %v %q, want %v %q", r.name, ok, why, r.ok, r.why)
		}
	}
	if c := parseCapabilities(map[string]any{"transcriber": map[string]any{"available": true, "model": "m.bin"}, "gpu": map[string]any{"nvdec": true}}); c.Transcriber.Model != "m.bin" || c.GPU["nvdec"] != true {
		t.Errorf("capabilities %+v", c)
	}
}
