package protocol

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol/internal/kombujson"
)

// DecodeError says why an envelope could not be decoded. Reason is a short
// machine-friendly word:
//
//   - "invalid-json": the envelope is not a JSON object
//   - "bad-envelope": headers or properties are not objects
//   - "no-delivery-tag": properties.delivery_tag is missing (kombu cannot
//     hold or ack such a message either)
//   - "unsupported-content-type": not application/json
//   - "unsupported-compression": a compression Go cannot undo (brotli,
//     lzma, zstd) or an unknown one
//   - "bad-body": the body cannot be base64-decoded, decompressed or parsed,
//     or its shape is not [args, kwargs, embed] / a v1 object
//   - "unknown-message": neither headers.task (v2) nor body.task (v1)
//   - "invalid-task": a task field has the wrong type (no id, kwargs not
//     an object, eta not ISO 8601, ...)
type DecodeError struct {
	Reason string
	Err    error
}

func (e *DecodeError) Error() string {
	if e.Err == nil {
		return "protocol: cannot decode task message: " + e.Reason
	}
	return "protocol: cannot decode task message (" + e.Reason + "): " + e.Err.Error()
}

func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(reason, format string, args ...any) *DecodeError {
	return &DecodeError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// maxDecompressedBody bounds what a compressed body may expand to, so that
// a small hostile message cannot exhaust memory.
const maxDecompressedBody = 256 << 20

// wireEnvelope is the kombu Redis envelope after parsing.
type wireEnvelope struct {
	Body        any
	ContentType any
	Headers     any
}

// wireProperties are the message properties; `any` so that no odd type
// can fail the decode of the others (kombu is as tolerant).
type wireProperties struct {
	CorrelationID any
	ReplyTo       any
	DeliveryInfo  any
	Priority      any
	BodyEncoding  any
	DeliveryTag   any
}

// parseEnvelope reads the envelope and its properties and checks the
// delivery tag, as kombu's Message.__init__ does before anything else.
// The whole envelope goes through kombujson.Parse once: its big part, the body,
// is a single string.
func parseEnvelope(raw []byte) (*wireEnvelope, *wireProperties, string, error) {
	tree, err := kombujson.Parse(raw)
	top, ok := tree.(map[string]any)
	if err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("it is %s", describeJSON(tree))
		}
		return nil, nil, "", &DecodeError{Reason: "invalid-json", Err: fmt.Errorf("the envelope is not a JSON object: %w", err)}
	}
	env := &wireEnvelope{Body: top["body"], ContentType: top["content-type"], Headers: top["headers"]}
	if top["properties"] == nil {
		return nil, nil, "", decodeErr("no-delivery-tag", "the envelope has no properties (kombu needs properties.delivery_tag)")
	}
	pm, ok := top["properties"].(map[string]any)
	if !ok {
		return nil, nil, "", decodeErr("bad-envelope", "properties is %s, want an object", describeJSON(top["properties"]))
	}
	props := &wireProperties{
		CorrelationID: pm["correlation_id"], ReplyTo: pm["reply_to"], DeliveryInfo: pm["delivery_info"],
		Priority: pm["priority"], BodyEncoding: pm["body_encoding"], DeliveryTag: pm["delivery_tag"],
	}
	tag, ok := props.DeliveryTag.(string)
	if !ok || tag == "" {
		if props.DeliveryTag == nil {
			return nil, nil, "", decodeErr("no-delivery-tag", "properties.delivery_tag is missing")
		}
		return nil, nil, "", decodeErr("no-delivery-tag", "properties.delivery_tag is %s, want a non-empty string", describeJSON(props.DeliveryTag))
	}
	return env, props, tag, nil
}

// envelopeInfo reads the fields the transport needs from a raw envelope
// without decoding the body: delivery tag, priority, exchange, routing key.
// The priority is kombu's _get_message_priority: int(priority) clamped to
// 0..9, and 0 when it is missing, null or not a number.
func envelopeInfo(raw []byte) (tag string, priority int, exchange, routingKey string, err error) {
	_, props, tag, err := parseEnvelope(raw)
	if err != nil {
		return "", 0, "", "", err
	}
	exchange, routingKey, _ = deliveryInfo(props.DeliveryInfo)
	return tag, kombuPriority(props.Priority), exchange, routingKey, nil
}

// kombuPriority mirrors kombu: int(properties['priority']) clamped to
// [0, 9], the default 0 on TypeError/ValueError.
func kombuPriority(v any) int {
	var p float64
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0
		}
		p = f
	case bool:
		if x {
			p = 1
		}
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return 0
		}
		p = float64(n)
	default:
		return 0
	}
	p = math.Trunc(p)
	switch {
	case p < 0:
		return 0
	case p > 9:
		return 9
	}
	return int(p)
}

func deliveryInfo(v any) (exchange, routingKey string, redelivered bool) {
	di, _ := v.(map[string]any)
	exchange, _ = di["exchange"].(string)
	routingKey, _ = di["routing_key"].(string)
	redelivered, _ = di["redelivered"].(bool)
	return exchange, routingKey, redelivered
}

// Decode parses any envelope Celery/kombu can produce: v2, v1, hybrid;
// body_encoding base64 or utf-8; compression application/x-gzip (zlib, or
// real gzip) and application/x-bz2. Errors are *DecodeError; it never
// panics. Numbers are json.Number and kombu type envelopes in the body and
// headers are decoded as kombujson.Unmarshal does. Priority is kombu's clamped
// value (see envelopeInfo). The compression header is consumed, not kept in
// Headers.
func Decode(raw []byte) (*Message, error) {
	if m, ok := decodeFast(raw); ok {
		return m, nil
	}
	return decodeGeneral(raw)
}

// decodeGeneral is Decode for every envelope, through generic JSON trees.
func decodeGeneral(raw []byte) (*Message, error) {
	env, props, tag, err := parseEnvelope(raw)
	if err != nil {
		return nil, err
	}

	var headers map[string]any
	if env.Headers != nil {
		h, _, err := kombujson.Unwrap(env.Headers)
		if err != nil {
			return nil, decodeErr("bad-envelope", "headers: %v", err)
		}
		var ok bool
		if headers, ok = h.(map[string]any); !ok {
			return nil, decodeErr("bad-envelope", "headers is %s, want an object", describeJSON(h))
		}
	}

	if ct, _ := env.ContentType.(string); ct != "application/json" {
		return nil, decodeErr("unsupported-content-type", "content-type is %s; Celery's default accept_content takes only \"application/json\" (send JSON)", describeJSON(env.ContentType))
	}

	body, err := messageBody(env, props, headers)
	if err != nil {
		return nil, err
	}
	var tree any
	if err := kombujson.Unmarshal(body, &tree); err != nil {
		return nil, decodeErr("bad-body", "the body is not kombu JSON: %v", err)
	}

	m := &Message{DeliveryTag: tag, Priority: kombuPriority(props.Priority)}
	m.CorrelationID, _ = props.CorrelationID.(string)
	m.ReplyTo, _ = props.ReplyTo.(string)
	var diRedelivered bool
	m.Exchange, m.RoutingKey, diRedelivered = deliveryInfo(props.DeliveryInfo)
	hRedelivered, _ := headers["redelivered"].(bool)
	m.Redelivered = diRedelivered || hRedelivered

	if _, v2 := headers["task"].(string); v2 {
		err = decodeV2(m, headers, tree)
	} else if obj, ok := tree.(map[string]any); ok && isString(obj["task"]) {
		err = decodeV1(m, obj)
	} else {
		return nil, decodeErr("unknown-message", "neither headers.task (protocol 2) nor body.task (protocol 1) is a task name")
	}
	if err != nil {
		return nil, err
	}
	for k, v := range headers {
		if isV2Header(k) || k == "compression" {
			continue
		}
		if m.Headers == nil {
			m.Headers = make(map[string]any)
		}
		m.Headers[k] = v
	}
	return m, nil
}

func isString(v any) bool {
	_, ok := v.(string)
	return ok
}

// messageBody returns the body bytes after body_encoding and compression,
// in kombu's order: decode_body, then decompress.
func messageBody(env *wireEnvelope, props *wireProperties, headers map[string]any) ([]byte, error) {
	s, ok := env.Body.(string)
	if !ok && env.Body != nil {
		return nil, decodeErr("bad-body", "body is %s, want a string", describeJSON(env.Body))
	}
	body := []byte(s)
	if len(body) > 0 {
		switch enc := props.BodyEncoding.(type) {
		case nil:
		case string:
			switch strings.ToLower(enc) {
			case "", "utf-8", "utf8":
			case "base64":
				var err error
				if body, err = decodeBase64(s); err != nil {
					return nil, decodeErr("bad-body", "body is not base64 (properties.body_encoding is \"base64\"): %v", err)
				}
			default:
				return nil, decodeErr("bad-body", "unsupported properties.body_encoding %q (kombu knows \"base64\")", enc)
			}
		default:
			return nil, decodeErr("bad-body", "properties.body_encoding is %s, want a string", describeJSON(enc))
		}
	}
	if c, ok := headers["compression"]; ok && c != nil {
		kind, ok := c.(string)
		if !ok {
			return nil, decodeErr("unsupported-compression", "headers.compression is %s, want a content type", describeJSON(c))
		}
		var err error
		if body, err = decompressBody(kind, body, maxDecompressedBody); err != nil {
			return nil, err
		}
	}
	return body, nil
}

// decodeBase64 is Python's b64decode: characters outside the alphabet are
// skipped (line breaks from some producers), padding is required.
func decodeBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err == nil {
		return b, nil
	}
	clean := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=' {
			clean = append(clean, c)
		}
	}
	return base64.StdEncoding.DecodeString(string(clean))
}

// decompressBody undoes kombu's compression. kombu's "application/x-gzip"
// is really a zlib stream (zlib.compress); a real gzip stream is accepted
// too.
func decompressBody(kind string, data []byte, limit int) ([]byte, error) {
	var r io.Reader
	switch strings.ToLower(kind) {
	case "application/x-gzip", "gzip", "zlib", "application/zlib", "application/gzip":
		var err error
		if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
			r, err = gzip.NewReader(bytes.NewReader(data))
		} else {
			r, err = zlib.NewReader(bytes.NewReader(data))
		}
		if err != nil {
			return nil, decodeErr("bad-body", "body is not %s-compressed: %v", kind, err)
		}
	case "application/x-bz2", "bzip2", "bzip", "bz2":
		r = bzip2.NewReader(bytes.NewReader(data))
	default:
		return nil, decodeErr("unsupported-compression", "headers.compression %q is not supported (supported: application/x-gzip, application/x-bz2); send with compression 'zlib' or none", kind)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, decodeErr("bad-body", "decompress %s body: %v", kind, err)
	}
	if len(out) > limit {
		return nil, decodeErr("bad-body", "the %s body expands to more than %d bytes", kind, limit)
	}
	return out, nil
}

// decodeV2 handles protocol 2 and the hybrid form (v2 headers with a v1
// body object, celery.worker.strategy.hybrid_to_proto2).
func decodeV2(m *Message, headers map[string]any, tree any) error {
	m.Protocol = 2
	if obj, ok := tree.(map[string]any); ok {
		if _, hybrid := obj["args"]; !hybrid {
			return decodeErr("bad-body", "a protocol 2 body must be [args, kwargs, embed], got an object without args")
		}
		fields := make(map[string]any, len(headers)+16)
		for _, k := range [...]string{"lang", "task", "id", "root_id", "parent_id", "group", "meth",
			"shadow", "eta", "expires", "retries", "timelimit", "argsrepr", "kwargsrepr", "origin"} {
			if v, ok := obj[k]; ok {
				fields[k] = v
			}
		}
		for k, v := range headers {
			fields[k] = v
		}
		if err := decodeFields(m, fields); err != nil {
			return err
		}
		return decodeV1Body(m, obj)
	}
	parts, ok := tree.([]any)
	if !ok || len(parts) < 2 || len(parts) > 3 {
		return decodeErr("bad-body", "a protocol 2 body must be [args, kwargs, embed], got %s", describeJSON(tree))
	}
	if err := decodeFields(m, headers); err != nil {
		return err
	}
	return decodeV2Body(m, parts)
}

// decodeV2Body reads a protocol 2 body, [args, kwargs] or [args, kwargs,
// embed].
func decodeV2Body(m *Message, parts []any) error {
	var err error
	if m.Args, err = argsValue(parts[0]); err != nil {
		return err
	}
	if m.Kwargs, err = kwargsValue(parts[1]); err != nil {
		return err
	}
	if len(parts) == 3 && parts[2] != nil {
		embed, ok := parts[2].(map[string]any)
		if !ok {
			return decodeErr("bad-body", "embed (third body element) is %s, want an object", describeJSON(parts[2]))
		}
		if m.Embed.Callbacks, err = signatureList("callbacks", embed["callbacks"]); err != nil {
			return err
		}
		if m.Embed.Errbacks, err = signatureList("errbacks", embed["errbacks"]); err != nil {
			return err
		}
		if m.Embed.Chain, err = signatureList("chain", embed["chain"]); err != nil {
			return err
		}
		if embed["chord"] != nil {
			s, err := signatureValue("chord", embed["chord"])
			if err != nil {
				return err
			}
			m.Embed.Chord = &s
		}
	}
	return nil
}

// decodeV1 handles protocol 1 (celery.worker.strategy.proto1_to_proto2):
// every field is in the body; taskset, when present, is the group.
func decodeV1(m *Message, body map[string]any) error {
	m.Protocol = 1
	fields := body
	if ts, ok := body["taskset"]; ok {
		fields = make(map[string]any, len(body))
		for k, v := range body {
			fields[k] = v
		}
		fields["group"] = ts
	}
	if err := decodeFields(m, fields); err != nil {
		return err
	}
	if err := decodeV1Body(m, body); err != nil {
		return err
	}
	if m.ArgsRepr == "" {
		m.ArgsRepr = pythonArgsRepr(m.Args)
	}
	if m.KwargsRepr == "" {
		m.KwargsRepr = pythonKwargsRepr(m.Kwargs)
	}
	return nil
}

// decodeV1Body reads args, kwargs and the embed fields of a v1 body object
// (chain does not exist in protocol 1).
func decodeV1Body(m *Message, body map[string]any) error {
	var err error
	if m.Args, err = argsValue(body["args"]); err != nil {
		return err
	}
	if m.Kwargs, err = kwargsValue(body["kwargs"]); err != nil {
		return err
	}
	if m.Embed.Callbacks, err = signatureList("callbacks", body["callbacks"]); err != nil {
		return err
	}
	if m.Embed.Errbacks, err = signatureList("errbacks", body["errbacks"]); err != nil {
		return err
	}
	if body["chord"] != nil {
		s, err := signatureValue("chord", body["chord"])
		if err != nil {
			return err
		}
		m.Embed.Chord = &s
	}
	return nil
}

func argsValue(v any) ([]any, error) {
	switch x := v.(type) {
	case nil:
		return []any{}, nil
	case []any:
		return x, nil
	}
	return nil, decodeErr("bad-body", "task args are %s, want a list", describeJSON(v))
}

func kwargsValue(v any) (map[string]any, error) {
	switch x := v.(type) {
	case nil:
		return map[string]any{}, nil
	case map[string]any:
		return x, nil
	}
	return nil, decodeErr("bad-body", "task keyword arguments are %s, want a mapping", describeJSON(v))
}

func signatureList(what string, v any) ([]Signature, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		// Celery tolerates a single signature where a list is expected.
		if _, isObj := v.(map[string]any); !isObj {
			return nil, decodeErr("bad-body", "embed %s is %s, want a list of signatures", what, describeJSON(v))
		}
		list = []any{v}
	}
	out := make([]Signature, 0, len(list))
	for i, e := range list {
		s, err := signatureValue(fmt.Sprintf("%s[%d]", what, i), e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// signatureValue reads a canvas signature dict. Keys Signature has no field
// for are dropped; fields of an odd type are errors, except the flags.
func signatureValue(what string, v any) (Signature, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Signature{}, decodeErr("bad-body", "%s is %s, want a signature object", what, describeJSON(v))
	}
	var s Signature
	bad := func(key string) error {
		return decodeErr("bad-body", "%s.%s is %s", what, key, describeJSON(obj[key]))
	}
	switch t := obj["task"].(type) {
	case string:
		s.Task = t
	case nil:
	default:
		return s, bad("task")
	}
	switch a := obj["args"].(type) {
	case []any:
		s.Args = a
	case nil:
		s.Args = []any{}
	default:
		return s, bad("args")
	}
	switch k := obj["kwargs"].(type) {
	case map[string]any:
		s.Kwargs = k
	case nil:
		s.Kwargs = map[string]any{}
	default:
		return s, bad("kwargs")
	}
	switch o := obj["options"].(type) {
	case map[string]any:
		s.Options = o
	case nil:
		s.Options = map[string]any{}
	default:
		return s, bad("options")
	}
	if st, ok := obj["subtask_type"].(string); ok {
		s.SubtaskType = &st
	}
	s.Immutable, _ = obj["immutable"].(bool)
	return s, nil
}

// decodeFields reads the protocol 2 header fields from f (headers, or the
// merged v1/hybrid view).
func decodeFields(m *Message, f map[string]any) error {
	var err error
	str := func(key string) string {
		if err != nil {
			return ""
		}
		switch v := f[key].(type) {
		case string:
			return v
		case nil:
			return ""
		default:
			err = decodeErr("invalid-task", "%s is %s, want a string", key, describeJSON(v))
			return ""
		}
	}
	m.Task = str("task")
	m.ID = str("id")
	m.Lang = str("lang")
	m.Shadow = str("shadow")
	m.Group = str("group")
	m.RootID = str("root_id")
	m.ParentID = str("parent_id")
	m.ArgsRepr = str("argsrepr")
	m.KwargsRepr = str("kwargsrepr")
	m.Origin = str("origin")
	eta, expires := str("eta"), str("expires")
	if err != nil {
		return err
	}
	if m.ID == "" {
		return decodeErr("invalid-task", "task %q has no id", m.Task)
	}
	if m.ETA, err = isoField("eta", eta); err != nil {
		return err
	}
	if m.Expires, err = isoField("expires", expires); err != nil {
		return err
	}
	if v := f["group_index"]; v != nil {
		n, ok := intValue(v)
		if !ok {
			return decodeErr("invalid-task", "group_index is %s, want an integer", describeJSON(v))
		}
		m.GroupIndex = &n
	}
	if v := f["retries"]; v != nil {
		n, ok := intValue(v)
		if !ok {
			return decodeErr("invalid-task", "retries is %s, want an integer", describeJSON(v))
		}
		m.Retries = n
	}
	switch tl := f["timelimit"].(type) {
	case nil:
	case []any:
		var lim [2]time.Duration
		var raw [2]json.Number
		for i := 0; i < len(tl) && i < 2; i++ {
			if tl[i] == nil {
				continue
			}
			d, ok := secondsValue(tl[i])
			if !ok {
				return decodeErr("invalid-task", "timelimit[%d] is %s, want seconds or null", i, describeJSON(tl[i]))
			}
			lim[i] = d
			raw[i], _ = tl[i].(json.Number)
		}
		m.TimeLimit = TimeLimit{Hard: lim[0], Soft: lim[1], HardRaw: raw[0], SoftRaw: raw[1]}
	default:
		return decodeErr("invalid-task", "timelimit is %s, want [hard, soft]", describeJSON(tl))
	}
	switch ir := f["ignore_result"].(type) {
	case nil:
	case bool:
		m.IgnoreResult = ir
	default:
		return decodeErr("invalid-task", "ignore_result is %s, want a boolean", describeJSON(ir))
	}
	return nil
}

func isoField(key, s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	t, err := pyfmt.FromISOFormat(s)
	if err != nil {
		return nil, decodeErr("invalid-task", "%s %q is not an ISO 8601 date-time", key, s)
	}
	t = t.UTC()
	return &t, nil
}

// intValue reads an integral JSON number (2 or 2.0) that fits an int.
func intValue(v any) (int, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	if i, err := strconv.ParseInt(string(n), 10, 0); err == nil {
		return int(i), true
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || f > math.MaxInt32 || f < math.MinInt32 {
		return 0, false
	}
	return int(f), true
}

// secondsValue reads a number of seconds, saturating at the Duration range.
func secondsValue(v any) (time.Duration, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	ns := f * float64(time.Second)
	switch {
	case ns >= math.MaxInt64:
		return math.MaxInt64, true
	case ns <= math.MinInt64:
		return math.MinInt64, true
	}
	return time.Duration(ns), true
}

// describeJSON names a decoded JSON value for an error message.
func describeJSON(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 60 {
			x = x[:60] + "..."
		}
		return strconv.Quote(x)
	case bool, json.Number, float64:
		return fmt.Sprintf("%v", x)
	case []any:
		return fmt.Sprintf("a list of %d", len(x))
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// markRedelivered returns raw with headers.redelivered and
// properties.delivery_info.redelivered set to true, preserving every other
// byte of meaning (numbers keep their precision), as kombu's restore does.
// The body and every other top-level part are copied verbatim; headers and
// properties are re-encoded with their keys sorted.
func markRedelivered(raw []byte) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		if err == nil {
			err = errors.New("null")
		}
		return nil, &DecodeError{Reason: "invalid-json", Err: fmt.Errorf("the envelope is not a JSON object: %w", err)}
	}
	objectOf := func(part string) (map[string]any, error) {
		var v any
		if r := top[part]; !isJSONNull(r) {
			if err := kombujson.DecodeNumbers(r, &v); err != nil {
				return nil, decodeErr("bad-envelope", "%s: %v", part, err)
			}
		}
		switch x := v.(type) {
		case map[string]any:
			return x, nil
		case nil:
			return map[string]any{}, nil
		}
		return nil, decodeErr("bad-envelope", "%s is %s, want an object", part, describeJSON(v))
	}
	headers, err := objectOf("headers")
	if err != nil {
		return nil, err
	}
	props, err := objectOf("properties")
	if err != nil {
		return nil, err
	}
	headers["redelivered"] = true
	di, ok := props["delivery_info"].(map[string]any)
	if !ok {
		di = map[string]any{}
		props["delivery_info"] = di
	}
	di["redelivered"] = true

	// Envelopes and odd values produced by others are passed through as
	// they are: this is a copy, not a message of ours.
	for part, v := range map[string]map[string]any{"headers": headers, "properties": props} {
		pw := kombujson.Writer{Verbatim: true}
		if err := pw.Value(v); err != nil {
			return nil, decodeErr("bad-envelope", "re-encode %s: %v", part, err)
		}
		top[part] = pw.Buf
	}
	w := newWriter(make([]byte, 0, len(raw)+64))
	w.Buf = append(w.Buf, '{')
	for i, k := range kombujson.SortedKeys(top) {
		if i > 0 {
			w.Buf = append(w.Buf, ',')
		}
		w.Buf = kombujson.AppendString(w.Buf, k)
		w.Buf = append(w.Buf, ':')
		w.Buf = append(w.Buf, bytes.TrimSpace(top[k])...)
	}
	w.Buf = append(w.Buf, '}')
	return w.Buf, nil
}

func isJSONNull(r json.RawMessage) bool {
	r = bytes.TrimSpace(r)
	return len(r) == 0 || string(r) == "null"
}
