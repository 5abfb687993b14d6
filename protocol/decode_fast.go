package protocol

import (
	"encoding/base64"
	"encoding/json"
	"strconv"

	"morag-gpu/protocol/internal/kombujson"
)

// decodeFast decodes the envelope Celery 5.2 and this package write for a
// protocol 2 task straight into a Message, without the generic trees
// decodeGeneral builds for the envelope, its properties and its headers
// (three maps and a boxed value per field, a fifth of a worker's CPU when
// it drains short tasks). The body still goes through kombujson, as in
// decodeGeneral.
//
// It takes only what it can decode exactly as decodeGeneral does: ASCII
// strings without escapes, the standard header and property names with
// the types Celery writes (or null), no key twice, a base64 body holding
// [args, kwargs] or [args, kwargs, embed]. Anything else (custom or
// kombu-typed headers, compression, v1 and hybrid messages, escapes,
// malformed input) reports ok false, and decodeGeneral decodes it or says
// what is wrong. FuzzDecode and TestDecodeFastAgreesWithGeneral check that
// both give the same Message whenever this one answers.
func decodeFast(raw []byte) (*Message, bool) {
	s := fastScanner{b: raw}
	m := &Message{Protocol: 2}
	var body []byte
	var eta, expires string
	envelope := fastObject{
		keys:     []string{"body", "content-encoding", "content-type", "headers", "properties"},
		required: []string{"body", "content-type", "headers", "properties"},
	}
	ok := s.object(envelope, func(key string) bool {
		switch key {
		case "body":
			var ok bool
			body, ok = s.str()
			return ok
		case "content-encoding":
			_, _, ok := s.nullableStr()
			return ok
		case "content-type":
			ct, ok := s.str()
			return ok && string(ct) == "application/json"
		case "headers":
			return s.headers(m, &eta, &expires)
		default: // properties
			return s.properties(m)
		}
	})
	if !ok || !s.end() || m.ID == "" || m.DeliveryTag == "" {
		return nil, false
	}
	var err error
	if m.ETA, err = isoField("eta", eta); err != nil {
		return nil, false
	}
	if m.Expires, err = isoField("expires", expires); err != nil {
		return nil, false
	}
	decoded := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
	n, err := base64.StdEncoding.Decode(decoded, body)
	if err != nil {
		return nil, false
	}
	var tree any
	if err := kombujson.Unmarshal(decoded[:n], &tree); err != nil {
		return nil, false
	}
	parts, isList := tree.([]any)
	if !isList || len(parts) < 2 || len(parts) > 3 || decodeV2Body(m, parts) != nil {
		return nil, false
	}
	return m, true
}

// fastScanner reads the subset of JSON decodeFast takes; every method
// reports false on anything outside it.
type fastScanner struct {
	b []byte
	i int
}

// fastObject is what an object decodeFast takes may hold: keys, each at
// most once, and of them every one in required.
type fastObject struct {
	keys     []string
	required []string
}

func (s *fastScanner) ws() { s.i = kombujson.SpaceEnd(s.b, s.i) }

// end reports whether only whitespace is left.
func (s *fastScanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

func (s *fastScanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *fastScanner) lit(word string) bool {
	s.ws()
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return false
	}
	s.i += len(word)
	return true
}

// object reads an object shaped as o, handing each key (as spelled in
// o.keys) to member, which reads the value.
func (s *fastScanner) object(o fastObject, member func(key string) bool) bool {
	if !s.lit("{") {
		return false
	}
	var seen uint32
	if s.peek() == '}' {
		s.i++
		return o.has(seen)
	}
	for {
		raw, ok := s.str()
		if !ok || !s.lit(":") {
			return false
		}
		i := o.index(raw)
		if i < 0 || seen&(1<<i) != 0 || !member(o.keys[i]) {
			return false
		}
		seen |= 1 << i
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return o.has(seen)
		default:
			return false
		}
	}
}

// index is key's place in o.keys, -1 if it has none.
func (o fastObject) index(key []byte) int {
	for i, k := range o.keys {
		if string(key) == k {
			return i
		}
	}
	return -1
}

// has reports whether the keys seen (bits by place in o.keys) include
// every required one.
func (o fastObject) has(seen uint32) bool {
	for _, r := range o.required {
		for i, k := range o.keys {
			if k == r && seen&(1<<i) == 0 {
				return false
			}
		}
	}
	return true
}

// str reads a string of printable ASCII without escapes, in place.
func (s *fastScanner) str() ([]byte, bool) {
	if s.peek() != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// nullableStr reads a string or null (present false).
func (s *fastScanner) nullableStr() (v []byte, present, ok bool) {
	if s.peek() == 'n' {
		return nil, false, s.lit("null")
	}
	v, ok = s.str()
	return v, true, ok
}

// nullableString is nullableStr as a Go string ("" for null).
func (s *fastScanner) nullableString(dst *string) bool {
	v, present, ok := s.nullableStr()
	if ok && present {
		*dst = string(v)
	}
	return ok
}

// number reads a JSON number token of at most 32 bytes, in place.
func (s *fastScanner) number() ([]byte, bool) {
	s.ws()
	start := s.i
	s.i = kombujson.NumberEnd(s.b, s.i)
	tok := s.b[start:s.i]
	if len(tok) == 0 || len(tok) > 32 || !kombujson.ValidNumber(string(tok)) {
		return nil, false
	}
	return tok, true
}

// nullableInt reads null or an integer token that fits an int, as
// intValue takes it.
func (s *fastScanner) nullableInt() (n int, present, ok bool) {
	if s.peek() == 'n' {
		return 0, false, s.lit("null")
	}
	tok, ok := s.number()
	if !ok {
		return 0, false, false
	}
	v, err := strconv.ParseInt(string(tok), 10, 0)
	if err != nil {
		return 0, false, false
	}
	return int(v), true, true
}

func (s *fastScanner) nullableBool() (v, ok bool) {
	switch s.peek() {
	case 'n':
		return false, s.lit("null")
	case 't':
		return true, s.lit("true")
	case 'f':
		return false, s.lit("false")
	}
	return false, false
}

// headers reads the standard protocol 2 headers into m.
func (s *fastScanner) headers(m *Message, eta, expires *string) bool {
	headers := fastObject{
		keys: []string{"lang", "task", "id", "shadow", "eta", "expires", "group", "group_index",
			"retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result"},
		required: []string{"task"}, // without it, not protocol 2
	}
	return s.object(headers, func(key string) bool {
		switch key {
		case "lang":
			return s.nullableString(&m.Lang)
		case "task":
			v, ok := s.str() // a null task is not protocol 2
			m.Task = string(v)
			return ok
		case "id":
			return s.nullableString(&m.ID)
		case "shadow":
			return s.nullableString(&m.Shadow)
		case "eta":
			return s.nullableString(eta)
		case "expires":
			return s.nullableString(expires)
		case "group":
			return s.nullableString(&m.Group)
		case "group_index":
			n, present, ok := s.nullableInt()
			if present {
				m.GroupIndex = &n
			}
			return ok
		case "retries":
			n, _, ok := s.nullableInt()
			m.Retries = n
			return ok
		case "timelimit":
			return s.timeLimit(m)
		case "root_id":
			return s.nullableString(&m.RootID)
		case "parent_id":
			return s.nullableString(&m.ParentID)
		case "argsrepr":
			return s.nullableString(&m.ArgsRepr)
		case "kwargsrepr":
			return s.nullableString(&m.KwargsRepr)
		case "origin":
			return s.nullableString(&m.Origin)
		default: // ignore_result
			v, ok := s.nullableBool()
			m.IgnoreResult = v
			return ok
		}
	})
}

// timeLimit reads null or [hard, soft], each seconds or null.
func (s *fastScanner) timeLimit(m *Message) bool {
	if s.peek() == 'n' {
		return s.lit("null")
	}
	if !s.lit("[") {
		return false
	}
	for i := range 2 {
		if i == 1 && !s.lit(",") {
			return false
		}
		if s.peek() == 'n' {
			if !s.lit("null") {
				return false
			}
			continue
		}
		tok, ok := s.number()
		if !ok {
			return false
		}
		n := json.Number(tok)
		d, ok := secondsValue(n)
		if !ok {
			return false
		}
		if i == 0 {
			m.TimeLimit.Hard, m.TimeLimit.HardRaw = d, n
		} else {
			m.TimeLimit.Soft, m.TimeLimit.SoftRaw = d, n
		}
	}
	return s.lit("]")
}

// properties reads kombu's message properties into m.
func (s *fastScanner) properties(m *Message) bool {
	props := fastObject{
		keys: []string{"correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority",
			"body_encoding", "expiration", "delivery_tag"},
		required: []string{"body_encoding"}, // without it the body is not base64
	}
	return s.object(props, func(key string) bool {
		switch key {
		case "correlation_id":
			return s.nullableString(&m.CorrelationID)
		case "reply_to":
			return s.nullableString(&m.ReplyTo)
		case "delivery_mode":
			_, _, ok := s.nullableInt()
			return ok
		case "delivery_info":
			return s.deliveryInfo(m)
		case "priority":
			n, present, ok := s.nullableInt()
			if present {
				m.Priority = min(max(n, 0), 9)
			}
			return ok
		case "body_encoding":
			v, ok := s.str()
			return ok && string(v) == "base64"
		case "expiration": // kombu's, with expires; Celery reads the header
			_, _, ok := s.nullableStr()
			return ok
		default: // delivery_tag
			v, ok := s.str()
			m.DeliveryTag = string(v)
			return ok
		}
	})
}

// deliveryInfo reads {"exchange", "routing_key"[, "redelivered"]}.
func (s *fastScanner) deliveryInfo(m *Message) bool {
	info := fastObject{keys: []string{"exchange", "routing_key", "redelivered"}}
	return s.object(info, func(key string) bool {
		switch key {
		case "exchange":
			return s.nullableString(&m.Exchange)
		case "routing_key":
			return s.nullableString(&m.RoutingKey)
		default: // redelivered
			var ok bool
			m.Redelivered, ok = s.nullableBool()
			return ok
		}
	})
}
