//go:build !wip_codec

// Stub of the codec API; owned by the codec work. Deleted when codec lands.
package protocol

import "time"

// DecodeError says why an envelope could not be decoded. Reason is a short
// machine-friendly word (e.g. "invalid-json", "no-delivery-tag",
// "unsupported-content-type", "bad-body", "unknown-message").
type DecodeError struct {
	Reason string
	Err    error
}

func (e *DecodeError) Error() string { panic("stub") }
func (e *DecodeError) Unwrap() error { return e.Err }

// Encode returns the kombu envelope (protocol v2) that is LPUSHed for m. It
// fills in ID, RootID (=ID), DeliveryTag, CorrelationID, ArgsRepr/KwargsRepr,
// Origin and RoutingKey defaults when empty, writing them back into m.
func Encode(m *Message) ([]byte, error) { panic("stub") }

// Decode parses any envelope Celery/kombu can produce: v2, v1, hybrid;
// body_encoding base64 or utf-8; compression application/x-gzip (zlib).
// Errors are *DecodeError; it never panics.
func Decode(raw []byte) (*Message, error) { panic("stub") }

// EnvelopeInfo reads the fields the transport needs from a raw envelope
// without decoding the body: delivery tag, priority, exchange, routing key.
func EnvelopeInfo(raw []byte) (tag string, priority int, exchange, routingKey string, err error) {
	panic("stub")
}

// MarkRedelivered returns raw with headers.redelivered and
// properties.delivery_info.redelivered set to true, preserving every other
// byte of meaning (numbers keep their precision).
func MarkRedelivered(raw []byte) ([]byte, error) { panic("stub") }

// UnmarshalJSON decodes kombu JSON into v: numbers become json.Number and
// {"__type__","__value__"} envelopes become Go values (datetime/date/time ->
// time.Time, uuid -> string, decimal -> json.Number, bytes -> []byte).
func UnmarshalJSON(data []byte, v any) error { panic("stub") }

// MarshalJSON encodes v as JSON Python's json.loads reads (no HTML escaping).
// time.Time values are written as ISO-8601 strings.
func MarshalJSON(v any) ([]byte, error) { panic("stub") }

// FormatTime formats t as Python's datetime.isoformat() of an aware datetime
// (microseconds omitted when zero).
func FormatTime(t time.Time) string { panic("stub") }

// ParseTime parses Python isoformat() output, naive (taken as UTC) or aware,
// with or without fractional seconds.
func ParseTime(s string) (time.Time, error) { panic("stub") }

// NewID returns a new uuid4 string (task ids, delivery tags).
func NewID() string { panic("stub") }
