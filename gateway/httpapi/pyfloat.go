package httpapi

import (
	"math"
	"strconv"
	"strings"
)

// pyFloat is a float that encodes as Python's json.dumps writes a float
// (repr): 1.0 not 1, 1e-05, 1e+16. MoRAG's clients read progress and
// processing_time from FastAPI, where they are always floats; a Python
// client's json.loads turns Go's "1" into an int.
type pyFloat float64

func (f pyFloat) MarshalJSON() ([]byte, error) {
	return []byte(pyFloatRepr(float64(f))), nil
}

// pyFloatRepr is Python's float.__repr__: the shortest round-tripping
// digits, positional for exponents in [-4, 16), scientific otherwise, and
// always with a "." or an exponent. NaN and infinities (which FastAPI's
// JSON refuses) are written as null.
func pyFloatRepr(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "null"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	i := strings.LastIndexByte(e, 'e')
	exp, _ := strconv.Atoi(e[i+1:])
	if exp < -4 || exp >= 16 {
		return e // Go writes at least two exponent digits, as Python does
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsRune(s, '.') {
		s += ".0"
	}
	return s
}
