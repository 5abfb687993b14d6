package runner

import (
	"encoding/json"
	"strings"
	"testing"

	"morag-gpu/protocol"
)

func TestPyRepr(t *testing.T) {
	cases := []struct {
		v    any
		want string
	}{
		{nil, "None"},
		{true, "True"},
		{"it's", `"it's"`},
		{"a'b\"c", `'a\'b"c'`},
		{"line\n\x01é", `'line\n\x01é'`},
		{json.Number("4"), "4"},
		{2.0, "2.0"},
		{[]any{json.Number("1"), "x"}, "[1, 'x']"},
		{map[string]any{"b": nil, "a": []any{}}, "{'a': [], 'b': None}"},
		{struct {
			X int `json:"x"`
		}{3}, "{'x': 3}"},
	}
	for _, c := range cases {
		if got := pyRepr(c.v, 0); got != c.want {
			t.Errorf("pyRepr(%#v) = %s, want %s", c.v, got, c.want)
		}
	}
	if got := pyArgsRepr([]any{json.Number("1")}); got != "(1,)" {
		t.Errorf("pyArgsRepr one = %s", got)
	}
	if got := pyArgsRepr(nil); got != "()" {
		t.Errorf("pyArgsRepr none = %s", got)
	}
	long := pyRepr(strings.Repeat("é", 1000), 1024)
	if len(long) > 1027 || !strings.HasSuffix(long, "...") {
		t.Errorf("long repr not cut: len %d", len(long))
	}
}

func TestExcRepr(t *testing.T) {
	te := protocol.NewTaskError("RuntimeError", "builtins", "boom")
	if got := excRepr(te); got != "RuntimeError('boom')" {
		t.Errorf("excRepr = %s", got)
	}
	if got := excRepr(nil); got != "None" {
		t.Errorf("excRepr(nil) = %s", got)
	}
	if got := pyExceptionLine(te); got != "RuntimeError: boom" {
		t.Errorf("pyExceptionLine = %s", got)
	}
	if got := string(pyFloatNumber(5)); got != "5.0" {
		t.Errorf("pyFloatNumber(5) = %s", got)
	}
}
