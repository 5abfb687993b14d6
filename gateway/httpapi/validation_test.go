package httpapi

import (
	"encoding/json"
	"testing"
)

// The expectations below follow Python 3.11 (float repr) and pydantic 2's
// lax-mode conversion table (bool, int, str from JSON and form values).

func TestPyFloatReprMatchesPython(t *testing.T) {
	for f, want := range map[float64]string{
		0: "0.0", 1: "1.0", 0.5: "0.5", -2: "-2.0", 1e6: "1000000.0", 1e15: "1000000000000000.0",
		1e16: "1e+16", 1.5e-7: "1.5e-07", 1e-5: "1e-05", 0.0001: "0.0001", 123.456: "123.456", 1.234e20: "1.234e+20",
	} {
		if got := pyFloatRepr(f); got != want {
			t.Errorf("repr(%v) = %s, want %s", f, got, want)
		}
	}
	b, _ := json.Marshal(struct {
		P pyFloat `json:"p"`
	}{1})
	if string(b) != `{"p":1.0}` {
		t.Errorf("pyFloat in JSON: %s", b)
	}
}

func TestPydanticLaxCoercion(t *testing.T) {
	var v validator
	for in, want := range map[any]bool{
		"true": true, "True": true, "yes": true, "on": true, "1": true, "t": true, "Y": true,
		"false": false, "OFF": false, "no": false, "0": false, "f": false, "n": false,
		json.Number("1"): true, json.Number("0"): false, true: true,
	} {
		if got, ok := v.boolean([]any{"body", "gpu"}, in); !ok || got != want {
			t.Errorf("bool(%#v) = %v, %v", in, got, ok)
		}
	}
	for _, in := range []any{"maybe", "", " true", json.Number("2"), []any{}} {
		if _, ok := v.boolean([]any{"body", "gpu"}, in); ok {
			t.Errorf("bool(%#v) accepted", in)
		}
	}
	for in, want := range map[any]int64{
		"5": 5, " 42 ": 42, "-3": -3, "1_000": 1000, "7.0": 7, json.Number("9"): 9, json.Number("3.0"): 3, true: 1,
	} {
		if got, ok := v.integer([]any{"body", "limit"}, in); !ok || got != want {
			t.Errorf("int(%#v) = %v, %v", in, got, ok)
		}
	}
	for _, in := range []any{"many", "1.5", "", json.Number("2.5"), nil, map[string]any{}} {
		if _, ok := v.integer([]any{"body", "limit"}, in); ok {
			t.Errorf("int(%#v) accepted", in)
		}
	}
	if _, ok := v.str([]any{"body", "url"}, json.Number("5")); ok {
		t.Error("str(5) accepted: pydantic 2 does not coerce numbers to str")
	}
}

func TestContentTypesAsUpstream(t *testing.T) {
	for in, want := range map[string]any{
		"": nil, "video": "video", " Audio ": "audio", "application/pdf": "document", "video/mp4": "video",
		"audio/x-m4a": "audio", "image/svg+xml": "image", "application/octet-stream": "document", "text/html": "document",
	} {
		if got := normalizeContentType(in); got != want {
			t.Errorf("normalize(%q) = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"https://www.youtube.com/watch?v=1": "youtube", "http://youtu.be/x": "youtube", "https://example.com/a.mp4": "web",
		"/data/a.MP3": "audio", "/data/b.webm": "video", "/x/page.htm": "web", "/x/.bashrc": "document", "/x/noext": "document",
		"/up/0f_talk.mkv": "video", "/up/pic.JPEG": "image",
	} {
		if got := detectFromURL(in); got != want {
			t.Errorf("detect(%q) = %s, want %s", in, got, want)
		}
	}
}
