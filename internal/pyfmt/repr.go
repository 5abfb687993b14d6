package pyfmt

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Tuple is a Python tuple: repr writes (1,) and (1, 2), json.dumps writes a
// list, as Python does.
type Tuple []any

// Dict is a Python dict that keeps its insertion order, for output whose
// key order matters (json.dumps of a dict built key by key).
type Dict []Item

// Item is one key and value of a Dict.
type Item struct {
	Key   string
	Value any
}

// maxDepth bounds nesting so that a slice holding itself ends in "..."
// instead of a stack overflow (Python's repr would print [[...]]).
const maxDepth = 100

// Repr is Python's repr(v) of the value v stands for (see the package doc).
func Repr(v any) string { return string(AppendRepr(nil, v)) }

// Str is Python's str(v): a str is itself, anything else its repr, as an
// f-string prints it.
func Str(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return Repr(v)
}

// AppendRepr appends Repr(v) to dst.
func AppendRepr(dst []byte, v any) []byte { return appendRepr(dst, v, 0) }

func appendRepr(b []byte, v any, depth int) []byte {
	if depth > maxDepth {
		return append(b, "..."...)
	}
	switch x := v.(type) {
	case nil:
		return append(b, "None"...)
	case bool:
		if x {
			return append(b, "True"...)
		}
		return append(b, "False"...)
	case string:
		return AppendStrRepr(b, x)
	case json.Number:
		return appendNumber(b, string(x), false)
	case float64:
		return appendFloat(b, x, 64, false)
	case float32:
		return appendFloat(b, float64(x), 32, false)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case int32:
		return strconv.AppendInt(b, int64(x), 10)
	case uint64:
		return strconv.AppendUint(b, x, 10)
	case Tuple:
		b = append(b, '(')
		for i, e := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = appendRepr(b, e, depth+1)
		}
		if len(x) == 1 {
			b = append(b, ',')
		}
		return append(b, ')')
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = appendRepr(b, e, depth+1)
		}
		return append(b, ']')
	case []string:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = AppendStrRepr(b, e)
		}
		return append(b, ']')
	case Dict:
		b = append(b, '{')
		for i, it := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = AppendStrRepr(b, it.Key)
			b = append(b, ": "...)
			b = appendRepr(b, it.Value, depth+1)
		}
		return append(b, '}')
	case map[string]any:
		b = append(b, '{')
		for i, k := range sortedKeys(x) {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = AppendStrRepr(b, k)
			b = append(b, ": "...)
			b = appendRepr(b, x[k], depth+1)
		}
		return append(b, '}')
	}
	// Anything else (other ints, structs, typed slices and maps): what
	// Python holds after the JSON round trip.
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
		return append(b, "None"...)
	}
	generic, err := viaJSON(v)
	if err != nil {
		return AppendStrRepr(b, fmt.Sprint(v))
	}
	return appendRepr(b, generic, depth+1)
}

// viaJSON is v after encoding/json and back, numbers kept exact.
func viaJSON(v any) (any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var generic any
	if err := decodeNumbers(data, &generic); err != nil {
		return nil, err
	}
	return generic, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// StrRepr is Python 3's repr(str): single quotes unless the text holds a
// single quote and no double quote; \\, the quote, \t \n \r escaped; other
// characters Python does not call printable (str.isprintable) as \xNN,
// \uNNNN or \UNNNNNNNN. U+00A0 and the other non-ASCII spaces are not
// printable and so are escaped.
func StrRepr(s string) string { return string(AppendStrRepr(nil, s)) }

// AppendStrRepr appends StrRepr(s) to dst.
func AppendStrRepr(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	quote := byte('\'')
	if containsByte(s, '\'') && !containsByte(s, '"') {
		quote = '"'
	}
	b = append(b, quote)
	for _, r := range s {
		switch {
		case r == rune(quote) || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r >= ' ' && r < 0x7f:
			b = append(b, byte(r))
		case r < 0x7f || !printable(r):
			switch {
			case r <= 0xff:
				b = append(b, '\\', 'x', hex[r>>4], hex[r&0xf])
			case r <= 0xffff:
				b = append(b, '\\', 'u')
				for shift := 12; shift >= 0; shift -= 4 {
					b = append(b, hex[r>>shift&0xf])
				}
			default:
				b = append(b, '\\', 'U')
				for shift := 28; shift >= 0; shift -= 4 {
					b = append(b, hex[r>>shift&0xf])
				}
			}
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, quote)
}

// printable is Python's str.isprintable for one non-ASCII character: not in
// the categories Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs. Go's unicode.IsPrint is
// that set (its only space is U+0020, which is ASCII). Go's Unicode tables
// may be newer than the peer's Python: a character assigned in between is
// printable here and escaped there.
func printable(r rune) bool { return unicode.IsPrint(r) }

func containsByte(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}
