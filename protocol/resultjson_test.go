package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
)

// resultJSONString's one-allocation path for plain ASCII writes exactly
// what encoding/json (no HTML escaping) writes.
func TestResultJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "SUCCESS", "2026-11-30T12:00:00.123456+00:00", "a<b>&c", "quote\"d", `back\slash`,
		"tab\there", "nl\n", "\x00\x1f\x7f", "ünïcode", "\u2028\u2029", "bad\xffutf8", "celery@host.example"} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if got := resultJSONString(s); !bytes.Equal(got, want) {
			t.Errorf("resultJSONString(%q) = %s, want %s", s, got, want)
		}
	}
}
