package httpapi

import (
	"math"

	"morag-gpu/internal/pyfmt"
)

// pyFloat is a float that encodes as Python's json.dumps writes a float
// (repr): 1.0 not 1, 1e-05, 1e+16. MoRAG's clients read progress and
// processing_time from FastAPI, where they are always floats; a Python
// client's json.loads turns Go's "1" into an int.
type pyFloat float64

func (f pyFloat) MarshalJSON() ([]byte, error) {
	return []byte(pyFloatRepr(float64(f))), nil
}

// pyFloatRepr is Python's float.__repr__ (internal/pyfmt), except that NaN
// and infinities, which FastAPI's JSON refuses, are written as null.
func pyFloatRepr(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "null"
	}
	return pyfmt.FloatRepr(f)
}
