package pyfmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
)

// Dumps is Python's json.dumps(v) with its defaults: ", " and ": "
// separators, ensure_ascii=True, allow_nan=True (NaN, Infinity, -Infinity),
// floats as repr writes them (2.0, 1e-05, 1e+16). Go values are read as the
// package doc says. It fails only on values encoding/json cannot marshal
// either, and on nesting deeper than 100 levels.
func Dumps(v any) ([]byte, error) { return AppendJSON(nil, v) }

// AppendJSON appends Dumps(v) to dst.
func AppendJSON(dst []byte, v any) ([]byte, error) { return appendJSON(dst, v, 0) }

func appendJSON(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, fmt.Errorf("pyfmt: cannot write a value nested deeper than %d levels as JSON (does it contain itself?)", maxDepth)
	}
	var err error
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case string:
		return AppendJSONString(b, x), nil
	case json.Number:
		return appendNumber(b, string(x), true), nil
	case float64:
		return appendFloat(b, x, 64, true), nil
	case float32:
		return appendFloat(b, float64(x), 32, true), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case int32:
		return strconv.AppendInt(b, int64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case []any:
		return appendJSONList(b, x, depth)
	case Tuple:
		return appendJSONList(b, x, depth)
	case []string:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = AppendJSONString(b, e)
		}
		return append(b, ']'), nil
	case Dict:
		b = append(b, '{')
		for i, it := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = AppendJSONString(b, it.Key)
			b = append(b, ": "...)
			if b, err = appendJSON(b, it.Value, depth+1); err != nil {
				return b, err
			}
		}
		return append(b, '}'), nil
	case map[string]any:
		b = append(b, '{')
		for i, k := range sortedKeys(x) {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = AppendJSONString(b, k)
			b = append(b, ": "...)
			if b, err = appendJSON(b, x[k], depth+1); err != nil {
				return b, err
			}
		}
		return append(b, '}'), nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
		return append(b, "null"...), nil
	}
	generic, err := viaJSON(v)
	if err != nil {
		return b, fmt.Errorf("pyfmt: cannot write %T as JSON: %w", v, err)
	}
	return appendJSON(b, generic, depth+1)
}

func appendJSONList(b []byte, list []any, depth int) ([]byte, error) {
	var err error
	b = append(b, '[')
	for i, e := range list {
		if i > 0 {
			b = append(b, ", "...)
		}
		if b, err = appendJSON(b, e, depth+1); err != nil {
			return b, err
		}
	}
	return append(b, ']'), nil
}

// AppendJSONString appends s as json.dumps writes a str with
// ensure_ascii=True (json.encoder.py_encode_basestring_ascii): only \" \\
// \b \f \n \r \t get short escapes, everything outside printable ASCII
// (including DEL) is \uXXXX with lower-case hex, characters above U+FFFF as
// a surrogate pair.
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	u4 := func(b []byte, r rune) []byte {
		return append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
	}
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"':
			b = append(b, `\"`...)
		case r == '\\':
			b = append(b, `\\`...)
		case r == '\b':
			b = append(b, `\b`...)
		case r == '\f':
			b = append(b, `\f`...)
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r >= ' ' && r <= '~':
			b = append(b, byte(r))
		case r > 0xffff:
			r -= 0x10000
			b = u4(b, 0xd800|(r>>10)&0x3ff)
			b = u4(b, 0xdc00|r&0x3ff)
		default:
			b = u4(b, r)
		}
	}
	return append(b, '"')
}

// AppendJSONFloat appends f as json.dumps writes a float: repr's digits,
// NaN, Infinity and -Infinity for the values JSON itself cannot hold. A
// caller whose readers reject those must check math.IsNaN/IsInf first.
func AppendJSONFloat(dst []byte, f float64) []byte { return appendFloat(dst, f, 64, true) }

// AppendJSONFloat32 is AppendJSONFloat for a float32, with the shortest
// digits that read back as that float32 (as encoding/json writes it).
func AppendJSONFloat32(dst []byte, f float32) []byte { return appendFloat(dst, float64(f), 32, true) }

// decodeNumbers is json.Unmarshal with numbers kept as json.Number.
func decodeNumbers(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}
