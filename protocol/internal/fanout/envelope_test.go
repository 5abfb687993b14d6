package fanout

import (
	"encoding/base64"
	"regexp"
	"testing"
)

// Envelope writes byte for byte what Marshal writes for the envelope's
// fields in kombu's order, the delivery tag aside (a fresh uuid each).
func TestEnvelopeIsMarshalOfItsFields(t *testing.T) {
	tag := regexp.MustCompile(`"delivery_tag": "[0-9a-f-]{36}"`)
	for _, tc := range []struct {
		body    string
		headers Ordered
		mode    int
		ex, rk  string
	}{
		{`{"type": "task-started"}`, object{{"hostname", "w@h"}}, 1, "celeryev", "task.started"},
		{``, nil, 2, "", ""},
		{`[1, 2.0, "é"]`, object{{"ticket", "t-1"}, {"clock", 7}, {"expires", Float(12.5)}}, 2, "reply.celery.pidbox", `odd "key"\`},
	} {
		got, err := Envelope([]byte(tc.body), tc.headers, tc.mode, tc.ex, tc.rk)
		if err != nil {
			t.Fatal(err)
		}
		headers := tc.headers
		if headers == nil {
			headers = object{}
		}
		want, err := Marshal(object{
			{"body", base64.StdEncoding.EncodeToString([]byte(tc.body))},
			{"content-encoding", "utf-8"},
			{"content-type", "application/json"},
			{"headers", headers},
			{"properties", object{
				{"delivery_mode", tc.mode},
				{"delivery_info", object{{"exchange", tc.ex}, {"routing_key", tc.rk}}},
				{"priority", 0},
				{"body_encoding", "base64"},
				{"delivery_tag", "00000000-0000-0000-0000-000000000000"},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !tag.Match(got) {
			t.Fatalf("no uuid delivery tag in %s", got)
		}
		g := tag.ReplaceAll(got, []byte(`"delivery_tag": "00000000-0000-0000-0000-000000000000"`))
		if string(g) != string(want) {
			t.Errorf("Envelope wrote\n%s\nwant\n%s", g, want)
		}
	}
}
