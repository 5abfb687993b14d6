package protocol

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol/internal/kombujson"
)

// NewID returns a new uuid4 string (task ids, delivery tags).
func NewID() string { return uuid.NewString() }

// anonNodename is Celery's anon_nodename(): "gen<pid>@<hostname>", the
// origin of messages sent from outside a worker. Computed once: the
// hostname syscall would otherwise cost more than the rest of Encode.
var anonNodename = sync.OnceValue(func() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return "gen" + strconv.Itoa(os.Getpid()) + "@" + host
})

// reprMaxLen is the maxlen Celery passes to saferepr for argsrepr and
// kwargsrepr.
const reprMaxLen = 1024

// Encode returns the kombu envelope (protocol v2) that is LPUSHed for m. It
// fills in ID, RootID (=ID), DeliveryTag, CorrelationID, ArgsRepr/KwargsRepr,
// Origin and RoutingKey defaults when empty, writing them back into m.
//
// The bytes are what Celery 5.2 sends (section 1.3 of the wire reference)
// with Lang "go" by default, compact separators and headers from m.Headers
// appended after the protocol headers. A custom header named like a protocol
// header is skipped (the field wins), and so is "compression": Encode never
// compresses, and a stale compression header would make every consumer fail
// to read the body.
func Encode(m *Message) ([]byte, error) {
	if m == nil {
		return nil, errors.New("protocol: Encode of a nil *Message")
	}
	if m.Task == "" {
		return nil, errors.New("protocol: cannot encode a task message without a task name (Message.Task)")
	}
	if m.TimeLimit.Hard < 0 || m.TimeLimit.Soft < 0 {
		return nil, fmt.Errorf("protocol: task %s has a negative time limit %v; use 0 for no limit", m.Task, m.TimeLimit)
	}
	fillDefaults(m)

	body, err := encodeBody(m)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode task %s[%s]: %w", m.Task, m.ID, err)
	}

	b64 := base64.StdEncoding.EncodedLen(len(body))
	w := newWriter(make([]byte, 0, b64+640+len(m.ArgsRepr)+len(m.KwargsRepr)))
	w.Buf = append(w.Buf, `{"body":"`...)
	n := len(w.Buf)
	w.Buf = w.Buf[:n+b64]
	base64.StdEncoding.Encode(w.Buf[n:], body)
	w.Buf = append(w.Buf, `","content-encoding":"utf-8","content-type":"application/json","headers":{"lang":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.Lang)
	w.Buf = append(w.Buf, `,"task":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.Task)
	w.Buf = append(w.Buf, `,"id":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.ID)
	w.Buf = append(w.Buf, `,"shadow":`...)
	w.Buf = appendNullableString(w.Buf, m.Shadow)
	w.Buf = append(w.Buf, `,"eta":`...)
	w.Buf = appendNullableTime(w.Buf, m.ETA)
	w.Buf = append(w.Buf, `,"expires":`...)
	w.Buf = appendNullableTime(w.Buf, m.Expires)
	w.Buf = append(w.Buf, `,"group":`...)
	w.Buf = appendNullableString(w.Buf, m.Group)
	w.Buf = append(w.Buf, `,"group_index":`...)
	if m.GroupIndex == nil {
		w.Buf = append(w.Buf, "null"...)
	} else {
		w.Buf = strconv.AppendInt(w.Buf, int64(*m.GroupIndex), 10)
	}
	w.Buf = append(w.Buf, `,"retries":`...)
	w.Buf = strconv.AppendInt(w.Buf, int64(m.Retries), 10)
	// [hard, soft]: the worker unpacks time_limit, soft_time_limit in this
	// order (the protocol document's (soft, hard) is wrong).
	w.Buf = append(w.Buf, `,"timelimit":[`...)
	w.Buf = appendSeconds(w.Buf, m.TimeLimit.Hard)
	w.Buf = append(w.Buf, ',')
	w.Buf = appendSeconds(w.Buf, m.TimeLimit.Soft)
	w.Buf = append(w.Buf, `],"root_id":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.RootID)
	w.Buf = append(w.Buf, `,"parent_id":`...)
	w.Buf = appendNullableString(w.Buf, m.ParentID)
	w.Buf = append(w.Buf, `,"argsrepr":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.ArgsRepr)
	w.Buf = append(w.Buf, `,"kwargsrepr":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.KwargsRepr)
	w.Buf = append(w.Buf, `,"origin":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.Origin)
	w.Buf = append(w.Buf, `,"ignore_result":`...)
	w.Buf = strconv.AppendBool(w.Buf, m.IgnoreResult)
	if len(m.Headers) > 0 {
		for _, k := range kombujson.SortedKeys(m.Headers) {
			if isV2Header(k) || k == "compression" {
				continue
			}
			w.Buf = append(w.Buf, ',')
			w.Buf = kombujson.AppendString(w.Buf, k)
			w.Buf = append(w.Buf, ':')
			if err := w.Value(m.Headers[k]); err != nil {
				return nil, fmt.Errorf("protocol: encode header %q of task %s[%s]: %w", k, m.Task, m.ID, err)
			}
		}
	}
	w.Buf = append(w.Buf, `},"properties":{"correlation_id":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.CorrelationID)
	w.Buf = append(w.Buf, `,"reply_to":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.ReplyTo)
	w.Buf = append(w.Buf, `,"delivery_mode":2,"delivery_info":{"exchange":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.Exchange)
	w.Buf = append(w.Buf, `,"routing_key":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.RoutingKey)
	w.Buf = append(w.Buf, `},"priority":`...)
	w.Buf = strconv.AppendInt(w.Buf, int64(m.Priority), 10)
	w.Buf = append(w.Buf, `,"body_encoding":"base64","delivery_tag":`...)
	w.Buf = kombujson.AppendString(w.Buf, m.DeliveryTag)
	w.Buf = append(w.Buf, "}}"...)
	return w.Buf, nil
}

// fillDefaults sets what Celery's apply_async would have set.
func fillDefaults(m *Message) {
	if m.ID == "" {
		m.ID = NewID()
	}
	if m.RootID == "" {
		m.RootID = m.ID
	}
	if m.CorrelationID == "" {
		m.CorrelationID = m.ID
	}
	if m.DeliveryTag == "" {
		m.DeliveryTag = NewID()
	}
	if m.Lang == "" {
		m.Lang = "go"
	}
	if m.Origin == "" {
		m.Origin = anonNodename()
	}
	if m.RoutingKey == "" {
		m.RoutingKey = DefaultQueue
	}
	if m.ArgsRepr == "" {
		m.ArgsRepr = pythonArgsRepr(m.Args)
	}
	if m.KwargsRepr == "" {
		m.KwargsRepr = pythonKwargsRepr(m.Kwargs)
	}
	m.Protocol = 2
}

// encodeBody writes [args, kwargs, embed].
func encodeBody(m *Message) ([]byte, error) {
	w := newWriter(make([]byte, 0, 128))
	w.Buf = append(w.Buf, '[')
	if m.Args == nil {
		w.Buf = append(w.Buf, "[]"...)
	} else if err := w.Value(m.Args); err != nil {
		return nil, fmt.Errorf("args: %w", err)
	}
	w.Buf = append(w.Buf, ',')
	if m.Kwargs == nil {
		w.Buf = append(w.Buf, "{}"...)
	} else if err := w.Value(m.Kwargs); err != nil {
		return nil, fmt.Errorf("kwargs: %w", err)
	}
	w.Buf = append(w.Buf, `,{"callbacks":`...)
	if err := writeSignatures(&w, m.Embed.Callbacks); err != nil {
		return nil, fmt.Errorf("callbacks: %w", err)
	}
	w.Buf = append(w.Buf, `,"errbacks":`...)
	if err := writeSignatures(&w, m.Embed.Errbacks); err != nil {
		return nil, fmt.Errorf("errbacks: %w", err)
	}
	w.Buf = append(w.Buf, `,"chain":`...)
	if err := writeSignatures(&w, m.Embed.Chain); err != nil {
		return nil, fmt.Errorf("chain: %w", err)
	}
	w.Buf = append(w.Buf, `,"chord":`...)
	if m.Embed.Chord == nil {
		w.Buf = append(w.Buf, "null"...)
	} else if err := writeSignature(&w, m.Embed.Chord); err != nil {
		return nil, fmt.Errorf("chord: %w", err)
	}
	w.Buf = append(w.Buf, "}]"...)
	return w.Buf, nil
}

// isV2Header reports whether name is one of the protocol v2 headers that
// Message has a field for.
func isV2Header(name string) bool {
	switch name {
	case "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index",
		"retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr",
		"origin", "ignore_result":
		return true
	}
	return false
}

func appendNullableString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return kombujson.AppendString(b, s)
}

// appendNullableTime writes t in UTC, as Celery with enable_utc does.
func appendNullableTime(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = pyfmt.AppendISOFormat(b, t.UTC())
	return append(b, '"')
}

// appendSeconds writes d in seconds, an int when whole; zero is null
// ("use the task's default").
func appendSeconds(b []byte, d time.Duration) []byte {
	if d == 0 {
		return append(b, "null"...)
	}
	if d%time.Second == 0 {
		return strconv.AppendInt(b, int64(d/time.Second), 10)
	}
	return strconv.AppendFloat(b, d.Seconds(), 'f', -1, 64)
}

// pythonArgsRepr is saferepr(tuple(args), 1024) as Celery writes argsrepr.
func pythonArgsRepr(args []any) string {
	r := reprWriter{b: make([]byte, 0, 32), budget: reprMaxLen}
	r.seq(args, "(", ")", 0)
	return string(r.b)
}

// pythonKwargsRepr is saferepr(kwargs, 1024).
func pythonKwargsRepr(kwargs map[string]any) string {
	r := reprWriter{b: make([]byte, 0, 32), budget: reprMaxLen}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	r.value(kwargs, 0)
	return string(r.b)
}

// reprWriter follows celery.utils.saferepr: a streaming repr that stops with
// ", ..." once maxlen characters are out (closing the open brackets), shows
// containers nested three deep as "[...]", and quotes strings with ' without
// escaping anything but '. argsrepr is only read by humans (logs, Flower),
// so the aim is the same look, not byte equality for every value.
type reprWriter struct {
	b       []byte
	budget  int
	stopped bool
}

const reprMaxLevels = 3

// token emits one token, or ", ..." once the budget is spent.
func (r *reprWriter) token(s string) {
	if r.stopped {
		return
	}
	if r.budget <= 0 {
		r.b = append(r.b, ", ..."...)
		r.stopped = true
		return
	}
	r.b = append(r.b, s...)
	r.budget -= utf8.RuneCountInString(s)
}

// closer emits a closing bracket; those are written even after the stop.
func (r *reprWriter) closer(s string) {
	r.b = append(r.b, s...)
	if !r.stopped {
		r.budget -= len(s)
	}
}

func (r *reprWriter) value(v any, level int) {
	if r.stopped {
		return
	}
	switch x := v.(type) {
	case nil:
		r.token(reprTruncate("None", r.budget))
	case string:
		r.str(x)
	case bool:
		if x {
			r.token(reprTruncate("True", r.budget))
		} else {
			r.token(reprTruncate("False", r.budget))
		}
	case json.Number, float64, float32:
		// A number literal is the int or float json.loads makes of it.
		r.token(reprTruncate(pyfmt.Repr(x), r.budget))
	case int:
		r.int(int64(x))
	case int64:
		r.int(x)
	case []any:
		r.seq(x, "[", "]", level)
	case []string:
		items := make([]any, len(x))
		for i, s := range x {
			items[i] = s
		}
		r.seq(items, "[", "]", level)
	case map[string]any:
		if level >= reprMaxLevels {
			r.token("{...}")
			return
		}
		r.token("{")
		if r.stopped {
			return
		}
		for i, k := range kombujson.SortedKeys(x) {
			if i > 0 {
				r.token(", ")
			}
			r.str(k)
			r.token(": ")
			r.value(x[k], level+1)
			if r.stopped {
				break
			}
		}
		r.closer("}")
	case time.Time:
		r.str(pyfmt.ISOFormat(x))
	case []byte:
		r.token("b" + reprQuote(reprTruncate(string(x), r.budget)))
	default:
		r.token(reprTruncate(fmt.Sprint(v), r.budget))
	}
}

func (r *reprWriter) int(n int64) {
	if r.stopped {
		return
	}
	if r.budget <= 0 {
		r.token("")
		return
	}
	before := len(r.b)
	r.b = strconv.AppendInt(r.b, n, 10)
	r.budget -= len(r.b) - before
}

func (r *reprWriter) seq(items []any, open, close string, level int) {
	if level >= reprMaxLevels {
		r.token(open + "..." + close)
		return
	}
	r.token(open)
	if r.stopped {
		return
	}
	for i, e := range items {
		if i > 0 {
			r.token(", ")
		}
		r.value(e, level+1)
		if r.stopped {
			break
		}
	}
	if open == "(" && len(items) == 1 {
		close = ",)"
	}
	r.closer(close)
}

// str writes saferepr's "'{}'".format(truncate(s).replace("'", "\\'")).
func (r *reprWriter) str(s string) {
	if r.stopped {
		return
	}
	if r.budget <= 0 {
		r.token("")
		return
	}
	s = reprTruncate(s, r.budget)
	n := len(r.b)
	r.b = append(r.b, '\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			r.b = append(r.b, '\\')
		}
		r.b = append(r.b, s[i])
	}
	r.b = append(r.b, '\'')
	r.budget -= utf8.RuneCount(r.b[n:])
}

// reprQuote quotes s like str, for byte strings.
func reprQuote(s string) string {
	r := reprWriter{budget: math.MaxInt}
	r.str(s)
	return string(r.b)
}

// reprTruncate is celery.utils.text.truncate: at maxlen characters or more,
// cut to maxlen, drop the last partial word and add "...".
func reprTruncate(s string, maxlen int) string {
	if maxlen <= 0 || len(s) < maxlen {
		return s // fewer bytes than maxlen: fewer characters too
	}
	n, cut := 0, len(s)
	for i := range s {
		if n == maxlen {
			cut = i
			break
		}
		n++
	}
	if n < maxlen {
		return s
	}
	head := s[:cut]
	for i := len(head) - 1; i >= 0; i-- {
		if head[i] == ' ' {
			head = head[:i]
			break
		}
	}
	return head + "..."
}
