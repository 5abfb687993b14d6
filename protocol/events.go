package protocol

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"morag-gpu/internal/pyfmt"
)

// Event is one Celery event: standard fields (type, hostname, timestamp,
// utcoffset, pid, clock) plus the event's own fields, in a map. Received
// events hold numbers as json.Number.
type Event map[string]any

// Type returns event["type"], e.g. "worker-heartbeat".
func (e Event) Type() string { s, _ := e["type"].(string); return s }

// Hostname returns the node name of the sender, e.g. "celery@host".
func (e Event) Hostname() string { s, _ := e["hostname"].(string); return s }

// timestamp returns the sender's event time in seconds since the epoch (0
// when missing). Python receivers correct it by utcoffset; this does not.
func (e Event) timestamp() float64 { f, _ := fanoutFloat(e["timestamp"]); return f }

// clock returns the sender's Lamport clock value (0 when missing).
func (e Event) clock() int64 { n, _ := fanoutInt(e["clock"]); return n }

// jsonFloat is a float64 that is always written with a fractional part (2.0,
// not 2): Python code that checks isinstance(x, float), such as mingle's
// revoked timestamps, rejects a JSON integer. Plain float64 values inside
// the maps and slices given to EventDispatcher.Send, Control.Broadcast or
// returned by a ControlHandler are written the same way; struct fields go
// through encoding/json, so give them the type jsonFloat.
type jsonFloat float64

// MarshalJSON writes f as Python's json.dumps writes a float. NaN and
// infinities, which JSON cannot hold, become null.
func (f jsonFloat) MarshalJSON() ([]byte, error) {
	return appendFanoutFloat(nil, float64(f), 64), nil
}

// LamportClock is Celery's logical clock (kombu.clocks.LamportClock). A
// node's events, control replies and mingle share one, as app.clock does in
// Python. The zero value is ready to use; it is safe for concurrent use.
type LamportClock struct {
	mu    sync.Mutex
	value int64
}

// forward advances the clock for a local event and returns the new value.
func (c *LamportClock) forward() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.value++
	return c.value
}

// adjust merges a clock value received from another node: max(local,
// other) + 1.
func (c *LamportClock) adjust(other int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.value = max(c.value, other) + 1
	return c.value
}

// read is the current value.
func (c *LamportClock) read() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.value
}

// NodeOption configures an EventDispatcher, a Mailbox or ReceiveEvents.
type NodeOption func(*nodeConfig)

type nodeConfig struct {
	clock *LamportClock
	log   zerolog.Logger
}

func newNodeConfig(opts []NodeOption) nodeConfig {
	cfg := nodeConfig{log: zerolog.New(os.Stderr).With().Timestamp().Logger()}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if cfg.clock == nil {
		cfg.clock = new(LamportClock)
	}
	return cfg
}

// WithClock makes a node use clock, so that its events, control replies and
// received events advance one Lamport clock as Celery's app.clock does.
// Without it each gets a clock of its own.
func WithClock(clock *LamportClock) NodeOption {
	return func(c *nodeConfig) { c.clock = clock }
}

// WithLogger sets where dropped messages and reconnects are logged
// (default: JSON lines on stderr).
func WithLogger(log zerolog.Logger) NodeOption {
	return func(c *nodeConfig) { c.log = log }
}

// EventDispatcher publishes events on the celeryev fanout exchange
// (PUBLISH /{db}.celeryev/<group>.<action>), as celery.events.EventDispatcher
// does. It is safe for concurrent use and starts no goroutines.
type EventDispatcher struct {
	pool     *redis.Pool
	hostname string
	channel  string // keyPrefix + "/{db}.celeryev/"
	pid      int
	clock    *LamportClock
}

// NewEventDispatcher creates a dispatcher for the node hostname (e.g.
// "celery@host") on database db. keyPrefix is kombu's global_keyprefix.
func NewEventDispatcher(pool *redis.Pool, db int, hostname, keyPrefix string, opts ...NodeOption) *EventDispatcher {
	cfg := newNodeConfig(opts)
	return &EventDispatcher{
		pool:     pool,
		hostname: hostname,
		channel:  keyPrefix + eventChannel(db, ""),
		pid:      os.Getpid(),
		clock:    cfg.clock,
	}
}

// eventStandardFields are written first, in Python's order.
var eventStandardFields = [...]string{"hostname", "utcoffset", "pid", "clock"}

// Send publishes an event of type typ (e.g. "task-started") with fields.
// The standard fields are added in Python's key order (hostname, utcoffset,
// pid, clock, fields sorted by name, timestamp, type); a standard field
// given in fields overrides the computed value (e.g. the pid of the process
// that ran a task), and a "timestamp" field (number or time.Time) replaces
// the current time. Floats are written with a fractional part.
func (d *EventDispatcher) Send(ctx context.Context, typ string, fields map[string]any) error {
	if d.pool == nil {
		return errors.New("protocol: send event: dispatcher has no redis pool")
	}
	channel, env, err := d.Encode(typ, fields)
	if err != nil {
		return err
	}
	conn, err := d.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("protocol: send event %s: get redis connection: %w", typ, err)
	}
	defer conn.Close()
	if _, err := redis.DoContext(conn, ctx, "PUBLISH", channel, env); err != nil {
		return fmt.Errorf("protocol: send event %s: PUBLISH %s: %w", typ, channel, err)
	}
	return nil
}

// Encode builds the event Send would publish and returns its channel and
// envelope, for callers that publish it in a batch of their own (a worker's
// group commit). It advances the clock.
func (d *EventDispatcher) Encode(typ string, fields map[string]any) (channel string, envelope []byte, err error) {
	if typ == "" {
		return "", nil, errors.New("protocol: send event: empty event type")
	}
	now := time.Now()
	std := map[string]any{
		"hostname":  d.hostname,
		"utcoffset": pythonUTCOffset(now),
		"pid":       d.pid,
		"clock":     d.clock.forward(),
	}
	ev := make(fanoutObject, 0, len(eventStandardFields)+len(fields)+2)
	for _, k := range eventStandardFields {
		v := std[k]
		if fv, ok := fields[k]; ok {
			v = fv
		}
		ev = append(ev, fanoutField{k, v})
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if _, isStd := std[k]; !isStd && k != "timestamp" && k != "type" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		ev = append(ev, fanoutField{k, fields[k]})
	}
	ts := jsonFloat(float64(now.UnixMicro()) / 1e6)
	if v, ok := fields["timestamp"]; ok {
		if t, isTime := v.(time.Time); isTime {
			ts = jsonFloat(float64(t.UnixMicro()) / 1e6)
		} else if f, isNum := fanoutFloat(v); isNum {
			ts = jsonFloat(f)
		}
	}
	ev = append(ev, fanoutField{"timestamp", ts}, fanoutField{"type", typ})

	body, err := fanoutJSON(ev)
	if err != nil {
		return "", nil, fmt.Errorf("protocol: send event %s: encode fields: %w", typ, err)
	}
	routingKey := strings.ReplaceAll(typ, "-", ".")
	env, err := fanoutEnvelope(body, fanoutObject{{"hostname", d.hostname}}, 1, eventExchange, routingKey)
	if err != nil {
		return "", nil, fmt.Errorf("protocol: send event %s: %w", typ, err)
	}
	return d.channel + routingKey, env, nil
}

// Clock is the current value of the dispatcher's Lamport clock.
func (d *EventDispatcher) Clock() int64 { return d.clock.read() }

// adjust merges a clock value received from another node.
func (d *EventDispatcher) adjust(other int64) { d.clock.adjust(other) }

// ReceiveEvents PSUBSCRIBEs /{db}.celeryev/<pattern> (pattern "*" for all
// events, "worker.*" for worker events; kombu's "#" is accepted as "*") and
// calls fn for each event until ctx is done; a list body (Python's buffered
// task.multi) is split into its events. keyPrefix is kombu's
// global_keyprefix. fn runs on the receiving goroutine, so it should return
// quickly. Undecodable messages are logged and skipped. With WithClock,
// each event's clock is merged into the given clock, as Python's
// EventReceiver does. Connection loss is retried with backoff; events
// published meanwhile are lost, as with any Redis pub/sub. It returns nil
// when ctx is done, and an error only for invalid arguments.
func ReceiveEvents(ctx context.Context, pool *redis.Pool, db int, keyPrefix, pattern string, fn func(Event), opts ...NodeOption) error {
	if pool == nil || fn == nil {
		return errors.New("protocol: receive events: nil pool or handler")
	}
	if pattern == "" {
		pattern = "*"
	}
	cfg := newNodeConfig(opts)
	log := cfg.log.With().Str("component", "events").Logger()
	sub := fanoutSubscriber{
		pool:    pool,
		pattern: keyPrefix + eventChannel(db, "") + strings.ReplaceAll(pattern, "#", "*"),
		log:     log,
		onMessage: func(_ context.Context, channel string, data []byte) {
			events, err := decodeEvents(data)
			if err != nil {
				log.Warn().Err(err).Str("channel", channel).Msg("dropping undecodable event message")
			}
			for _, e := range events {
				if c, ok := fanoutInt(e["clock"]); ok {
					cfg.clock.adjust(c)
				}
				fn(e)
			}
		},
	}
	sub.run(ctx)
	return nil
}

// decodeEvents returns the events in one celeryev message. Elements of a
// list body that are not events are skipped.
func decodeEvents(data []byte) ([]Event, error) {
	msg, err := parseFanoutEnvelope(data)
	if err != nil {
		return nil, err
	}
	asEvent := func(v any) (Event, bool) {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if _, ok := m["type"].(string); !ok {
			return nil, false
		}
		return Event(m), true
	}
	switch body := msg.Body.(type) {
	case map[string]any:
		if e, ok := asEvent(body); ok {
			return []Event{e}, nil
		}
		return nil, errors.New("event body has no string \"type\"")
	case []any:
		events := make([]Event, 0, len(body))
		for _, v := range body {
			if e, ok := asEvent(v); ok {
				events = append(events, e)
			}
		}
		if len(events) < len(body) {
			return events, fmt.Errorf("%d of %d events in a list body are not events", len(body)-len(events), len(body))
		}
		return events, nil
	default:
		return nil, fmt.Errorf("event body is a JSON %s, want an object or a list", fanoutKind(msg.Body))
	}
}

// pythonUTCOffset is Celery's utcoffset(): hours WEST of UTC (time.timezone
// or time.altzone), floor-divided, so UTC+2 is -2 and UTC+5:30 is -6.
func pythonUTCOffset(t time.Time) int {
	_, east := t.Zone()
	west := -east
	q := west / 3600
	if west%3600 != 0 && west < 0 {
		q--
	}
	return q
}

// ---------------------------------------------------------------------------
// kombu fanout plumbing shared by events.go, pidbox.go and control.go: the
// envelope of a PUBLISHed or reply message, and JSON as Python writes it.

// fanoutField and fanoutObject are a JSON object whose keys keep their order:
// Python writes dict keys in insertion order and some readers (people,
// byte-level tests) expect the same order.
type fanoutField struct {
	Key   string
	Value any
}

type fanoutObject []fanoutField

// fanoutEnvelope builds the kombu envelope (section 1.1 of the wire
// reference) around a JSON body.
func fanoutEnvelope(body []byte, headers fanoutObject, deliveryMode int, exchange, routingKey string) ([]byte, error) {
	if headers == nil {
		headers = fanoutObject{}
	}
	return fanoutJSON(fanoutObject{
		{"body", base64.StdEncoding.EncodeToString(body)},
		{"content-encoding", "utf-8"},
		{"content-type", "application/json"},
		{"headers", headers},
		{"properties", fanoutObject{
			{"delivery_mode", deliveryMode},
			{"delivery_info", fanoutObject{{"exchange", exchange}, {"routing_key", routingKey}}},
			{"priority", 0},
			{"body_encoding", "base64"},
			{"delivery_tag", uuid.NewString()},
		}},
	})
}

// fanoutMessage is a decoded envelope. JSON numbers are json.Number.
type fanoutMessage struct {
	Headers    map[string]any
	Exchange   string
	RoutingKey string
	Body       any
}

// fanoutMaxBody bounds a decompressed body so that a hostile message cannot
// exhaust memory.
const fanoutMaxBody = 64 << 20

// parseFanoutEnvelope decodes an envelope as kombu's virtual Message does:
// body_encoding base64 or verbatim, optional zlib compression, JSON body.
func parseFanoutEnvelope(data []byte) (*fanoutMessage, error) {
	var raw any
	if err := fanoutUnmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("message is not JSON: %w", err)
	}
	env, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("message is a JSON %s, want a kombu envelope object", fanoutKind(raw))
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
		return nil, fmt.Errorf("envelope headers are a JSON %s, want an object", fanoutKind(env["headers"]))
	}
	props, ok := env["properties"].(map[string]any)
	if !ok && env["properties"] != nil {
		return nil, fmt.Errorf("envelope properties are a JSON %s, want an object", fanoutKind(env["properties"]))
	}
	info, _ := props["delivery_info"].(map[string]any)
	msg := &fanoutMessage{Headers: headers}
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
		body, err = io.ReadAll(io.LimitReader(zr, fanoutMaxBody+1))
		if err != nil {
			return nil, fmt.Errorf("decompress body: %w", err)
		}
		if len(body) > fanoutMaxBody {
			return nil, errors.New("decompressed body exceeds 64 MiB")
		}
	}
	if err := fanoutUnmarshal(body, &msg.Body); err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	return msg, nil
}

// fanoutKind names the JSON type of a decoded value, for error messages.
func fanoutKind(v any) string {
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

// fanoutUnmarshal decodes exactly one JSON value, numbers as json.Number.
func fanoutUnmarshal(data []byte, v any) error {
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

// fanoutFloat reads a JSON number (json.Number, any Go number) as float64.
func fanoutFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case jsonFloat:
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

// fanoutInt reads a JSON number as int64, truncating a float.
func fanoutInt(v any) (int64, bool) {
	if n, ok := v.(json.Number); ok {
		if i, err := n.Int64(); err == nil {
			return i, true
		}
	}
	f, ok := fanoutFloat(v)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return int64(f), true
}

// fanoutJSON encodes v as JSON that Python reads back with the same types:
// floats keep a fractional part, maps have sorted keys, nil slices and maps
// are [] and {} (Python callers iterate over them), HTML is not escaped.
func fanoutJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := writeFanoutValue(&b, v, 0); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

const fanoutMaxDepth = 100

func writeFanoutValue(b *bytes.Buffer, v any, depth int) error {
	if depth > fanoutMaxDepth {
		return errors.New("value nested too deeply (a cycle?)")
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
		return nil
	case fanoutObject:
		b.WriteByte('{')
		for i, f := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writeFanoutString(b, f.Key)
			b.WriteString(": ")
			if err := writeFanoutValue(b, f.Value, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case string:
		writeFanoutString(b, x)
		return nil
	case bool:
		b.WriteString(strconv.FormatBool(x))
		return nil
	case jsonFloat:
		b.Write(appendFanoutFloat(nil, float64(x), 64))
		return nil
	case float64:
		b.Write(appendFanoutFloat(nil, x, 64))
		return nil
	case float32:
		b.Write(appendFanoutFloat(nil, float64(x), 32))
		return nil
	case json.Number:
		if !fanoutValidNumber(string(x)) {
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
	case Event:
		return writeFanoutValue(b, map[string]any(x), depth)
	case json.Marshaler:
		return writeFanoutMarshaler(b, x)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			b.WriteString("null")
			return nil
		}
		return writeFanoutValue(b, rv.Elem().Interface(), depth+1)
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return writeFanoutMarshaler(b, v)
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
			writeFanoutString(b, k)
			b.WriteString(": ")
			if err := writeFanoutValue(b, byKey[k].Interface(), depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case reflect.Slice, reflect.Array:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return writeFanoutMarshaler(b, v) // base64, as encoding/json
		}
		b.WriteByte('[')
		for i := 0; i < rv.Len(); i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			if err := writeFanoutValue(b, rv.Index(i).Interface(), depth+1); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case reflect.Float32, reflect.Float64:
		b.Write(appendFanoutFloat(nil, rv.Float(), rv.Type().Bits()))
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
		writeFanoutString(b, rv.String())
		return nil
	}
	return writeFanoutMarshaler(b, v)
}

// writeFanoutMarshaler encodes v with encoding/json, without HTML escaping.
func writeFanoutMarshaler(b *bytes.Buffer, v any) error {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Write(bytes.TrimRight(tmp.Bytes(), "\n"))
	return nil
}

func writeFanoutString(b *bytes.Buffer, s string) {
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
	_ = writeFanoutMarshaler(b, s)
}

// appendFanoutFloat formats f as Python's json.dumps does (2.0, 1e-07),
// except that NaN and the infinities become null: Go readers of events and
// replies use encoding/json, which rejects json.dumps's NaN and Infinity.
func appendFanoutFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	if bits == 32 {
		return pyfmt.AppendJSONFloat32(dst, float32(f))
	}
	return pyfmt.AppendJSONFloat(dst, f)
}

func fanoutValidNumber(s string) bool {
	if s == "" || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) {
		return false
	}
	var n json.Number
	return json.Unmarshal([]byte(s), &n) == nil
}
