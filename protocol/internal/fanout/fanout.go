// Package fanout is the kombu plumbing of the messages the protocol
// package PUBLISHes or LPUSHes outside the task queues (events, pidbox
// requests and replies): the envelope (Envelope, ParseEnvelope) and JSON
// as Python's json.dumps writes it (Marshal, Float), which Python readers
// take back with the same types.
//
// It is internal to protocol.
package fanout

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"morag-gpu/internal/pyfmt"
)

// Float is a float64 that is always written with a fractional part (2.0,
// not 2): Python code that checks isinstance(x, float), such as mingle's
// revoked timestamps, rejects a JSON integer. Plain float64 values inside
// the maps and slices Marshal writes (what EventDispatcher.Send and
// Control.Broadcast are given, what a ControlHandler returns) are written
// the same way; struct fields go through encoding/json, so the protocol
// package gives those the type Float.
type Float float64

// MarshalJSON writes f as Python's json.dumps writes a float. NaN and
// infinities, which JSON cannot hold, become null.
func (f Float) MarshalJSON() ([]byte, error) {
	return appendFloat(nil, float64(f), 64), nil
}

// Ordered is a JSON object whose keys keep their order: Python writes dict
// keys in insertion order and some readers (people, byte-level tests)
// expect the same order. Marshal writes it as it lists its fields.
type Ordered interface {
	Len() int
	Field(i int) (key string, value any)
}

// object is the Ordered the envelope is built of.
type object []field

type field struct {
	key   string
	value any
}

func (o object) Len() int                  { return len(o) }
func (o object) Field(i int) (string, any) { return o[i].key, o[i].value }

// Envelope builds the kombu envelope (section 1.1 of the wire
// reference) around a JSON body. It writes what Marshal would write for
// the same fields in this order, appending straight into one buffer: a
// worker with task events on builds three per task.
func Envelope(body []byte, headers Ordered, deliveryMode int, exchange, routingKey string) ([]byte, error) {
	if headers == nil {
		headers = object{}
	}
	var b bytes.Buffer
	b.Grow(base64.StdEncoding.EncodedLen(len(body)) + 320 + len(exchange) + len(routingKey))
	b.WriteString(`{"body": "`)
	b.Write(base64.StdEncoding.AppendEncode(b.AvailableBuffer(), body))
	b.WriteString(`", "content-encoding": "utf-8", "content-type": "application/json", "headers": `)
	if err := writeValue(&b, headers, 1); err != nil {
		return nil, err
	}
	b.WriteString(`, "properties": {"delivery_mode": `)
	b.WriteString(strconv.Itoa(deliveryMode))
	b.WriteString(`, "delivery_info": {"exchange": `)
	writeString(&b, exchange)
	b.WriteString(`, "routing_key": `)
	writeString(&b, routingKey)
	b.WriteString(`}, "priority": 0, "body_encoding": "base64", "delivery_tag": "`)
	b.WriteString(uuid.NewString())
	b.WriteString(`"}}`)
	return b.Bytes(), nil
}

// Message is a decoded envelope. JSON numbers are json.Number.
type Message struct {
	Headers    map[string]any
	Exchange   string
	RoutingKey string
	Body       any
}

// maxBody bounds a decompressed body so that a hostile message cannot
// exhaust memory.
const maxBody = 64 << 20

// ParseEnvelope decodes an envelope as kombu's virtual Message does:
// body_encoding base64 or verbatim, optional zlib compression, JSON body.
func ParseEnvelope(data []byte) (*Message, error) {
	var raw any
	if err := Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("message is not JSON: %w", err)
	}
	env, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("message is a JSON %s, want a kombu envelope object", Kind(raw))
	}
	bodyStr, ok := env["body"].(string)
	if !ok || bodyStr == "" {
		return nil, errors.New("envelope has no string body")
	}
	if ct, _ := env["content-type"].(string); ct != "" && ct != "application/json" {
		return nil, fmt.Errorf("unsupported content-type %q (only application/json)", ct)
	}
	headers, ok := env["headers"].(map[string]any)
	if !ok && env["headers"] != nil {
		return nil, fmt.Errorf("envelope headers are a JSON %s, want an object", Kind(env["headers"]))
	}
	props, ok := env["properties"].(map[string]any)
	if !ok && env["properties"] != nil {
		return nil, fmt.Errorf("envelope properties are a JSON %s, want an object", Kind(env["properties"]))
	}
	info, _ := props["delivery_info"].(map[string]any)
	msg := &Message{Headers: headers}
	msg.Exchange, _ = info["exchange"].(string)
	msg.RoutingKey, _ = info["routing_key"].(string)

	body := []byte(bodyStr)
	switch enc, _ := props["body_encoding"].(string); enc {
	case "", "utf-8":
	case "base64":
		dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(bodyStr))
		if err != nil {
			return nil, fmt.Errorf("body is not valid base64: %w", err)
		}
		body = dec
	default:
		return nil, fmt.Errorf("unsupported body_encoding %q", enc)
	}
	if c, _ := headers["compression"].(string); c != "" {
		if c != "application/x-gzip" && c != "zlib" {
			return nil, fmt.Errorf("unsupported compression %q", c)
		}
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("body is not zlib data: %w", err)
		}
		body, err = io.ReadAll(io.LimitReader(zr, maxBody+1))
		if err != nil {
			return nil, fmt.Errorf("decompress body: %w", err)
		}
		if len(body) > maxBody {
			return nil, errors.New("decompressed body exceeds 64 MiB")
		}
	}
	if err := Unmarshal(body, &msg.Body); err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	return msg, nil
}

// Kind names the JSON type of a decoded value, for error messages.
func Kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number, float64:
		return "number"
	case bool:
		return "boolean"
	}
	return fmt.Sprintf("%T", v)
}

// Unmarshal decodes exactly one JSON value, numbers as json.Number.
func Unmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// AsFloat reads a JSON number (json.Number, any Go number) as float64.
func AsFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case Float:
		return float64(x), true
	case float64:
		return x, true
	case float32:
		return float64(x), true
	}
	rv := reflect.ValueOf(v)
	switch {
	case rv.CanInt():
		return float64(rv.Int()), true
	case rv.CanUint():
		return float64(rv.Uint()), true
	}
	return 0, false
}

// AsInt reads a JSON number as int64, truncating a float.
func AsInt(v any) (int64, bool) {
	if n, ok := v.(json.Number); ok {
		if i, err := n.Int64(); err == nil {
			return i, true
		}
	}
	f, ok := AsFloat(v)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return int64(f), true
}

// Marshal encodes v as JSON that Python reads back with the same types:
// floats keep a fractional part, maps have sorted keys, nil slices and maps
// are [] and {} (Python callers iterate over them), HTML is not escaped.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(512) // an event's or a reply's size: no regrowth on the way
	if err := writeValue(&b, v, 0); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

const maxDepth = 100

func writeValue(b *bytes.Buffer, v any, depth int) error {
	if depth > maxDepth {
		return errors.New("value nested too deeply (a cycle?)")
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
		return nil
	case Ordered:
		b.WriteByte('{')
		for i := range x.Len() {
			if i > 0 {
				b.WriteString(", ")
			}
			key, value := x.Field(i)
			writeString(b, key)
			b.WriteString(": ")
			if err := writeValue(b, value, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case string:
		writeString(b, x)
		return nil
	case bool:
		b.WriteString(strconv.FormatBool(x))
		return nil
	case Float:
		b.Write(appendFloat(nil, float64(x), 64))
		return nil
	case float64:
		b.Write(appendFloat(nil, x, 64))
		return nil
	case float32:
		b.Write(appendFloat(nil, float64(x), 32))
		return nil
	case json.Number:
		if !validNumber(string(x)) {
			return fmt.Errorf("invalid json.Number %q", string(x))
		}
		b.WriteString(string(x))
		return nil
	case json.RawMessage:
		if !json.Valid(x) {
			return errors.New("invalid json.RawMessage")
		}
		b.Write(x)
		return nil
	case json.Marshaler:
		return writeMarshaler(b, x)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			b.WriteString("null")
			return nil
		}
		return writeValue(b, rv.Elem().Interface(), depth+1)
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return writeMarshaler(b, v)
		}
		keys := make([]string, 0, rv.Len())
		byKey := make(map[string]reflect.Value, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			k := it.Key().String()
			keys = append(keys, k)
			byKey[k] = it.Value()
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			writeString(b, k)
			b.WriteString(": ")
			if err := writeValue(b, byKey[k].Interface(), depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case reflect.Slice, reflect.Array:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return writeMarshaler(b, v) // base64, as encoding/json
		}
		b.WriteByte('[')
		for i := 0; i < rv.Len(); i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			if err := writeValue(b, rv.Index(i).Interface(), depth+1); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case reflect.Float32, reflect.Float64:
		b.Write(appendFloat(nil, rv.Float(), rv.Type().Bits()))
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.WriteString(strconv.FormatInt(rv.Int(), 10))
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		b.WriteString(strconv.FormatUint(rv.Uint(), 10))
		return nil
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(rv.Bool()))
		return nil
	case reflect.String:
		writeString(b, rv.String())
		return nil
	}
	return writeMarshaler(b, v)
}

// writeMarshaler encodes v with encoding/json, without HTML escaping.
func writeMarshaler(b *bytes.Buffer, v any) error {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Write(bytes.TrimRight(tmp.Bytes(), "\n"))
	return nil
}

func writeString(b *bytes.Buffer, s string) {
	// Most strings (ids, names, node names, base64) need no escaping:
	// write them directly instead of through an encoder per string, which
	// dominated the cost of a task event.
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		b.Grow(len(s) + 2)
		b.WriteByte('"')
		b.WriteString(s)
		b.WriteByte('"')
		return
	}
	// encoding/json never fails on a string.
	_ = writeMarshaler(b, s)
}

// appendFloat formats f as Python's json.dumps does (2.0, 1e-07),
// except that NaN and the infinities become null: Go readers of events and
// replies use encoding/json, which rejects json.dumps's NaN and Infinity.
func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	if bits == 32 {
		return pyfmt.AppendJSONFloat32(dst, float32(f))
	}
	return pyfmt.AppendJSONFloat(dst, f)
}

func validNumber(s string) bool {
	if s == "" || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) {
		return false
	}
	var n json.Number
	return json.Unmarshal([]byte(s), &n) == nil
}
