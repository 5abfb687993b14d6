package runner

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"morag-gpu/protocol"
)

// pyRepr renders a JSON-like value the way Python's repr() would render
// the value json.loads makes of it, cut to max characters like kombu's
// saferepr. Events carry these strings (task-succeeded "result",
// task-received "args"), and Flower shows them.
func pyRepr(v any, max int) string {
	var b strings.Builder
	writeRepr(&b, v, 0)
	s := b.String()
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
func pyArgsRepr(args []any) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, a := range args {
		if i > 0 {
			b.WriteString(", ")
		}
		writeRepr(&b, a, 1)
	}
	if len(args) == 1 {
		b.WriteByte(',')
	}
	b.WriteByte(')')
	return b.String()
}

func writeRepr(b *strings.Builder, v any, depth int) {
	if depth > 32 {
		b.WriteString("...")
		return
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("None")
	case bool:
		if x {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	case string:
		b.WriteString(protocol.PyStrRepr(x))
	case json.Number:
		b.WriteString(x.String())
	case float64:
		b.WriteString(pyFloat(x))
	case float32:
		b.WriteString(pyFloat(float64(x)))
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		fmt.Fprint(b, x)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writeRepr(b, e, depth+1)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(protocol.PyStrRepr(k))
			b.WriteString(": ")
			writeRepr(b, x[k], depth+1)
		}
		b.WriteByte('}')
	default:
		// Structs, typed slices and maps: render what Python would get
		// after the JSON round trip.
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
			b.WriteString("None")
			return
		}
		data, err := json.Marshal(v)
		if err != nil {
			b.WriteString(protocol.PyStrRepr(fmt.Sprint(v)))
			return
		}
		var generic any
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.UseNumber()
		if dec.Decode(&generic) != nil {
			b.WriteString(protocol.PyStrRepr(string(data)))
			return
		}
		writeRepr(b, generic, depth+1)
	}
}

func pyFloat(f float64) string {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEnN") {
		s += ".0"
	}
	return s
}

// pyFloatNumber is f as a JSON number Python reads back as a float (with a
// fractional part: json.loads("5") is an int, json.loads("5.0") a float).
func pyFloatNumber(f float64) json.Number {
	if f != f || f > 1e308 || f < -1e308 {
		return json.Number("0.0")
	}
	return json.Number(pyFloat(f))
}
