package runner

import (
	"encoding/json"
	"math"

	"morag-gpu/internal/pyfmt"
)

// pyRepr renders a JSON-like value the way Python's repr() would render
// the value json.loads makes of it, cut to max bytes (and then to a whole
// character) like kombu's saferepr. Events carry these strings
// (task-succeeded "result", task-received "args"), and Flower shows them.
func pyRepr(v any, max int) string {
	s := pyfmt.Repr(v)
	if max > 0 && len(s) > max {
		cut := max
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func isRuneStart(c byte) bool { return c&0xC0 != 0x80 }

// pyArgsRepr is Python's repr of an args tuple: "(1,)", "(1, 2)", "()".
func pyArgsRepr(args []any) string { return pyfmt.Repr(pyfmt.Tuple(args)) }

// pyFloatNumber is f as a JSON number Python reads back as a float (with a
// fractional part: json.loads("5") is an int, json.loads("5.0") a float).
// NaN and the infinities, which JSON readers other than Python's reject,
// become 0.0.
func pyFloatNumber(f float64) json.Number {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return json.Number("0.0")
	}
	return json.Number(pyfmt.FloatRepr(f))
}
