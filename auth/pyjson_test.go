package auth

import (
	"bytes"
	"testing"
	"time"
)

func TestWritePyStringMatchesPythonEscaping(t *testing.T) {
	// Expected values are what CPython 3.11's json.dumps writes.
	cases := map[string]string{
		"":                    `""`,
		"plain text":          `"plain text"`,
		`quote " backslash \`: `"quote \" backslash \\"`,
		"\b\f\n\r\t":          `"\b\f\n\r\t"`,
		"\x00\x01\x1f\x7f":    `"\u0000\u0001\u001f\u007f"`,
		"<>&'/":               `"<>&'/"`,
		"café ü":              `"caf\u00e9 \u00fc"`,
		"\u2028\ufeff":        `"\u2028\ufeff"`,
		"emoji 😀":             `"emoji \ud83d\ude00"`,
		"bad \xff utf8":       `"bad \ufffd utf8"`,
	}
	for in, want := range cases {
		var b bytes.Buffer
		writePyString(&b, in)
		if b.String() != want {
			t.Errorf("writePyString(%q) = %s, want %s", in, b.String(), want)
		}
	}
}

func TestEncodeKeyDataLayout(t *testing.T) {
	exp := "2025-02-03T04:05:06.000007"
	got := string(encodeKeyData(KeyData{UserID: "alice", Description: "d", CreatedAt: "2025-01-01T00:00:00.5", ExpiresAt: &exp, Active: true}))
	want := `{"user_id": "alice", "description": "d", "created_at": "2025-01-01T00:00:00.5", "expires_at": "2025-02-03T04:05:06.000007", "active": true}`
	if got != want {
		t.Fatalf("encodeKeyData:\n got %s\nwant %s", got, want)
	}
	got = string(encodeKeyData(KeyData{UserID: "bob"}))
	want = `{"user_id": "bob", "description": "", "created_at": "", "expires_at": null, "active": false}`
	if got != want {
		t.Fatalf("encodeKeyData:\n got %s\nwant %s", got, want)
	}
}

func TestPyISOFormat(t *testing.T) {
	cases := []struct {
		in   time.Time
		want string
	}{
		// datetime(2024,1,2,3,4,5).isoformat() drops the zero fraction.
		{time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), "2024-01-02T03:04:05"},
		{time.Date(2024, 1, 2, 3, 4, 5, 120_000, time.UTC), "2024-01-02T03:04:05.000120"},
		// Sub-microsecond digits are truncated, as utcnow() never has them.
		{time.Date(2024, 12, 31, 23, 59, 59, 999_999_999, time.UTC), "2024-12-31T23:59:59.999999"},
		// Naive UTC whatever the input zone.
		{time.Date(2024, 1, 2, 5, 4, 5, 0, time.FixedZone("x", 2*3600)), "2024-01-02T03:04:05"},
	}
	for _, c := range cases {
		if got := pyISOFormat(c.in); got != c.want {
			t.Errorf("pyISOFormat(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParsePyISO(t *testing.T) {
	ok := map[string]time.Time{
		"2024-01-02T03:04:05":        time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		"2024-01-02T03:04:05.000120": time.Date(2024, 1, 2, 3, 4, 5, 120_000, time.UTC),
		"2024-01-02 03:04:05.5":      time.Date(2024, 1, 2, 3, 4, 5, 500_000_000, time.UTC),
		"2024-01-02T03:04":           time.Date(2024, 1, 2, 3, 4, 0, 0, time.UTC),
		"2024-01-02":                 time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
	}
	for in, want := range ok {
		got, err := parsePyISO(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("parsePyISO(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	// Offsets make Python's naive comparison raise, so they must not parse.
	for _, in := range []string{"", "yesterday", "2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05Z", "2024-13-02", "2024-01-02T03:04:05 junk"} {
		if got, err := parsePyISO(in); err == nil {
			t.Errorf("parsePyISO(%q) = %v, want an error", in, got)
		}
	}
}

func TestSetInactive(t *testing.T) {
	cases := map[string]string{
		`{"user_id": "a", "description": "", "created_at": "x", "expires_at": null, "active": true}`: `{"user_id": "a", "description": "", "created_at": "x", "expires_at": null, "active": false}`,
		// Key order and unknown keys survive, like a Python dict round trip.
		`{"active": true, "user_id": "a", "extra": {"active": true, "n": [1, 2.50]}}`: `{"active": false, "user_id": "a", "extra": {"active": true, "n": [1, 2.50]}}`,
		`{"user_id": "a", "active": 1}`:                                               `{"user_id": "a", "active": false}`,
		`{"user_id": "a"}`:                                                            `{"user_id": "a", "active": false}`,
		`{}`:                                                                          `{"active": false}`,
		`{"user_id":"a","active":"yes"}`:                                              `{"user_id":"a","active":false}`,
		`{"active": true, "active": true}`:                                            `{"active": false, "active": false}`,
	}
	for in, want := range cases {
		got, err := setInactive([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("setInactive(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{``, `[]`, `"s"`, `{"a": }`, `{"a": 1} {}`, `{"a": 1`} {
		if got, err := setInactive([]byte(in)); err == nil {
			t.Errorf("setInactive(%q) = %s, want an error", in, got)
		}
	}
}

func TestDecodeKeyDataIsStrict(t *testing.T) {
	good := `{"user_id": "alice", "description": "d", "created_at": "c", "expires_at": null, "active": true}`
	d, err := decodeKeyData([]byte(good))
	if err != nil || d.UserID != "alice" || !d.Active || d.ExpiresAt != nil {
		t.Fatalf("decodeKeyData(good) = %+v, %v", d, err)
	}
	bad := []string{
		`not json`,
		`{"description": "no user"}`,
		`{"user_id": ""}`,
		`{"user_id": 7}`,
		`{"user_id": "a", "active": "yes"}`,
		`{"user_id": "a", "expires_at": 5}`,
	}
	for _, in := range bad {
		if d, err := decodeKeyData([]byte(in)); err == nil {
			t.Errorf("decodeKeyData(%s) = %+v, want an error", in, d)
		}
	}
	// Go's struct decoding folds case; stored fields must match exactly.
	d, err = decodeKeyData([]byte(`{"user_id": "a", "ACTIVE": true}`))
	if err != nil || d.Active {
		t.Fatalf(`"ACTIVE" must not count as "active": %+v, %v`, d, err)
	}
}
