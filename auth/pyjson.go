package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"morag-gpu/internal/pyfmt"
)

// The helpers in this file reproduce, byte for byte, what MoRAG's Python
// writes: json.dumps with its default separators (", " and ": ") and
// ensure_ascii=True, and datetime.isoformat() of a naive UTC datetime. Go's
// encoding/json differs in both separators and escaping (it writes "<" as
// \u003c and leaves non-ASCII alone), so it cannot be used for stored values;
// internal/pyfmt writes them.

// encodeKeyData writes d the way json.dumps(key_data) does for the dict
// built in APIKeyService.create_api_key, keys in the same order.
func encodeKeyData(d KeyData) []byte {
	var expires any
	if d.ExpiresAt != nil {
		expires = *d.ExpiresAt
	}
	// Strings, nil and a bool: json.dumps of these cannot fail.
	b, _ := pyfmt.Dumps(pyfmt.Dict{
		{Key: "user_id", Value: d.UserID},
		{Key: "description", Value: d.Description},
		{Key: "created_at", Value: d.CreatedAt},
		{Key: "expires_at", Value: expires},
		{Key: "active", Value: d.Active},
	})
	return b
}

// writePyString is json.encoder.py_encode_basestring_ascii: everything outside
// printable ASCII becomes \uXXXX with lower-case hex (surrogate pairs above
// U+FFFF), and only \" \\ \b \f \n \r \t get short escapes. Invalid
// UTF-8 is written as \ufffd, the replacement Python would have made when
// decoding.
func writePyString(b *bytes.Buffer, s string) { b.Write(pyfmt.AppendJSONString(nil, s)) }

// pyISOFormat is datetime.isoformat() of a naive UTC datetime: microsecond
// precision, and no fraction at all when the microseconds are zero.
func pyISOFormat(t time.Time) string { return pyfmt.ISOFormatNaive(t) }

// parsePyISO reads a naive timestamp the way datetime.fromisoformat does for
// the forms isoformat() writes (date, or date and time with optional
// fraction, separated by 'T' or a space), as UTC.
//
// A timestamp with a UTC offset is refused: Python's validate_api_key would
// compare it with the naive utcnow() and raise TypeError, which MoRAG turns
// into anonymous access. Refusing it here keeps both sides in agreement and
// fails closed.
func parsePyISO(s string) (time.Time, error) {
	if !utf8.ValidString(s) || len(s) > 64 {
		return time.Time{}, errors.New("not an ISO timestamp")
	}
	layouts := []string{
		"2006-01-02T15:04:05", // also accepts a fraction of any length
		"2006-01-02T15:04",
		"2006-01-02T15",
		"2006-01-02",
	}
	norm := s
	if len(norm) > 10 && norm[10] == ' ' {
		norm = norm[:10] + "T" + norm[11:]
	}
	for _, l := range layouts {
		if t, err := time.ParseInLocation(l, norm, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a naive ISO 8601 timestamp like %q", s, "2025-01-31T12:00:00.000000")
}

// setInactive rewrites a stored key value with "active" set to false,
// changing nothing else: every other byte stays as stored. For a value that
// Python wrote this is exactly what revoke_api_key's json.dumps would write
// (the key keeps its place in the dict; a missing key is appended last).
func setInactive(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("stored key value is not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("stored key value is not a JSON object")
	}
	type span struct{ start, end int64 }
	var spans []span
	for dec.More() {
		ktok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("stored key value is not valid JSON: %w", err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("stored key value is not valid JSON: %w", err)
		}
		if k, _ := ktok.(string); k == "active" {
			end := dec.InputOffset()
			spans = append(spans, span{end - int64(len(v)), end})
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("stored key value is not valid JSON: %w", err)
	}
	closeAt := dec.InputOffset() - 1
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("stored key value has data after the JSON object")
	}

	var out bytes.Buffer
	if len(spans) == 0 {
		body := strings.TrimRight(string(raw[:closeAt]), " \t\r\n")
		out.WriteString(body)
		if !strings.HasSuffix(body, "{") {
			out.WriteString(", ")
		}
		out.WriteString(`"active": false`)
		out.Write(raw[closeAt:])
		return out.Bytes(), nil
	}
	prev := int64(0)
	for _, sp := range spans {
		out.Write(raw[prev:sp.start])
		out.WriteString("false")
		prev = sp.end
	}
	out.Write(raw[prev:])
	return out.Bytes(), nil
}
