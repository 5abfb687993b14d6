package pyfmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

// The cases are sent to CPython in a tagged form that cannot lose a type on
// the way (encoding/json would write 2.0 as 2, an int to Python), rebuilt
// there, and formatted by repr, json.dumps and isoformat. The Go side must
// produce the same bytes.

func tag(v any) any {
	switch x := v.(type) {
	case nil:
		return map[string]any{"t": "none"}
	case bool:
		return map[string]any{"t": "bool", "v": x}
	case string:
		return map[string]any{"t": "str", "v": x}
	case float64:
		return map[string]any{"t": "float", "v": strconv.FormatFloat(x, 'g', -1, 64)}
	case float32:
		return map[string]any{"t": "float", "v": strconv.FormatFloat(float64(x), 'g', -1, 32)}
	case int:
		return map[string]any{"t": "int", "v": strconv.Itoa(x)}
	case json.Number:
		return map[string]any{"t": "num", "v": string(x)}
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = tag(e)
		}
		return map[string]any{"t": "list", "v": out}
	case Tuple:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = tag(e)
		}
		return map[string]any{"t": "tuple", "v": out}
	case map[string]any:
		keys := sortedKeys(x)
		out := make([]any, len(keys))
		for i, k := range keys {
			out[i] = []any{k, tag(x[k])}
		}
		return map[string]any{"t": "dict", "v": out}
	case Dict:
		out := make([]any, len(x))
		for i, it := range x {
			out[i] = []any{it.Key, tag(it.Value)}
		}
		return map[string]any{"t": "dict", "v": out}
	}
	panic(fmt.Sprintf("no tag for %T", v))
}

const pythonFormatter = `
import json, sys, datetime
def build(n):
    t = n["t"]
    if t == "none": return None
    if t in ("bool", "str"): return n["v"]
    if t == "float": return float(n["v"])
    if t == "int": return int(n["v"])
    if t == "num": return json.loads(n["v"])
    if t == "list": return [build(e) for e in n["v"]]
    if t == "tuple": return tuple(build(e) for e in n["v"])
    if t == "dict": return {k: build(e) for k, e in n["v"]}
    raise ValueError(t)
req = json.load(sys.stdin)
out = {"values": [], "times": []}
for n in req["values"]:
    v = build(n)
    out["values"].append([repr(v), json.dumps(v)])
for y, mo, d, h, mi, s, us, off in req["times"]:
    tz = None if off is None else datetime.timezone(datetime.timedelta(seconds=off))
    out["times"].append(datetime.datetime(y, mo, d, h, mi, s, us, tz).isoformat())
json.dump(out, sys.stdout)
`

// runePool holds the characters worth checking: quotes and backslash,
// controls, DEL, the C1 range, non-ASCII spaces and format characters
// (U+00A0, U+00AD, U+2028, U+200B, U+FEFF), printable Latin-1, CJK,
// combining marks, and astral characters (emoji, which JSON writes as a
// surrogate pair).
var runePool = []rune("aZ0 '\"\\\t\n\r\x00\x01\x08\x0c\x1b\x1f\x7f\u0080\u009f\u00a0\u00ad\u00e9\u00ff\u0100\u0301\u2028\u2029\u200b\ufeff\u4e2d\ufffd\U0001F600\U0001F1E9\U0010FFFD\U000E0001")

func randString(r *rand.Rand) string {
	var b strings.Builder
	for n := r.IntN(8); n > 0; n-- {
		b.WriteRune(runePool[r.IntN(len(runePool))])
	}
	return b.String()
}

func randFloat(r *rand.Rand) float64 {
	switch r.IntN(3) {
	case 0: // any bit pattern: every exponent, subnormals, NaN payloads
		return math.Float64frombits(r.Uint64())
	case 1: // around the notation switches at 1e-4 and 1e16
		return math.Pow(10, float64(r.IntN(26)-8)) * (1 + float64(r.IntN(3))*r.Float64())
	default:
		return float64(r.IntN(2000)-1000) / 8
	}
}

func randValue(r *rand.Rand, depth int) any {
	k := r.IntN(10)
	if depth > 3 && k >= 7 {
		k = r.IntN(7)
	}
	switch k {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2, 3:
		return randString(r)
	case 4:
		return randFloat(r)
	case 5:
		return r.IntN(1<<20) - 1<<19
	case 6:
		return json.Number([]string{"0", "-0", "1e6", "1E-3", "12345678901234567890123", "-1.50", "1e400"}[r.IntN(7)])
	case 7:
		list := make([]any, r.IntN(4))
		for i := range list {
			list[i] = randValue(r, depth+1)
		}
		return list
	case 8:
		t := make(Tuple, r.IntN(3))
		for i := range t {
			t[i] = randValue(r, depth+1)
		}
		return t
	default:
		m := map[string]any{}
		for n := r.IntN(4); n > 0; n-- {
			m[randString(r)] = randValue(r, depth+1)
		}
		return m
	}
}

func TestMatchesCPython(t *testing.T) {
	if _, err := exec.LookPath(testenv.PythonBin); err != nil {
		t.Skipf("SKIP: %s not found (%v): the comparison needs Debian's python3", testenv.PythonBin, err)
	}
	values := []any{
		// The floats the copies disagreed on, and the notation edges.
		1e6, 1e16, 1e-5, 0.1, math.Copysign(0, -1), 0.0, math.NaN(), math.Inf(1), math.Inf(-1), 2.0,
		1e15, 9999999999999998.0, 1e-4, 0.00009999, 1.5e-7, 1e22, 5e-324, math.MaxFloat64, 123456789.125,
		float32(0.1), float32(1e20),
		// Strings: U+00A0, controls, surrogate pairs, quotes.
		"\u00a0", "a'b", `a"b`, `a'b"c`, "\\", "\x00\x7f\u0085", "\U0001F600 ok", "\u2028", "tab\there", "",
		// Ints and literal numbers as json.loads reads them.
		0, -7, json.Number("1e6"), json.Number("-0"), json.Number("2.0"), json.Number("99999999999999999999"),
		// Containers.
		[]any{}, Tuple{}, Tuple{1}, Tuple{1, "x"}, map[string]any{}, map[string]any{"b": 1, "a": []any{2.0, "x<y>"}},
		Dict{{"z", 1}, {"a", nil}, {"m", Dict{{"k", true}}}},
		[]any{[]any{[]any{1.5, Tuple{nil}}}, map[string]any{"\u00a0": "\U0001F600"}},
	}
	r := rand.New(rand.NewPCG(12, 34))
	for range 400 {
		values = append(values, randValue(r, 0))
	}
	type tm struct {
		t   time.Time
		off *int
	}
	var times []tm
	naive := func(t time.Time) tm { return tm{t: t} }
	aware := func(t time.Time) tm { _, off := t.Zone(); return tm{t: t, off: &off} }
	times = append(times,
		naive(time.Date(2025, 1, 31, 12, 0, 0, 0, time.UTC)),
		naive(time.Date(2025, 1, 31, 12, 0, 0, 1000, time.UTC)),
		naive(time.Date(999, 2, 3, 4, 5, 6, 999999000, time.UTC)),
		aware(time.Date(2024, 5, 1, 12, 0, 10, 123456000, time.UTC)),
		aware(time.Date(2024, 5, 1, 12, 0, 10, 0, time.FixedZone("", -(5*3600+30*60)))),
		aware(time.Date(2024, 5, 1, 12, 0, 10, 500000000, time.FixedZone("", 3600+45))),
	)
	for range 50 {
		ts := time.Unix(r.Int64N(1<<35)-1<<34, r.Int64N(1e9)).UTC()
		if ts.Year() < 1 || ts.Year() > 9999 {
			continue
		}
		if r.IntN(2) == 0 {
			times = append(times, naive(ts))
		} else {
			times = append(times, aware(ts.In(time.FixedZone("", (r.IntN(48)-24)*1800))))
		}
	}

	req := map[string]any{"values": []any{}, "times": []any{}}
	for _, v := range values {
		req["values"] = append(req["values"].([]any), tag(v))
	}
	for _, x := range times {
		// Python gets the wall clock and offset; the microseconds are what
		// a Python datetime can hold.
		var off any
		if x.off != nil {
			off = *x.off
		}
		req["times"] = append(req["times"].([]any), []any{x.t.Year(), int(x.t.Month()), x.t.Day(),
			x.t.Hour(), x.t.Minute(), x.t.Second(), x.t.Nanosecond() / 1000, off})
	}
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.PythonBin, "-c", pythonFormatter)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	var want struct {
		Values [][2]string
		Times  []string
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatalf("python output: %v\n%s", err, raw)
	}
	for i, v := range values {
		if got := Repr(v); got != want.Values[i][0] {
			t.Errorf("Repr(%#v) = %s, Python writes %s", v, got, want.Values[i][0])
		}
		got, err := Dumps(v)
		if err != nil || string(got) != want.Values[i][1] {
			t.Errorf("Dumps(%#v) = %s, %v; Python writes %s", v, got, err, want.Values[i][1])
		}
	}
	for i, x := range times {
		got := ISOFormatNaive(x.t)
		if x.off != nil {
			got = ISOFormat(x.t)
		}
		if got != want.Times[i] {
			t.Errorf("isoformat of %v = %s, Python writes %s", x.t, got, want.Times[i])
		}
	}
	t.Logf("%d values and %d datetimes formatted as CPython %s does", len(values), len(times), testenv.PythonBin)
}

// TestStr: str() of a str is the text itself, of anything else its repr.
func TestStr(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{{"a'b", "a'b"}, {25.0, "25.0"}, {true, "True"}, {[]string{"a", "b"}, "['a', 'b']"}, {nil, "None"}} {
		if got := Str(c.v); got != c.want {
			t.Errorf("Str(%#v) = %q, want %q", c.v, got, c.want)
		}
	}
}

// TestOtherGoTypes: values that are not JSON-shaped are read as Python
// would see them after encoding/json.
func TestOtherGoTypes(t *testing.T) {
	type point struct {
		X int     `json:"x"`
		Y float64 `json:"y"`
	}
	var nilPtr *point
	cases := []struct {
		v        any
		repr, js string
	}{
		{point{1, 2.5}, "{'x': 1, 'y': 2.5}", `{"x": 1, "y": 2.5}`},
		{nilPtr, "None", "null"},
		{map[string]int{"b": 2, "a": 1}, "{'a': 1, 'b': 2}", `{"a": 1, "b": 2}`},
		{[]float64{1, 0.5}, "[1, 0.5]", "[1, 0.5]"}, // encoding/json writes 1.0 as 1
		{uint8(7), "7", "7"},
	}
	for _, c := range cases {
		if got := Repr(c.v); got != c.repr {
			t.Errorf("Repr(%#v) = %s, want %s", c.v, got, c.repr)
		}
		if got, err := Dumps(c.v); err != nil || string(got) != c.js {
			t.Errorf("Dumps(%#v) = %s, %v; want %s", c.v, got, err, c.js)
		}
	}
	if _, err := Dumps(make(chan int)); err == nil {
		t.Error("Dumps(chan) succeeded")
	}
	self := []any{nil}
	self[0] = self
	if _, err := Dumps(self); err == nil {
		t.Error("Dumps of a self-containing list succeeded")
	}
	if got := Repr(self); !strings.Contains(got, "[...]") {
		t.Errorf("Repr of a self-containing list = %.40s...", got)
	}
}

// TestInvalidUTF8: a Go string that is not UTF-8 has no Python str; each
// bad byte is read as U+FFFD, as bytes.decode(errors="replace") reads a
// lone byte.
func TestInvalidUTF8(t *testing.T) {
	if got := StrRepr("a\xffb"); got != "'a\uFFFDb'" {
		t.Errorf("StrRepr = %q", got)
	}
	if got := string(AppendJSONString(nil, "a\xffb")); got != `"a\ufffdb"` {
		t.Errorf("AppendJSONString = %s", got)
	}
}
