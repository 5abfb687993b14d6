package testenv

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A child that prints far more than the kept limit is drained to the end
// (it exits), and its kept output is its start, a note of what was left
// out, and its end.
func TestStartKeepsBoundedOutput(t *testing.T) {
	// 12 MiB of numbered 64-byte lines, then a last line.
	p := Start(t, t.TempDir(), nil, "sh", "-c",
		`echo first; seq -f '%063g' 1 196608; echo last`)
	if code, ok := p.Wait(60 * time.Second); !ok || code != 0 {
		t.Fatalf("the child did not finish printing: exit %d, exited %v", code, ok)
	}
	<-p.drained
	out := p.Output()
	if len(out) > outputLimit {
		t.Fatalf("kept %d bytes, want at most %d", len(out), outputLimit)
	}
	if !strings.HasPrefix(out, "first\n") || !strings.HasSuffix(out, "last\n") {
		t.Fatalf("kept output does not run from the first line to the last: %q ... %q", out[:20], out[len(out)-20:])
	}
	// Everything printed is either kept or counted as left out.
	total := len("first\n") + 196608*64 + len("last\n")
	var left int
	i := strings.Index(out, "\n[... ")
	if i < 0 {
		t.Fatal("kept output does not say that some was left out")
	}
	if _, err := fmt.Sscanf(out[i:], "\n[... %d bytes of output left out ...]\n", &left); err != nil {
		t.Fatalf("reading the left-out note: %v", err)
	}
	note := fmt.Sprintf("\n[... %d bytes of output left out ...]\n", left)
	if kept := len(out) - len(note); kept+left != total {
		t.Fatalf("kept %d + left out %d = %d bytes, but the child printed %d", kept, left, kept+left, total)
	}
}
