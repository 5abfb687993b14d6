package pyfmt

import (
	"fmt"
	"log"
	"testing"
	"time"
)

func TestISOFormatCases(t *testing.T) {
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2024, 5, 1, 12, 0, 10, 123456789, time.UTC), "2024-05-01T12:00:10.123456+00:00"},
		{time.Date(2024, 5, 1, 12, 0, 10, 0, time.UTC), "2024-05-01T12:00:10+00:00"},
		{time.Date(2024, 5, 1, 12, 0, 10, 999, time.UTC), "2024-05-01T12:00:10+00:00"},
		{time.Date(2024, 5, 1, 12, 0, 10, 1000, time.UTC), "2024-05-01T12:00:10.000001+00:00"},
		{time.Date(999, 1, 2, 3, 4, 5, 0, time.FixedZone("", -(5*3600+30*60))), "0999-01-02T03:04:05-05:30"},
		{time.Date(2024, 5, 1, 0, 0, 0, 0, time.FixedZone("", 3600+1)), "2024-05-01T00:00:00+01:00:01"},
	} {
		if got := ISOFormat(tc.in); got != tc.want {
			t.Errorf("ISOFormat(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestFromISOFormat(t *testing.T) {
	utc := func(y, mo, d, h, mi, s, ns int) time.Time {
		return time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC)
	}
	for in, want := range map[string]time.Time{
		"2024-05-01T12:00:10.123456+00:00": utc(2024, 5, 1, 12, 0, 10, 123456000),
		"2024-05-01T12:00:10+00:00":        utc(2024, 5, 1, 12, 0, 10, 0),
		"2024-05-01T12:00:10.123456":       utc(2024, 5, 1, 12, 0, 10, 123456000),
		"2024-05-01T12:00:10":              utc(2024, 5, 1, 12, 0, 10, 0),
		"2024-05-01T12:00:10Z":             utc(2024, 5, 1, 12, 0, 10, 0),
		"2024-05-01T12:00:10.5Z":           utc(2024, 5, 1, 12, 0, 10, 5e8),
		"2024-05-01 12:00:10+02:00":        utc(2024, 5, 1, 10, 0, 10, 0),
		"2024-05-01T12:00:10-0130":         utc(2024, 5, 1, 13, 30, 10, 0),
		"2024-05-01T12:00+01":              utc(2024, 5, 1, 11, 0, 0, 0),
		"2024-05-01":                       utc(2024, 5, 1, 0, 0, 0, 0),
		"2024-02-29T23:59:59.999999999":    utc(2024, 2, 29, 23, 59, 59, 999999999),
	} {
		got, err := FromISOFormat(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("FromISOFormat(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "2024-05-01T", "2024-13-01", "2023-02-29", "2024-05-01T24:00:00", "2024-05-01T12:00:10+", "2024-05-01T12:00:10.",
		"2024-05-01T12:00:10+01:", "2024-05-01T12:00:10 junk", "tomorrow", "2024-5-1"} {
		if got, err := FromISOFormat(in); err == nil {
			t.Errorf("FromISOFormat(%q) = %v, want an error", in, got)
		}
	}
	// Round trip with an offset keeps the instant and the offset.
	in := time.Date(2024, 5, 1, 12, 0, 10, 7000, time.FixedZone("", -7200))
	got, err := FromISOFormat(ISOFormat(in))
	if _, off := got.Zone(); err != nil || !got.Equal(in) || off != -7200 {
		t.Errorf("round trip: %v %v", got, err)
	}
}

// Python's isoformat, both ways.
func ExampleFromISOFormat() {
	t, err := FromISOFormat("2024-05-01T12:00:10.5+02:00")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.UTC())
	fmt.Println(ISOFormat(t.UTC()))
	// Output:
	// 2024-05-01 10:00:10.5 +0000 UTC
	// 2024-05-01T10:00:10.500000+00:00
}
