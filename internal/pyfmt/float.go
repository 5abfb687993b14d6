package pyfmt

import (
	"math"
	"strconv"
)

// FloatRepr is repr(f): the shortest digits that read back as f, in fixed
// notation with at least one fractional digit when the decimal exponent is
// in [-4, 16), else in exponent notation with a signed, at least two-digit
// exponent ("1e+16", "1e-05"); "nan", "inf", "-inf".
func FloatRepr(f float64) string { return string(AppendFloatRepr(nil, f)) }

// AppendFloatRepr appends FloatRepr(f) to dst.
func AppendFloatRepr(dst []byte, f float64) []byte { return appendFloat(dst, f, 64, false) }

// appendFloat writes f, shortest for its bit size (a float32 is written as
// encoding/json writes it, which is what Python then reads). json selects
// json.dumps's spelling of the non-finite values.
func appendFloat(dst []byte, f float64, bits int, json bool) []byte {
	switch {
	case math.IsNaN(f):
		if json {
			return append(dst, "NaN"...)
		}
		return append(dst, "nan"...)
	case math.IsInf(f, 1):
		if json {
			return append(dst, "Infinity"...)
		}
		return append(dst, "inf"...)
	case math.IsInf(f, -1):
		if json {
			return append(dst, "-Infinity"...)
		}
		return append(dst, "-inf"...)
	}
	// The notation depends on the decimal exponent of the shortest digits,
	// not on the magnitude: 9.9999999999999995e-05 prints as 0.0001 only if
	// its shortest form is 0.0001. Go's 'e' form already writes the exponent
	// as Python does (sign, at least two digits).
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, 'e', -1, bits)
	exp := 0
	for i := len(dst) - 1; i > start; i-- {
		if dst[i] == 'e' {
			exp, _ = strconv.Atoi(string(dst[i+1:]))
			break
		}
	}
	if exp < -4 || exp >= 16 {
		return dst
	}
	dst = strconv.AppendFloat(dst[:start], f, 'f', -1, bits)
	for _, c := range dst[start:] {
		if c == '.' {
			return dst
		}
	}
	return append(dst, ".0"...)
}

// numberFloat reports whether a JSON number literal is one json.loads reads
// as a float (it has a fraction or an exponent).
func numberFloat(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '.', 'e', 'E':
			return true
		}
	}
	return false
}

// appendNumber writes a JSON number literal as Python writes the int or
// float that json.loads makes of it. An integer literal is kept digit for
// digit (Python ints are unbounded); "-0" is the int 0.
func appendNumber(dst []byte, s string, json bool) []byte {
	if !numberFloat(s) {
		if s == "-0" || s == "" {
			return append(dst, '0')
		}
		return append(dst, s...)
	}
	// An out-of-range literal is ±inf, as float("1e400") is in Python.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !math.IsInf(f, 0) {
		return append(dst, s...)
	}
	return appendFloat(dst, f, 64, json)
}
