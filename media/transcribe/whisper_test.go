//go:build whisper

package transcribe

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"morag-gpu/media"
)

// writeTestModel writes a ggml whisper model with tiny.en's dimensions and
// no weights: magic, hyperparameters, an all-zero mel filter bank and a
// one-token vocabulary (" ", which whisper_full looks up). whisper.cpp
// loads it ("no tensors loaded … assuming empty model for testing") and
// runs the full path, emitting no segments. 64,385 bytes, made here, so
// nothing is downloaded or checked in.
func writeTestModel(t *testing.T) string {
	t.Helper()
	var b []byte
	put := func(v uint32) { b = binary.LittleEndian.AppendUint32(b, v) }
	put(0x67676d6c) // "ggml"
	// n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
	// n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype
	for _, v := range []uint32{51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1} {
		put(v)
	}
	put(80) // mel filters: n_mel
	put(201)
	b = append(b, make([]byte, 80*201*4)...)
	put(1) // vocabulary: one token, " "
	put(1)
	b = append(b, ' ')
	if len(b) != 64385 {
		t.Fatalf("test model is %d bytes, want 64385", len(b))
	}
	p := filepath.Join(t.TempDir(), "ggml-test-tiny.en.bin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// speechPCM makes a few seconds of speech with espeak-ng and decodes it
// through the media package, as the worker does.
func speechPCM(t *testing.T) []float32 {
	t.Helper()
	if _, err := exec.LookPath("espeak-ng"); err != nil {
		t.Skipf("SKIP: espeak-ng not installed (run scripts/setup): %v", err)
	}
	wav := filepath.Join(t.TempDir(), "speech.wav")
	if out, err := exec.Command("espeak-ng", "-w", wav, "Ask not what your country can do for you.").CombinedOutput(); err != nil {
		t.Fatalf("espeak-ng: %v: %s", err, out)
	}
	pcm, err := (&media.Tools{}).DecodePCM(context.Background(), wav, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return pcm
}

func TestWhisperGeneratedModelRunsFullPath(t *testing.T) {
	tr, err := NewWhisper(WhisperConfig{Model: writeTestModel(t), Slots: 2, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	pcm := speechPCM(t)

	var progressed []float64
	var mu sync.Mutex
	out, err := tr.Transcribe(context.Background(), pcm, Options{Language: "auto"}, func(f float64) {
		mu.Lock()
		progressed = append(progressed, f)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.Duration != pcmDuration(len(pcm)) {
		t.Errorf("duration = %v, want %v", out.Duration, pcmDuration(len(pcm)))
	}
	if out.Language != "en" {
		t.Errorf("language = %q, want en from an English-only model", out.Language)
	}
	if len(progressed) == 0 || progressed[len(progressed)-1] != 1 {
		t.Errorf("progress = %v, want it to end at 1", progressed)
	}

	// Empty input must not reach Process, which panics on it.
	empty, err := tr.Transcribe(context.Background(), nil, Options{}, nil)
	if err != nil || len(empty.Segments) != 0 {
		t.Errorf("empty input: %+v, %v", empty, err)
	}

	// Two jobs at once, one per slot: no crash, both finish.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = tr.Transcribe(context.Background(), pcm, Options{}, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent job %d: %v", i, err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tr.Transcribe(ctx, pcm, Options{}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled job: error %v, want context.Canceled", err)
	}
	if _, err := tr.Transcribe(context.Background(), pcm, Options{Language: "de"}, nil); err == nil {
		t.Error("an English-only model accepted German")
	}
	tr.Close()
	if _, err := tr.Transcribe(context.Background(), pcm, Options{}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: error %v, want ErrClosed", err)
	}
}

func TestWhisperAvailable(t *testing.T) {
	if ok, reason := Available(); !ok {
		t.Errorf("whisper build says unavailable: %s", reason)
	}
}

func TestWhisperBadModelFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "not-a-model.bin")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if tr, err := NewWhisper(WhisperConfig{Model: p}); err == nil {
		tr.Close()
		t.Fatal("a 5-byte file loaded as a model")
	}
}

// With WHISPER_MODEL set to a real ggml model, the bindings module's own
// samples/jfk.wav transcribes to the famous line.
func TestWhisperJFK(t *testing.T) {
	if os.Getenv(ModelEnv) == "" {
		t.Skipf("SKIP: set %s to a ggml whisper model (e.g. ggml-base.en.bin) to run the jfk.wav transcription test", ModelEnv)
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/ggerganov/whisper.cpp/bindings/go").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		t.Skipf("SKIP: cannot locate the whisper.cpp bindings module for samples/jfk.wav (go list: %v)", err)
	}
	wav := filepath.Join(dir, "samples", "jfk.wav")
	pcm, err := (&media.Tools{}).DecodePCM(context.Background(), wav, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewWhisper(WhisperConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	start := time.Now()
	got, err := tr.Transcribe(context.Background(), pcm, Options{Language: "auto"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("jfk.wav (%v) in %v: [%s] %q", got.Duration, time.Since(start), got.Language, got.Text())
	text := strings.ToLower(got.Text())
	text = strings.NewReplacer(",", "", ".", "", ";", "").Replace(text)
	if !strings.Contains(text, "ask not what your country can do for you") {
		t.Errorf("transcript %q lacks the line", got.Text())
	}
	if got.Language != "en" {
		t.Errorf("language = %q, want en", got.Language)
	}
	for _, s := range got.Segments {
		if s.End < s.Start || s.End > got.Duration+time.Second || s.Confidence > 0 {
			t.Errorf("bad segment %+v", s)
		}
	}
}
