package morag

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"morag-gpu/internal/pyfmt"
)

// MoRAG's markdown is made with Python f-strings, so values appear as
// Python's str() prints them: 25.0 not 25, True not true, ['a', 'b'] for
// lists. These helpers reproduce that for the types a result holds.

// pyStr is Python's str(v).
func pyStr(v any) string { return pyfmt.Str(v) }

// pyRepr is Python's repr(v).
func pyRepr(v any) string { return pyfmt.Repr(v) }

// pyFloat is repr(float).
func pyFloat(f float64) string { return pyfmt.FloatRepr(f) }

// pyTitle is str.title(): each run of letters starts upper case and
// continues lower case.
func pyTitle(s string) string {
	var b strings.Builder
	prevLetter := false
	for _, r := range s {
		if unicode.IsLetter(r) {
			if prevLetter {
				b.WriteRune(unicode.ToLower(r))
			} else {
				b.WriteRune(unicode.ToUpper(r))
			}
			prevLetter = true
		} else {
			b.WriteRune(r)
			prevLetter = false
		}
	}
	return b.String()
}

// hms is the audio converter's HH:MM:SS of int(seconds): truncated, hours
// always shown.
func hms(d time.Duration) string {
	s := max(int64(d/time.Second), 0)
	return fmt.Sprintf("%02d:%02d:%02d", s/3600, s/60%60, s%60)
}

// clock is the video converter's _format_duration: MM:SS, or HH:MM:SS
// from one hour on.
func clock(d time.Duration) string {
	s := max(int64(d/time.Second), 0)
	if s >= 3600 {
		return fmt.Sprintf("%02d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}

// seconds is a duration as the float seconds Python code reports.
func seconds(d time.Duration) float64 { return d.Seconds() }
