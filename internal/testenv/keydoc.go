package testenv

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// keyDocPattern is one backticked name in a table's Key column.
var keyDocPattern = regexp.MustCompile("`([^`]+)`")

// keyDocExample is the "(e.g. `...`)" aside after a pattern: an instance,
// not a pattern of its own.
var keyDocExample = regexp.MustCompile(`\(e\.g\.[^)]*\)`)

// RedisKeyDoc returns the key and channel patterns in the Key column of
// the tables under the docs/redis-keys.md heading that starts with
// section ("Task queues", "MoRAG's and ours"), sorted and without
// duplicates, so that a test can compare them with the builders and the
// document cannot drift from the code.
func RedisKeyDoc(t testing.TB, section string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(RepoRoot(t), "docs", "redis-keys.md"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var out []string
	in, found := false, false
	for line := range strings.Lines(string(raw)) {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			in = strings.HasPrefix(h, section)
			found = found || in
			continue
		}
		if !in || !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 3 || strings.TrimSpace(cells[1]) == "Key" || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") {
			continue
		}
		for _, m := range keyDocPattern.FindAllStringSubmatch(keyDocExample.ReplaceAllString(cells[1], ""), -1) {
			out = append(out, m[1])
		}
	}
	if !found {
		t.Fatalf("testenv: docs/redis-keys.md has no section %q", section)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
