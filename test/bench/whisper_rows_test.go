package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The whisper row: media/transcribe's whisper benchmarks (build tag
// whisper) on generated models, CPU, 2 threads: real-time factor per size
// (tiny, base, small), one stream vs two on one model with the RSS each
// slot adds, and our pipeline vs whisper.cpp's whisper-cli on the same
// audio, and a 1-minute spoken video through /process/file with the time
// split by stage (test/e2e BenchmarkWhisperSpokenVideo). Needs a whisper.cpp build (`make whisper`); without one the row
// says so. BENCH_WHISPER_SECONDS (default 900) bounds it.

const whisperTitle = "whisper: go test -tags whisper ./media/transcribe -run '^$' -bench Whisper -benchtime 1x (generated models, CPU, 2 threads)"

func benchWhisper(b *testing.B, e *env) {
	limit := 900 * time.Second
	if v, err := strconv.Atoi(os.Getenv("BENCH_WHISPER_SECONDS")); err == nil && v > 0 {
		limit = time.Duration(v) * time.Second
	}
	script := filepath.Join(e.root, "scripts", "whisper-build")
	if out, err := exec.Command(script, "env").CombinedOutput(); err != nil {
		e.tab.section(whisperTitle, []string{"n/a (" + oneLine(string(out), 200) + ")"})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	progress("whisper: %s (minutes)", whisperTitle)
	cmd := exec.CommandContext(ctx, script, "go", "test", "-tags", "whisper", "./media/transcribe", "-run", "^$", "-bench", "Whisper", "-benchtime", "1x", "-count", "1", "-timeout", "30m")
	cmd.Dir = e.root
	out, err := cmd.CombinedOutput()
	if err == nil {
		// A 1-minute spoken video through /process/file, split into
		// download, probe, audio decode, transcription and thumbnails.
		progress("whisper: a 1-minute spoken video through /process/file")
		cmd = exec.CommandContext(ctx, script, "go", "test", "-tags", "whisper", "./test/e2e", "-run", "^$", "-bench", "WhisperSpokenVideo", "-benchtime", "1x", "-count", "1", "-timeout", "20m")
		cmd.Dir = e.root
		var more []byte
		more, err = cmd.CombinedOutput()
		out = append(out, more...)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "Benchmark") {
			lines = append(lines, strings.TrimRight(l, " \t"))
		}
	}
	switch {
	case ctx.Err() != nil:
		e.tab.section(whisperTitle, append([]string{"n/a (did not finish within BENCH_WHISPER_SECONDS=" + limit.String() + ")"}, lines...))
	case err != nil:
		e.tab.section(whisperTitle, append([]string{"n/a (failed: " + oneLine(string(out[max(0, len(out)-400):]), 200) + ")"}, lines...))
	default:
		e.tab.section(whisperTitle, lines)
	}
}
