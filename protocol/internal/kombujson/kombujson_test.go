package kombujson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// kombu >= 5.3 output (kombu/utils/json.py JSONEncoder + json.dumps).
const kombuTyped = `{"dt": {"__type__": "datetime", "__value__": "2024-05-01T12:00:10.123456+02:00"},
 "naive": {"__type__": "datetime", "__value__": "2024-05-01T12:00:10"},
 "d": {"__type__": "date", "__value__": "2024-05-01"},
 "t": {"__type__": "time", "__value__": "12:00:10.500000"},
 "dec": {"__type__": "decimal", "__value__": "3.14159265358979323846264338327950288"},
 "nan": {"__type__": "decimal", "__value__": "NaN"},
 "u530": {"__type__": "uuid", "__value__": {"hex": "e3b0c44298fc4c149afbf4c8996fb924", "version": 4}},
 "u": {"__type__": "uuid", "__value__": {"hex": "e3b0c442-98fc-4c14-9afb-f4c8996fb924"}},
 "b": {"__type__": "bytes", "__value__": "h\u00e9llo"},
 "b64": {"__type__": "base64", "__value__": "/wA="},
 "list": [{"__type__": "date", "__value__": "2000-02-29"}, 18446744073709551617],
 "nested": {"__type__": "bytes", "__value__": "x", "extra": 1}}`

func TestUnmarshalJSONKombuTypes(t *testing.T) {
	var v any
	if err := Unmarshal([]byte(kombuTyped), &v); err != nil {
		t.Fatal(err)
	}
	m := v.(map[string]any)
	checkTime := func(key string, want time.Time) {
		t.Helper()
		got, ok := m[key].(time.Time)
		if !ok || !got.Equal(want) {
			t.Errorf("%s = %#v, want %v", key, m[key], want)
		}
	}
	checkTime("dt", time.Date(2024, 5, 1, 10, 0, 10, 123456000, time.UTC))
	checkTime("naive", time.Date(2024, 5, 1, 12, 0, 10, 0, time.UTC))
	checkTime("d", time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC))
	checkTime("t", time.Date(1, 1, 1, 12, 0, 10, 5e8, time.UTC))
	if _, off := m["dt"].(time.Time).Zone(); off != 7200 {
		t.Errorf("datetime lost its offset: %v", m["dt"])
	}
	if m["dec"] != json.Number("3.14159265358979323846264338327950288") || m["nan"] != "NaN" {
		t.Errorf("decimals: %#v %#v", m["dec"], m["nan"])
	}
	if m["u530"] != "e3b0c442-98fc-4c14-9afb-f4c8996fb924" || m["u"] != m["u530"] {
		t.Errorf("uuids: %#v %#v", m["u530"], m["u"])
	}
	if b, _ := m["b"].([]byte); string(b) != "héllo" {
		t.Errorf("bytes: %#v", m["b"])
	}
	if b, _ := m["b64"].([]byte); !bytes.Equal(b, []byte{0xff, 0}) {
		t.Errorf("base64: %#v", m["b64"])
	}
	l := m["list"].([]any)
	if _, ok := l[0].(time.Time); !ok || l[1] != json.Number("18446744073709551617") {
		t.Errorf("list: %#v", l)
	}
	// Three keys: not an envelope, left alone (kombu checks keys() exactly).
	if n, ok := m["nested"].(map[string]any); !ok || n["__type__"] != "bytes" {
		t.Errorf("3-key object was converted: %#v", m["nested"])
	}
}

func TestUnmarshalJSONIntoTypedTargets(t *testing.T) {
	var s struct {
		Dt    time.Time      `json:"dt"`
		D     time.Time      `json:"d"`
		Dec   json.Number    `json:"dec"`
		U     string         `json:"u"`
		B     []byte         `json:"b"`
		List  []any          `json:"list"`
		Other map[string]any `json:"nested"`
	}
	if err := Unmarshal([]byte(kombuTyped), &s); err != nil {
		t.Fatal(err)
	}
	if !s.Dt.Equal(time.Date(2024, 5, 1, 10, 0, 10, 123456000, time.UTC)) || !s.D.Equal(time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)) ||
		s.Dec != "3.14159265358979323846264338327950288" || s.U != "e3b0c442-98fc-4c14-9afb-f4c8996fb924" || string(s.B) != "héllo" ||
		s.List[1] != json.Number("18446744073709551617") {
		t.Errorf("struct: %+v", s)
	}
	// Plain JSON takes the direct path; numbers stay json.Number.
	var p struct {
		N any `json:"n"`
	}
	if err := Unmarshal([]byte(`{"n": 12345678901234567890123}`), &p); err != nil || p.N != json.Number("12345678901234567890123") {
		t.Errorf("plain: %#v %v", p, err)
	}
	var list []any
	if err := Unmarshal([]byte(`[{"__type__":"bytes","__value__":"x"}]`), &list); err != nil || string(list[0].([]byte)) != "x" {
		t.Errorf("slice target: %#v %v", list, err)
	}
}

func TestUnmarshalJSONErrors(t *testing.T) {
	for name, in := range map[string]string{
		"unknown type":   `[{"__type__": "pickle", "__value__": "x"}]`,
		"bad datetime":   `{"__type__": "datetime", "__value__": "yesterday"}`,
		"datetime int":   `{"__type__": "datetime", "__value__": 5}`,
		"bad uuid":       `{"__type__": "uuid", "__value__": {"hex": "zz"}}`,
		"bad base64":     `{"__type__": "base64", "__value__": "!!"}`,
		"escaped key":    `{"\u005f_type__": "nope", "__value__": 1}`,
		"trailing data":  `{} {}`,
		"empty":          ``,
		"invalid syntax": `{"a":}`,
	} {
		var v any
		if err := Unmarshal([]byte(in), &v); err == nil {
			t.Errorf("%s: no error, got %#v", name, v)
		}
	}
	var v any
	err := Unmarshal([]byte(`{"__type__": "pickle", "__value__": "x"}`), &v)
	if err == nil || !strings.Contains(err.Error(), `"pickle"`) || !strings.Contains(err.Error(), "Unsupported type") {
		t.Errorf("unknown type error should name it like kombu: %v", err)
	}
}

type codecTestStruct struct {
	T    time.Time `json:"t"`
	Type string    `json:"__type__"`
	Val  int       `json:"__value__"`
}

type codecTestEnvelope struct {
	Type string `json:"__type__"`
	Val  int    `json:"__value__"`
}

type codecTestOK struct {
	Name string         `json:"name"`
	When time.Time      `json:"when"`
	Tags map[string]int `json:"tags,omitempty"`
}

func TestMarshalJSON(t *testing.T) {
	ts := time.Date(2024, 5, 1, 12, 0, 10, 123456789, time.UTC)
	for _, tc := range []struct {
		in   any
		want string
	}{
		{map[string]any{"b": "<&>", "a": []any{json.Number("1180591620717411303424"), 2.0, 0.1, 1e21, 1e-7, nil, true}},
			`{"a":[1180591620717411303424,2,0.1,1e+21,1e-7,null,true],"b":"<&>"}`},
		{[]any{ts, &ts, (*time.Time)(nil)}, `["2024-05-01T12:00:10.123456+00:00","2024-05-01T12:00:10.123456+00:00",null]`},
		{"\u2028\x00\t\"\\é\xff", `"\u2028\u0000\t\"\\é\ufffd"`},
		{map[string][]time.Time{"x": {ts.Truncate(time.Second)}}, `{"x":["2024-05-01T12:00:10+00:00"]}`},
		{codecTestOK{Name: "<n>", When: ts}, `{"name":"<n>","when":"2024-05-01T12:00:10.123456789Z"}`},
		{json.RawMessage(` {"z": 1} `), `{"z": 1}`},
		{[]int{1, 2}, `[1,2]`},
		{[]byte("hi"), `"aGk="`},
		{map[string]any{}, `{}`},
		{[]any(nil), `null`},
	} {
		got, err := Marshal(tc.in)
		if err != nil || string(got) != tc.want {
			t.Errorf("Marshal(%#v) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
		if err == nil && !json.Valid(got) {
			t.Errorf("invalid JSON: %s", got)
		}
	}

	loop := map[string]any{}
	loop["self"] = loop
	for name, in := range map[string]any{
		"bare envelope":           map[string]any{"__type__": "datetime", "__value__": "2024-01-01"},
		"nested bare envelope":    []any{map[string]any{"x": map[string]any{"__type__": "x", "__value__": nil}}},
		"typed map envelope":      map[string]string{"__type__": "a", "__value__": "b"},
		"struct envelope":         struct{ A codecTestEnvelope }{codecTestEnvelope{Type: "x"}},
		"raw envelope":            json.RawMessage(`{"__type__":"x","__value__":1}`),
		"NaN":                     []any{math.NaN()},
		"invalid number":          json.Number("0x10"),
		"invalid raw":             json.RawMessage(`{`),
		"cycle":                   loop,
		"unsupported (func)":      func() {},
		"struct with bad content": codecTestOK{Tags: map[string]int{}, When: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if got, err := Marshal(in); err == nil {
			t.Errorf("%s: Marshal succeeded: %s", name, got)
		}
	}
	// A struct whose __type__ sits next to other keys is fine.
	if got, err := Marshal(codecTestStruct{Type: "x"}); err != nil || !strings.Contains(string(got), `"__type__":"x"`) {
		t.Errorf("3-key struct: %s %v", got, err)
	}
}

// codecRefJSON is encoding/json with UseNumber: the behaviour Parse
// must match.
func codecRefJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	return v, nil
}

// FuzzParseJSON: the fast parser accepts exactly what encoding/json
// accepts and produces the same values.
func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,-2.5e+3,"x\u00e9\ud83d\ude00\ud800",true,false,null],"b":{}}`, `"\"\\\/\b\f\n\r\t"`,
		` [ ] `, `0`, `-0.0E-0`, `01`, `1.`, `"\x01"`, "\"\xff\xfe\"", `{"a" 1}`, `[1,]`, `{"a":1,}`, `nul`, `"\ud800\u0041"`,
		`"\uDBFF\uDFFF"`, `[[[[[[[[[[]]]]]]]]]]`, `{"k":"v","k":"w"}`, kombuTyped} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(data)
		want, werr := codecRefJSON(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("Parse error %v, encoding/json error %v, for %q", err, werr, data)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("Parse = %#v, encoding/json = %#v, for %q", got, want, data)
		}
	})
}

func TestParseJSONDepthLimit(t *testing.T) {
	deep := strings.Repeat("[", jsonMaxDepth+1) + strings.Repeat("]", jsonMaxDepth+1)
	if _, err := Parse([]byte(deep)); err == nil {
		t.Error("Parse accepted nesting beyond encoding/json's limit")
	}
	ok := strings.Repeat("[", jsonMaxDepth) + strings.Repeat("]", jsonMaxDepth)
	if _, err := Parse([]byte(ok)); err != nil {
		t.Errorf("Parse rejected nesting encoding/json accepts: %v", err)
	}
}
