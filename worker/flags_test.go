package main

import (
	"strings"
	"testing"
)

// TestFlagSpellings: -log-level (the gateway's spelling) sets the same
// level as -loglevel, and the new flags are known. Each call fails before
// anything connects, on the value given.
func TestFlagSpellings(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-loglevel", "loud"}, `-loglevel "loud"`},
		{[]string{"-log-level", "loud"}, `-loglevel "loud"`},
		{[]string{"--log-level=loud"}, `-loglevel "loud"`},
		{[]string{"-key-prefix", "p:", "-metrics-addr", "127.0.0.1:bad"}, "-metrics-addr"},
	} {
		err := run(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q) = %v, want an error naming %s", c.args, err, c.want)
		}
	}
}
