package media

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Every operation, successful or not, leaves the temporary directory as it
// found it. TMPDIR points at a fresh directory for this test, for the Go
// code (os.MkdirTemp) and for the ffmpeg processes it starts alike.
func TestNoTemporaryFilesLeft(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if os.TempDir() != tmp {
		t.Fatalf("os.TempDir() = %q, want %q", os.TempDir(), tmp)
	}
	out := t.TempDir() // where proxies go; not the temporary directory
	ctx := testContext(t)
	nop := func(time.Duration, []float32) error { return nil }
	run := func(tools *Tools, names ...string) {
		for _, name := range names {
			in := fixture(t, name)
			_, _ = tools.Probe(ctx, in)
			_ = tools.StreamPCM(ctx, in, time.Second, nop)
			_, _, _ = tools.Thumbnails(ctx, in, FrameOptions{Count: 1})
			_, _, _ = tools.Keyframes(ctx, in, FrameOptions{Count: 1})
			_, _ = tools.Transcode(ctx, in, filepath.Join(out, name+".proxy.mp4"), TranscodeOptions{Height: 120})
		}
	}
	run(&Tools{}, append(append([]string{}, allFormats...), "garbage.mp4", "trunc-fast.mp4", "trunc-clip.mkv")...)
	// Capabilities claiming a GPU this machine lacks make the operations
	// also take, and abandon, their GPU attempts.
	run(&Tools{GPU: Capabilities{NVDEC: true, NVENC: true, ScaleCUDA: true}}, "mp4", "trunc-fast.mp4")
	_, _ = Detect(ctx, DetectOptions{})
	assertDirEmpty(t, tmp)
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".mp4" || e.Name()[0] == '.' {
			t.Errorf("left next to the proxies: %s", e.Name())
		}
	}
}
