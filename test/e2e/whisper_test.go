//go:build whisper

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
	"morag-gpu/media/transcribe/ggmlgen"
)

// TestWhisperProcessFileGPU: the whole stack with a Go worker built with
// whisper (`make test-whisper` runs it with the cgo flags of the
// whisper.cpp build) and a generated tiny.en model: a spoken video sent
// with gpu=true and alice's key is transcribed by the Go worker itself.
func TestWhisperProcessFileGPU(t *testing.T) {
	for _, tool := range []string{"ffmpeg", "espeak-ng"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP: %s is not installed (scripts/setup installs it)", tool)
		}
	}
	dir := t.TempDir()
	wav := filepath.Join(dir, "speech.wav")
	if out, err := exec.Command("espeak-ng", "-w", wav, "Ask not what your country can do for you, ask what you can do for your country.").CombinedOutput(); err != nil {
		t.Fatalf("espeak-ng: %v: %s", err, out)
	}
	video := filepath.Join(dir, "talk.mp4")
	ffmpeg(t, "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=5", "-i", wav,
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", video)
	model, err := ggmlgen.Cached(filepath.Join(os.TempDir(), "morag-gpu-ggmlgen"), ggmlgen.Options{Name: "tiny.en", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}

	s := startWhisperStack(t, model)
	res := s.processFile(t, video, map[string]any{"include_thumbnails": true})
	meta := res.Metadata
	if !res.Success || res.ErrorMessage != nil {
		t.Fatalf("success %v error %v\n%s", res.Success, res.ErrorMessage, s.goWorker.Output())
	}
	if meta["processed_by"] != "morag-gpu" {
		t.Errorf("processed_by %v, want morag-gpu (the Go worker has a transcriber)", meta["processed_by"])
	}
	if r, _ := meta["routing"].(map[string]any); r["queue"] != "gpu-tasks-alice" {
		t.Errorf("routing %v, want gpu-tasks-alice", meta["routing"])
	}
	// The generated model speaks its script: its first segment's words.
	first := ggmlgen.ScriptText()[0]
	for _, want := range []string{"# Video Analysis", "| Audio | Yes (aac) |", "## Transcript", first, "## Thumbnails"} {
		if !strings.Contains(res.Content, want) {
			t.Errorf("content lacks %q:\n%s", want, res.Content)
		}
	}
	if len(res.Thumbnails) == 0 {
		t.Error("no thumbnails")
	}
	id, _ := meta["task_id"].(string)
	if s.goLogged(t, "task forwarded", id, nil) {
		t.Errorf("the whisper worker forwarded task %s", id)
	}
}

// startWhisperStack is startStack with the worker built with -tags whisper
// and given the model; no Python worker is needed.
func startWhisperStack(t testing.TB, model string) *stack {
	t.Helper()
	s, dir := startGateway(t)
	workerBin := filepath.Join(dir, "worker-whisper")
	cmd := exec.Command("go", "build", "-tags", "whisper", "-o", workerBin, "./worker")
	cmd.Dir = testenv.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("SKIP: the whisper worker does not build here (run through `make test-whisper`, which sets the cgo flags): %v\n%s", err, out)
	}
	s.startGoWorker(t, workerBin, nil, []string{"-gpu", "off", "-concurrency", "1", "-loglevel", "info", "-whisper-model", model}, 120*time.Second)
	if !s.goWorker.WaitOutput("transcriber: whisper.cpp", time.Second) {
		t.Fatalf("the whisper worker did not say it loaded the model:\n%s", s.goWorker.Output())
	}
	s.waitListed(t, "alice-gpu@", "gpu-tasks-alice")
	return s
}

// BenchmarkWhisperSpokenVideo sends a 1-minute spoken 720p video through
// the whole stack (gateway, download by the GPU worker, whisper on a
// generated base.en model, thumbnails) and reports where the time went,
// from the worker's metadata.timings. `make bench` runs it (the whisper
// row).
func BenchmarkWhisperSpokenVideo(b *testing.B) {
	for _, tool := range []string{"ffmpeg", "espeak-ng"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("SKIP: %s is not installed (scripts/setup installs it)", tool)
		}
	}
	dir := b.TempDir()
	wav := filepath.Join(dir, "speech.wav")
	text := strings.Repeat("Ask not what your country can do for you, ask what you can do for your country. ", 12)
	if out, err := exec.Command("espeak-ng", "-w", wav, text).CombinedOutput(); err != nil {
		b.Fatalf("espeak-ng: %v: %s", err, out)
	}
	video := filepath.Join(dir, "talk.mp4")
	ffmpeg(b, "-f", "lavfi", "-i", "testsrc=size=1280x720:rate=25:duration=60", "-stream_loop", "-1", "-i", wav,
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-t", "60", video)
	model, err := ggmlgen.Cached(filepath.Join(os.TempDir(), "morag-gpu-ggmlgen"), ggmlgen.Options{Name: "base.en", Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	s := startWhisperStack(b, model)
	b.ResetTimer()
	sum := map[string]float64{}
	for i := 0; i < b.N; i++ {
		res := s.processFile(b, video, map[string]any{"include_thumbnails": true})
		if !res.Success {
			b.Fatalf("success %v error %v", res.Success, res.ErrorMessage)
		}
		timings, _ := res.Metadata["timings"].(map[string]any)
		for _, stage := range []string{"download", "probe", "decode_audio", "transcribe", "thumbnails"} {
			v, _ := timings[stage].(float64)
			sum[stage] += v
		}
	}
	for stage, v := range sum {
		b.ReportMetric(v/float64(b.N), stage+"-s")
	}
}
