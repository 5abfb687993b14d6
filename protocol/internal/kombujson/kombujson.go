// Package kombujson is the JSON of kombu's json serializer as the protocol
// package writes and reads it: Marshal writes what Python's json.loads reads
// back to the same values (time.Time as isoformat strings, no HTML escaping,
// sorted keys, no bare {"__type__", "__value__"} objects), Unmarshal reads
// kombu >= 5.3's type envelopes back into Go values, and Parse is a fast
// decoder that accepts exactly what encoding/json accepts.
//
// It is internal to protocol: Celery peers see its output only through
// the messages, results and replies the protocol package writes.
package kombujson

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/uuid"

	"morag-gpu/internal/pyfmt"
)

// kombuMaxDepth bounds nesting when marshalling: a value that contains
// itself would otherwise recurse until the stack overflows, which no
// recover catches.
const kombuMaxDepth = 1000

// Unmarshal decodes kombu JSON into v: numbers become json.Number and
// {"__type__","__value__"} envelopes (kombu >= 5.3) become Go values:
// datetime -> time.Time (naive ones in UTC), date -> time.Time at midnight
// UTC, time -> time.Time on January 1 of year 1, uuid -> canonical string,
// decimal -> json.Number (a string for NaN/Infinity), bytes and base64 ->
// []byte. An envelope of a type kombu does not know is an error, as in
// kombu's object_hook.
//
// v is any pointer encoding/json can decode into. Into *any the converted
// values land as they are; into other targets they travel through JSON again
// (time.Time as an ISO string, []byte as base64), so time.Time and []byte
// fields receive them.
func Unmarshal(data []byte, v any) error {
	// Most payloads carry no envelope: one decode straight into v. A key can
	// only be "__type__" if that text or an escape sequence is in the input.
	if !bytes.Contains(data, []byte("__type__")) && !bytes.Contains(data, []byte(`\u`)) {
		return DecodeNumbers(data, v)
	}
	var tree any
	if err := DecodeNumbers(data, &tree); err != nil {
		return err
	}
	tree, found, err := Unwrap(tree)
	if err != nil {
		return err
	}
	if p, ok := v.(*any); ok {
		*p = tree
		return nil
	}
	if rv := reflect.ValueOf(v); found && tree != nil && rv.Kind() == reflect.Pointer && !rv.IsNil() &&
		reflect.TypeOf(tree).AssignableTo(rv.Elem().Type()) {
		rv.Elem().Set(reflect.ValueOf(tree))
		return nil
	}
	if !found {
		return DecodeNumbers(data, v)
	}
	raw, err := Marshal(tree)
	if err != nil {
		return err
	}
	return DecodeNumbers(raw, v)
}

// DecodeNumbers is json.Unmarshal with UseNumber: Python ints have no
// size limit and must not be rounded through float64.
func DecodeNumbers(data []byte, v any) error {
	if p, ok := v.(*any); ok {
		tree, err := Parse(data)
		if err != nil {
			return err
		}
		*p = tree
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("protocol: empty JSON input")
		}
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("protocol: unexpected data after the JSON value at offset %d", dec.InputOffset())
	}
	return nil
}

// Unwrap replaces kombu type envelopes in a decoded tree, innermost
// first as kombu's object_hook does. found says whether there was any.
func Unwrap(v any) (any, bool, error) {
	switch x := v.(type) {
	case []any:
		found := false
		for i, e := range x {
			n, f, err := Unwrap(e)
			if err != nil {
				return nil, false, err
			}
			x[i] = n
			found = found || f
		}
		return x, found, nil
	case map[string]any:
		found := false
		for k, e := range x {
			switch e.(type) {
			case []any, map[string]any:
			default:
				continue // a scalar is never an envelope
			}
			n, f, err := Unwrap(e)
			if err != nil {
				return nil, false, err
			}
			if f {
				x[k] = n // unchanged otherwise: no write
			}
			found = found || f
		}
		if isKombuEnvelope(x) {
			n, err := kombuDecodeType(x["__type__"], x["__value__"])
			return n, true, err
		}
		return x, found, nil
	}
	return v, false, nil
}

// isKombuEnvelope is kombu's test: the keys are exactly __type__ and
// __value__.
func isKombuEnvelope(m map[string]any) bool {
	if len(m) != 2 {
		return false
	}
	_, t := m["__type__"]
	_, v := m["__value__"]
	return t && v
}

func kombuDecodeType(typ, value any) (any, error) {
	name, _ := typ.(string)
	s, isStr := value.(string)
	bad := func() error {
		return fmt.Errorf("protocol: kombu JSON: bad __value__ %s for __type__ %q", compactJSON(value), name)
	}
	switch name {
	case "datetime":
		if !isStr {
			return nil, bad()
		}
		t, err := pyfmt.FromISOFormat(s)
		if err != nil {
			return nil, fmt.Errorf("protocol: kombu JSON datetime: %w", err)
		}
		return t, nil
	case "date":
		t, err := pyfmt.FromISOFormat(s)
		if !isStr || err != nil {
			return nil, bad()
		}
		y, m, d := t.Date()
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC), nil
	case "time":
		h, mi, sec, ns, loc, ok := pyfmt.TimeFromISOFormat(s)
		if !isStr || !ok {
			return nil, bad()
		}
		return time.Date(1, 1, 1, h, mi, sec, ns, loc), nil
	case "decimal":
		if !isStr {
			return nil, bad()
		}
		if ValidNumber(s) {
			return json.Number(s), nil
		}
		return s, nil
	case "uuid":
		// kombu 5.3.0 wrote {"hex", "version"}, later {"hex"}; a plain
		// string is accepted too.
		if m, ok := value.(map[string]any); ok {
			s, isStr = m["hex"].(string)
		}
		if !isStr {
			return nil, bad()
		}
		u, err := uuid.Parse(s)
		if err != nil {
			return nil, bad()
		}
		return u.String(), nil
	case "bytes":
		if !isStr {
			return nil, bad()
		}
		return []byte(s), nil
	case "base64":
		if !isStr {
			return nil, bad()
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, bad()
		}
		return b, nil
	}
	return nil, fmt.Errorf("protocol: kombu JSON: unsupported __type__ %s (kombu raises ValueError('Unsupported type') for it too)", compactJSON(typ))
}

// compactJSON renders v for an error message.
func compactJSON(v any) string {
	b, err := Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// Marshal encodes v as JSON Python's json.loads reads (no HTML escaping).
// time.Time values are written as ISO-8601 strings (pyfmt.ISOFormat). Map keys are
// sorted. It refuses an object whose only keys are "__type__" and
// "__value__": kombu >= 5.3 would decode it as a type envelope (and reject
// the whole message for an unknown type). Numbers: json.Number is written
// verbatim; float64(2) is written 2, which Python reads as int.
func Marshal(v any) ([]byte, error) {
	w := Writer{Buf: make([]byte, 0, 64)}
	if err := w.Value(v); err != nil {
		return nil, err
	}
	return w.Buf, nil
}

// Writer appends JSON to buf. Common dynamic types are written
// directly; anything else goes through encoding/json once.
type Writer struct {
	Buf   []byte
	depth int
	// Verbatim writes bare type envelopes and raw JSON as they are: for
	// re-encoding what someone else wrote, never for our own values.
	Verbatim bool
	// Ext, when set, is offered every value of a type the writer does not
	// know before the generic path (structs through encoding/json, other
	// slices and maps walked): done says it wrote v (or failed to). The
	// protocol package writes Celery's canvas signatures with it.
	Ext func(w *Writer, v any) (done bool, err error)
}

var errBareEnvelope = errors.New(`protocol: cannot encode an object whose only keys are "__type__" and "__value__": kombu (>= 5.3) would decode it as a type envelope; add another key or rename one`)

func (w *Writer) Value(v any) error {
	switch x := v.(type) {
	case nil:
		w.Buf = append(w.Buf, "null"...)
	case string:
		w.Buf = AppendString(w.Buf, x)
	case json.Number:
		return w.number(x)
	case bool:
		w.Buf = strconv.AppendBool(w.Buf, x)
	case int:
		w.Buf = strconv.AppendInt(w.Buf, int64(x), 10)
	case int64:
		w.Buf = strconv.AppendInt(w.Buf, x, 10)
	case int32:
		w.Buf = strconv.AppendInt(w.Buf, int64(x), 10)
	case int16:
		w.Buf = strconv.AppendInt(w.Buf, int64(x), 10)
	case int8:
		w.Buf = strconv.AppendInt(w.Buf, int64(x), 10)
	case uint:
		w.Buf = strconv.AppendUint(w.Buf, uint64(x), 10)
	case uint64:
		w.Buf = strconv.AppendUint(w.Buf, x, 10)
	case uint32:
		w.Buf = strconv.AppendUint(w.Buf, uint64(x), 10)
	case uint16:
		w.Buf = strconv.AppendUint(w.Buf, uint64(x), 10)
	case uint8:
		w.Buf = strconv.AppendUint(w.Buf, uint64(x), 10)
	case float64:
		return w.float(x, 64)
	case float32:
		return w.float(float64(x), 32)
	case time.Time:
		w.Buf = append(w.Buf, '"')
		w.Buf = pyfmt.AppendISOFormat(w.Buf, x)
		w.Buf = append(w.Buf, '"')
	case *time.Time:
		if x == nil {
			w.Buf = append(w.Buf, "null"...)
			return nil
		}
		return w.Value(*x)
	case []any:
		if x == nil {
			w.Buf = append(w.Buf, "null"...)
			return nil
		}
		if err := w.Enter(); err != nil {
			return err
		}
		w.Buf = append(w.Buf, '[')
		for i, e := range x {
			if i > 0 {
				w.Buf = append(w.Buf, ',')
			}
			if err := w.Value(e); err != nil {
				return err
			}
		}
		w.Buf = append(w.Buf, ']')
		w.depth--
	case map[string]any:
		if x == nil {
			w.Buf = append(w.Buf, "null"...)
			return nil
		}
		if isKombuEnvelope(x) && !w.Verbatim {
			return errBareEnvelope
		}
		if err := w.Enter(); err != nil {
			return err
		}
		w.Buf = append(w.Buf, '{')
		for i, k := range SortedKeys(x) {
			if i > 0 {
				w.Buf = append(w.Buf, ',')
			}
			w.Buf = AppendString(w.Buf, k)
			w.Buf = append(w.Buf, ':')
			if err := w.Value(x[k]); err != nil {
				return err
			}
		}
		w.Buf = append(w.Buf, '}')
		w.depth--
	case []string:
		if x == nil {
			w.Buf = append(w.Buf, "null"...)
			return nil
		}
		w.Buf = append(w.Buf, '[')
		for i, e := range x {
			if i > 0 {
				w.Buf = append(w.Buf, ',')
			}
			w.Buf = AppendString(w.Buf, e)
		}
		w.Buf = append(w.Buf, ']')
	case json.RawMessage:
		return w.raw(x)
	default:
		if w.Ext != nil {
			if done, err := w.Ext(w, v); done {
				return err
			}
		}
		return w.other(v)
	}
	return nil
}

// Enter counts one level of nesting, failing past the limit; Leave undoes
// it. An Ext that writes a container brackets its Value calls with them.
func (w *Writer) Enter() error {
	w.depth++
	if w.depth > kombuMaxDepth {
		return fmt.Errorf("protocol: cannot encode a value nested deeper than %d levels (does it contain itself?)", kombuMaxDepth)
	}
	return nil
}

// Leave ends a level begun by Enter.
func (w *Writer) Leave() { w.depth-- }

func (w *Writer) number(n json.Number) error {
	if n == "" {
		// encoding/json writes an empty Number as 0, too.
		w.Buf = append(w.Buf, '0')
		return nil
	}
	if !ValidNumber(string(n)) {
		return fmt.Errorf("protocol: cannot encode json.Number %q: not a JSON number", string(n))
	}
	w.Buf = append(w.Buf, n...)
	return nil
}

// float writes f as encoding/json does (2.0 as 2), not as json.dumps would
// (pyfmt.AppendJSONFloat): a Go float64 does not know whether it came from
// a JSON int, and a body must round-trip what a Go caller decoded with
// encoding/json. Events and control replies, which Python checks with
// isinstance(x, float), use the json.dumps form (see protocol/internal/fanout).
func (w *Writer) float(f float64, bits int) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("protocol: cannot encode float %v: JSON has no NaN or Infinity", f)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	w.Buf = strconv.AppendFloat(w.Buf, f, format, -1, bits)
	if format == 'e' {
		// 1e-07 -> 1e-7, as encoding/json.
		n := len(w.Buf)
		if n >= 4 && w.Buf[n-4] == 'e' && w.Buf[n-3] == '-' && w.Buf[n-2] == '0' {
			w.Buf[n-2] = w.Buf[n-1]
			w.Buf = w.Buf[:n-1]
		}
	}
	return nil
}

// raw copies already-encoded JSON after checking it, and re-walks it when it
// might hide a bare type envelope.
func (w *Writer) raw(b []byte) error {
	if len(b) == 0 {
		w.Buf = append(w.Buf, "null"...)
		return nil
	}
	if !json.Valid(b) {
		return errors.New("protocol: cannot encode json.RawMessage: invalid JSON")
	}
	if !w.Verbatim && (bytes.Contains(b, []byte("__type__")) || bytes.Contains(b, []byte(`\u`))) {
		var tree any
		if err := DecodeNumbers(b, &tree); err != nil {
			return err
		}
		return w.Value(tree)
	}
	w.Buf = append(w.Buf, bytes.TrimSpace(b)...)
	return nil
}

// other handles named and composite types. Slices and string-keyed maps are
// walked here so that time.Time inside them is written the Python way;
// structs and json.Marshalers go through encoding/json (without HTML
// escaping), whose output is re-checked for type envelopes.
func (w *Writer) other(v any) error {
	if _, ok := v.(json.Marshaler); !ok {
		rv := reflect.ValueOf(v)
		switch rv.Kind() {
		case reflect.Pointer, reflect.Interface:
			if rv.IsNil() {
				w.Buf = append(w.Buf, "null"...)
				return nil
			}
			if err := w.Enter(); err != nil {
				return err
			}
			err := w.Value(rv.Elem().Interface())
			w.depth--
			return err
		case reflect.Slice, reflect.Array:
			if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
				break // []byte: base64 string, as encoding/json
			}
			if rv.Kind() == reflect.Slice && rv.IsNil() {
				w.Buf = append(w.Buf, "null"...)
				return nil
			}
			if err := w.Enter(); err != nil {
				return err
			}
			w.Buf = append(w.Buf, '[')
			for i := 0; i < rv.Len(); i++ {
				if i > 0 {
					w.Buf = append(w.Buf, ',')
				}
				if err := w.Value(rv.Index(i).Interface()); err != nil {
					return err
				}
			}
			w.Buf = append(w.Buf, ']')
			w.depth--
			return nil
		case reflect.Map:
			if rv.Type().Key().Kind() != reflect.String {
				break
			}
			if rv.IsNil() {
				w.Buf = append(w.Buf, "null"...)
				return nil
			}
			keys := make([]string, 0, rv.Len())
			vals := make(map[string]reflect.Value, rv.Len())
			for it := rv.MapRange(); it.Next(); {
				k := it.Key().String()
				keys = append(keys, k)
				vals[k] = it.Value()
			}
			if len(keys) == 2 && vals["__type__"].IsValid() && vals["__value__"].IsValid() {
				return errBareEnvelope
			}
			slices.Sort(keys)
			if err := w.Enter(); err != nil {
				return err
			}
			w.Buf = append(w.Buf, '{')
			for i, k := range keys {
				if i > 0 {
					w.Buf = append(w.Buf, ',')
				}
				w.Buf = AppendString(w.Buf, k)
				w.Buf = append(w.Buf, ':')
				if err := w.Value(vals[k].Interface()); err != nil {
					return err
				}
			}
			w.Buf = append(w.Buf, '}')
			w.depth--
			return nil
		}
	}
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("protocol: encode %T: %w", v, err)
	}
	return w.raw(bytes.TrimSuffix(tmp.Bytes(), []byte("\n")))
}

func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

const hexDigits = "0123456789abcdef"

// AppendString quotes s as encoding/json does without HTML escaping:
// control characters escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and
// U+2029 escaped.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// ValidNumber reports whether s is a JSON number literal (the grammar
// encoding/json checks json.Number against).
func ValidNumber(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
		if s == "" {
			return false
		}
	}
	switch {
	case s[0] == '0':
		s = s[1:]
	case '1' <= s[0] && s[0] <= '9':
		s = s[1:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	default:
		return false
	}
	if len(s) >= 2 && s[0] == '.' && '0' <= s[1] && s[1] <= '9' {
		s = s[2:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	if len(s) >= 2 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s[0] == '+' || s[0] == '-' {
			s = s[1:]
			if s == "" {
				return false
			}
		}
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	return s == ""
}

// NumberEnd is where the number token that starts at data[i] ends: past
// the characters a JSON number may hold (ValidNumber then checks their
// order).
func NumberEnd(data []byte, i int) int {
	for i < len(data) {
		c := data[i]
		if '0' <= c && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			i++
			continue
		}
		break
	}
	return i
}

// jsonMaxDepth is encoding/json's nesting limit, kept so that both decoders
// accept the same documents.
const jsonMaxDepth = 10000

// Parse decodes one JSON document into the values encoding/json with
// UseNumber produces for an `any` target (map[string]any, []any, string,
// json.Number, bool, nil), with the same acceptance and the same string
// repairs (invalid UTF-8 and lone surrogates become U+FFFD). It exists for
// speed: task bodies are mostly long strings, which it copies with one scan
// instead of encoding/json's byte-by-byte state machine, run twice.
func Parse(data []byte) (any, error) {
	pairs := jsonPairPool.Get().(*[]jsonPair)
	p := jsonParser{data: data, pairs: (*pairs)[:0]}
	defer func() {
		if cap(p.pairs) <= 1024 {
			clear(p.pairs[:cap(p.pairs)])
			*pairs = p.pairs[:0]
			jsonPairPool.Put(pairs)
		}
	}()
	p.ws()
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.data) {
		return nil, p.errorf("unexpected data after the JSON value")
	}
	return v, nil
}

type jsonParser struct {
	data  []byte
	i     int
	depth int
	// pairs holds the members of the objects being read, innermost last,
	// so that each map is made once at its final size.
	pairs []jsonPair
}

var jsonPairPool = sync.Pool{New: func() any { s := make([]jsonPair, 0, 32); return &s }}

type jsonPair struct {
	k string
	v any
}

func (p *jsonParser) errorf(format string, args ...any) error {
	return fmt.Errorf("protocol: invalid JSON at offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *jsonParser) ws() { p.i = SpaceEnd(p.data, p.i) }

// SpaceEnd is where the JSON whitespace that starts at data[i] ends.
func SpaceEnd(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func (p *jsonParser) value() (any, error) {
	if p.i >= len(p.data) {
		return nil, p.errorf("unexpected end of input")
	}
	switch c := p.data[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		return p.str()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	default:
		return nil, p.errorf("unexpected character %q", c)
	}
}

func (p *jsonParser) literal(word string) error {
	if !bytes.HasPrefix(p.data[p.i:], []byte(word)) {
		return p.errorf("invalid literal")
	}
	p.i += len(word)
	return nil
}

func (p *jsonParser) enter() error {
	p.depth++
	if p.depth > jsonMaxDepth {
		return p.errorf("nested deeper than %d levels", jsonMaxDepth)
	}
	return nil
}

func (p *jsonParser) object() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.i++ // {
	p.ws()
	if p.i < len(p.data) && p.data[p.i] == '}' {
		p.i++
		p.depth--
		return make(map[string]any), nil
	}
	base := len(p.pairs) // an error leaves pairs behind: the parse ends there
	for {
		if p.i >= len(p.data) || p.data[p.i] != '"' {
			return nil, p.errorf("expected a string key")
		}
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		p.ws()
		if p.i >= len(p.data) || p.data[p.i] != ':' {
			return nil, p.errorf("expected ':' after an object key")
		}
		p.i++
		p.ws()
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.pairs = append(p.pairs, jsonPair{k, v})
		p.ws()
		if p.i >= len(p.data) {
			return nil, p.errorf("unexpected end of input in an object")
		}
		switch p.data[p.i] {
		case ',':
			p.i++
			p.ws()
		case '}':
			p.i++
			p.depth--
			m := make(map[string]any, len(p.pairs)-base)
			for _, kv := range p.pairs[base:] {
				m[kv.k] = kv.v // a repeated key keeps its last value, as encoding/json
			}
			clear(p.pairs[base:])
			p.pairs = p.pairs[:base]
			return m, nil
		default:
			return nil, p.errorf("expected ',' or '}' in an object")
		}
	}
}

func (p *jsonParser) array() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.i++ // [
	a := []any{}
	p.ws()
	if p.i < len(p.data) && p.data[p.i] == ']' {
		p.i++
		p.depth--
		return a, nil
	}
	for {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		p.ws()
		if p.i >= len(p.data) {
			return nil, p.errorf("unexpected end of input in an array")
		}
		switch p.data[p.i] {
		case ',':
			p.i++
			p.ws()
		case ']':
			p.i++
			p.depth--
			return a, nil
		default:
			return nil, p.errorf("expected ',' or ']' in an array")
		}
	}
}

func (p *jsonParser) number() (any, error) {
	start := p.i
	p.i = NumberEnd(p.data, p.i)
	s := string(p.data[start:p.i])
	if !ValidNumber(s) {
		p.i = start
		return nil, p.errorf("invalid number %q", s)
	}
	return json.Number(s), nil
}

// key reads an object key starting at its opening quote. The keys of
// Celery's envelopes, headers and result metas are returned as constants,
// without an allocation each.
func (p *jsonParser) key() (string, error) {
	if end := bytes.IndexByte(p.data[p.i+1:], '"'); end >= 0 {
		seg := p.data[p.i+1 : p.i+1+end]
		if k, ok := knownKey(seg); ok {
			p.i += end + 2
			return k, nil
		}
	}
	return p.str()
}

// knownKey returns the constant for a key Celery messages use (the switch
// compares without converting seg).
func knownKey(seg []byte) (string, bool) {
	switch string(seg) {
	case "body":
		return "body", true
	case "content-encoding":
		return "content-encoding", true
	case "content-type":
		return "content-type", true
	case "headers":
		return "headers", true
	case "properties":
		return "properties", true
	case "lang":
		return "lang", true
	case "task":
		return "task", true
	case "id":
		return "id", true
	case "shadow":
		return "shadow", true
	case "eta":
		return "eta", true
	case "expires":
		return "expires", true
	case "group":
		return "group", true
	case "group_index":
		return "group_index", true
	case "retries":
		return "retries", true
	case "timelimit":
		return "timelimit", true
	case "root_id":
		return "root_id", true
	case "parent_id":
		return "parent_id", true
	case "argsrepr":
		return "argsrepr", true
	case "kwargsrepr":
		return "kwargsrepr", true
	case "origin":
		return "origin", true
	case "ignore_result":
		return "ignore_result", true
	case "stamped_headers":
		return "stamped_headers", true
	case "stamps":
		return "stamps", true
	case "replaced_task_nesting":
		return "replaced_task_nesting", true
	case "correlation_id":
		return "correlation_id", true
	case "reply_to":
		return "reply_to", true
	case "delivery_mode":
		return "delivery_mode", true
	case "delivery_info":
		return "delivery_info", true
	case "exchange":
		return "exchange", true
	case "routing_key":
		return "routing_key", true
	case "priority":
		return "priority", true
	case "body_encoding":
		return "body_encoding", true
	case "delivery_tag":
		return "delivery_tag", true
	case "redelivered":
		return "redelivered", true
	case "callbacks":
		return "callbacks", true
	case "errbacks":
		return "errbacks", true
	case "chain":
		return "chain", true
	case "chord":
		return "chord", true
	case "status":
		return "status", true
	case "result":
		return "result", true
	case "traceback":
		return "traceback", true
	case "children":
		return "children", true
	case "date_done":
		return "date_done", true
	case "task_id":
		return "task_id", true
	case "__type__":
		return "__type__", true
	case "__value__":
		return "__value__", true
	}
	return "", false
}

// str reads a string starting at the opening quote.
func (p *jsonParser) str() (string, error) {
	p.i++ // "
	start := p.i
	escaped, ascii := false, true
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			seg := p.data[start:p.i]
			p.i++
			if !escaped && (ascii || utf8.Valid(seg)) {
				return string(seg), nil
			}
			return p.unquote(seg)
		case c == '\\':
			escaped = true
			p.i += 2 // the escaped byte cannot end the string
		case c < 0x20:
			return "", p.errorf("control character %#x in a string", c)
		case c >= utf8.RuneSelf:
			ascii = false
			p.i++
		default:
			p.i++
		}
	}
	return "", p.errorf("unterminated string")
}

// unquote decodes a string body with escapes or non-ASCII bytes the way
// encoding/json does.
func (p *jsonParser) unquote(s []byte) (string, error) {
	b := make([]byte, 0, len(s))
	for r := 0; r < len(s); {
		c := s[r]
		switch {
		case c == '\\':
			if r+1 >= len(s) {
				return "", p.errorf("bad escape in a string")
			}
			switch s[r+1] {
			case '"', '\\', '/':
				b = append(b, s[r+1])
				r += 2
			case 'b':
				b = append(b, '\b')
				r += 2
			case 'f':
				b = append(b, '\f')
				r += 2
			case 'n':
				b = append(b, '\n')
				r += 2
			case 'r':
				b = append(b, '\r')
				r += 2
			case 't':
				b = append(b, '\t')
				r += 2
			case 'u':
				rr, ok := hex4(s[r+2:])
				if !ok {
					return "", p.errorf("bad \\u escape in a string")
				}
				r += 6
				if utf16.IsSurrogate(rr) {
					if len(s) >= r+2 && s[r] == '\\' && s[r+1] == 'u' {
						if rr1, ok := hex4(s[r+2:]); ok {
							if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
								b = utf8.AppendRune(b, dec)
								r += 6
								continue
							}
						}
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
			default:
				return "", p.errorf("bad escape \\%c in a string", s[r+1])
			}
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			if rr == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, unicode.ReplacementChar)
			} else {
				b = append(b, s[r:r+size]...)
			}
			r += size
		}
	}
	return string(b), nil
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}
