package bench

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

// Row 5: the media package's own benchmarks, which compare its CPU path
// with the Python way (ffmpeg subprocess plus a temporary file). Their
// output lines go into the report as they are.

const (
	mediaBench = "ExtractAudio|Thumbnails"
	mediaTitle = "media: go test ./media -run '^$' -bench '" + mediaBench + "' -benchtime 1x (CPU path vs the Python way)"
)

func benchMedia(b *testing.B, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.MediaTimeout)
	defer cancel()
	progress("media: go test ./media -run '^$' -bench '%s' -benchtime 1x", mediaBench)
	cmd := exec.CommandContext(ctx, e.gocmd, "test", "./media", "-run", "^$", "-bench", mediaBench, "-benchtime", "1x", "-count", "1")
	cmd.Dir = e.root
	out, err := cmd.CombinedOutput()
	lines, hasBench := benchLines(string(out))
	switch {
	case ctx.Err() != nil:
		e.tab.section(mediaTitle, []string{"n/a (media benchmarks did not finish within BENCH_MEDIA_SECONDS=" + e.cfg.MediaTimeout.String() + ")"})
	case err != nil:
		e.tab.section(mediaTitle, append([]string{"n/a (go test ./media failed: " + oneLine(firstLines(string(out), 2), 200) + ")"}, tail(lines, 10)...))
	case !hasBench:
		e.tab.section(mediaTitle, []string{"n/a (media has no BenchmarkExtractAudio or BenchmarkThumbnails yet)"})
	default:
		e.tab.section(mediaTitle, lines)
	}
}

// benchLines keeps go test -bench output without its header and footer,
// and reports whether it has a benchmark line.
func benchLines(out string) (lines []string, hasBench bool) {
	for _, l := range strings.Split(out, "\n") {
		t := strings.TrimSpace(l)
		if t == "" || t == "PASS" || strings.HasPrefix(t, "goos:") || strings.HasPrefix(t, "goarch:") ||
			strings.HasPrefix(t, "pkg:") || strings.HasPrefix(t, "cpu:") || strings.HasPrefix(t, "ok ") {
			continue
		}
		lines = append(lines, strings.TrimRight(l, " \t"))
		if strings.HasPrefix(t, "Benchmark") {
			hasBench = true
		}
	}
	return lines, hasBench
}

func tail(ls []string, n int) []string {
	if len(ls) > n {
		return ls[len(ls)-n:]
	}
	return ls
}
