package pyfmt

import "testing"

func TestStrReprCases(t *testing.T) {
	for in, want := range map[string]string{
		"foo":      `'foo'`,
		"it's":     `"it's"`,
		`it's "x"`: `'it\'s "x"'`,
		"a\nb\\":   `'a\nb\\'`,
		"é\x01":    `'é\x01'`,
	} {
		if got := StrRepr(in); got != want {
			t.Errorf("StrRepr(%q) = %s, want %s", in, got, want)
		}
	}
}
