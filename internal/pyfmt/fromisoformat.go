package pyfmt

import (
	"fmt"
	"time"
)

// FromISOFormat parses Python isoformat() output, naive (taken as UTC) or
// aware, with or without fractional seconds: datetime.fromisoformat. It
// also takes what Python 3.11's fromisoformat takes in practice: a date
// alone, a space instead of "T", minutes without seconds, "Z", and offsets
// written +HH, +HHMM or +HH:MM[:SS]. Aware times keep their offset; naive
// ones are returned in UTC.
func FromISOFormat(s string) (time.Time, error) {
	t, ok := fromISOFormat(s)
	if !ok {
		return time.Time{}, fmt.Errorf("pyfmt: %q is not an ISO 8601 date-time as Python's isoformat() writes it (e.g. 2024-05-01T12:00:10.123456+00:00)", s)
	}
	return t, nil
}

func fromISOFormat(s string) (time.Time, bool) {
	p := isoParser{s: s}
	year, ok1 := p.digits(4)
	ok2 := p.char('-')
	month, ok3 := p.digits(2)
	ok4 := p.char('-')
	day, ok5 := p.digits(2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5) || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) {
		return time.Time{}, false
	}
	if p.done() {
		return time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC), true
	}
	if c := p.s[p.i]; c != 'T' && c != 't' && c != ' ' {
		return time.Time{}, false
	}
	p.i++
	hour, min, sec, nsec, loc, ok := p.clock()
	if !ok || !p.done() {
		return time.Time{}, false
	}
	return time.Date(year, time.Month(month), day, hour, min, sec, nsec, loc), true
}

// TimeFromISOFormat is Python's time.fromisoformat: a time of day as
// time.isoformat() writes it (kombu's "time" type), with an optional offset
// (loc is UTC without one).
func TimeFromISOFormat(s string) (hour, min, sec, nsec int, loc *time.Location, ok bool) {
	p := isoParser{s: s}
	hour, min, sec, nsec, loc, ok = p.clock()
	return hour, min, sec, nsec, loc, ok && p.done()
}

func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

type isoParser struct {
	s string
	i int
}

func (p *isoParser) done() bool { return p.i == len(p.s) }

func (p *isoParser) char(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *isoParser) digits(n int) (int, bool) {
	if p.i+n > len(p.s) {
		return 0, false
	}
	v := 0
	for _, c := range []byte(p.s[p.i : p.i+n]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	p.i += n
	return v, true
}

// clock parses HH:MM[:SS[.fraction]][offset].
func (p *isoParser) clock() (hour, min, sec, nsec int, loc *time.Location, ok bool) {
	var okH, okM bool
	hour, okH = p.digits(2)
	okC := p.char(':')
	min, okM = p.digits(2)
	if !(okH && okC && okM) || hour > 23 || min > 59 {
		return
	}
	if p.char(':') {
		var okS bool
		if sec, okS = p.digits(2); !okS || sec > 59 {
			return
		}
		if p.char('.') || p.char(',') {
			start := p.i
			scale := 100000000
			for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
				nsec += int(p.s[p.i]-'0') * scale
				scale /= 10
				p.i++
			}
			if p.i == start {
				return
			}
		}
	}
	loc = time.UTC
	if p.done() {
		return hour, min, sec, nsec, loc, true
	}
	switch p.s[p.i] {
	case 'Z', 'z':
		p.i++
		return hour, min, sec, nsec, loc, true
	case '+', '-':
	default:
		return
	}
	neg := p.s[p.i] == '-'
	p.i++
	oh, okOH := p.digits(2)
	if !okOH || oh > 23 {
		return
	}
	var om, os int
	colon := p.char(':')
	if !p.done() {
		var okOM bool
		if om, okOM = p.digits(2); !okOM || om > 59 {
			return
		}
		if colon && p.char(':') {
			var okOS bool
			if os, okOS = p.digits(2); !okOS || os > 59 {
				return
			}
		}
	} else if colon {
		return
	}
	off := oh*3600 + om*60 + os
	if neg {
		off = -off
	}
	if off != 0 {
		loc = time.FixedZone("", off)
	}
	return hour, min, sec, nsec, loc, true
}
