package pyfmt

import "time"

// ISOFormat is datetime.isoformat() of an aware datetime: microsecond
// precision (the fraction left out when it is zero, and finer digits
// dropped: Python < 3.11 fromisoformat rejects them) and t's own offset as
// +HH:MM, +HH:MM:SS when it has seconds. UTC is "+00:00", never "Z".
func ISOFormat(t time.Time) string { return string(AppendISOFormat(make([]byte, 0, 32), t)) }

// AppendISOFormat appends ISOFormat(t) to dst.
func AppendISOFormat(dst []byte, t time.Time) []byte {
	dst = appendNaive(dst, t)
	_, off := t.Zone()
	sign := byte('+')
	if off < 0 {
		sign = '-'
		off = -off
	}
	dst = append(dst, sign)
	dst = appendDigits(dst, off/3600, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, off/60%60, 2)
	if off%60 != 0 {
		dst = append(dst, ':')
		dst = appendDigits(dst, off%60, 2)
	}
	return dst
}

// ISOFormatNaive is datetime.isoformat() of the naive datetime
// datetime.utcnow() would give for t: t in UTC, no offset.
func ISOFormatNaive(t time.Time) string {
	return string(appendNaive(make([]byte, 0, 26), t.UTC()))
}

// appendNaive writes t's wall clock as YYYY-MM-DDTHH:MM:SS[.ffffff].
func appendNaive(b []byte, t time.Time) []byte {
	year, month, day := t.Date()
	hour, min, sec := t.Clock()
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, min, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	if us := t.Nanosecond() / 1000; us != 0 {
		b = append(b, '.')
		b = appendDigits(b, us, 6)
	}
	return b
}

// appendDigits writes n zero-padded to width digits (more when n needs them).
func appendDigits(b []byte, n, width int) []byte {
	if n < 0 {
		b = append(b, '-')
		n = -n
	}
	var tmp [20]byte
	i := len(tmp)
	for n >= 10 {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	tmp[i] = byte('0' + n)
	for pad := width - (len(tmp) - i); pad > 0; pad-- {
		b = append(b, '0')
	}
	return append(b, tmp[i:]...)
}
