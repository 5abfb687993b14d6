package transcribe

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// windowEcho is a Transcriber that returns one segment per call, naming the
// call and spanning the input, in the language it was asked for or "de".
type windowEcho struct {
	calls []Options
}

func (w *windowEcho) Transcribe(ctx context.Context, pcm []float32, opts Options, progress func(float64)) (*Transcript, error) {
	w.calls = append(w.calls, opts)
	if progress != nil {
		progress(0.5)
		progress(1)
	}
	lang := opts.Language
	if opts.Auto() {
		lang = "de"
	}
	d := pcmDuration(len(pcm))
	if pcm[0] == 0 { // a silent window: no speech, no language
		return &Transcript{Language: "en", Duration: d}, nil
	}
	return &Transcript{Language: lang, Duration: d, Segments: []Segment{
		{Start: 100 * time.Millisecond, End: d - 100*time.Millisecond, Text: fmt.Sprintf(" call %d ", len(w.calls))},
	}}, nil
}

func (w *windowEcho) Close() error { return nil }

// source delivers n windows of the given length; a window whose index is
// in silent starts with a zero sample.
func source(n int, length time.Duration, silent map[int]bool) Source {
	return func(ctx context.Context, window time.Duration, fn func(time.Duration, []float32) error) error {
		if window != length {
			return fmt.Errorf("asked for window %v, want %v", window, length)
		}
		for i := range n {
			pcm := make([]float32, int(length.Seconds()*SampleRate))
			if !silent[i] {
				pcm[0] = 0.5
			}
			if err := fn(time.Duration(i)*length, pcm); err != nil {
				return err
			}
		}
		return fn(time.Duration(n)*length, nil) // an empty tail is skipped
	}
}

func TestStreamShiftsSegmentsAndKeepsLanguage(t *testing.T) {
	tr := &windowEcho{}
	var progress []float64
	out, err := Stream(context.Background(), tr, source(3, 2*time.Second, map[int]bool{0: true}), 2*time.Second, 6*time.Second,
		Options{Language: "auto"}, func(f float64) { progress = append(progress, f) })
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.calls) != 3 {
		t.Fatalf("%d Transcribe calls, want 3 (the empty window is skipped)", len(tr.calls))
	}
	// Window 0 is silent, so its "en" does not count; window 1 detects
	// "de", which window 2 is then told to use.
	if !tr.calls[0].Auto() || !tr.calls[1].Auto() || tr.calls[2].Language != "de" {
		t.Errorf("languages asked = %+v, want auto, auto, de", tr.calls)
	}
	if out.Language != "de" {
		t.Errorf("language = %q, want de", out.Language)
	}
	if len(out.Segments) != 2 {
		t.Fatalf("segments = %+v", out.Segments)
	}
	for i, s := range out.Segments {
		start := time.Duration(i+1)*2*time.Second + 100*time.Millisecond
		if s.Start != start || s.End != start+1800*time.Millisecond {
			t.Errorf("segment %d spans %v-%v, want it shifted to start at %v", i, s.Start, s.End, start)
		}
	}
	if out.Text() != "call 2 call 3" || out.WordCount() != 4 {
		t.Errorf("text %q (%d words)", out.Text(), out.WordCount())
	}
	if out.Duration != 6*time.Second {
		t.Errorf("duration = %v, want 6s", out.Duration)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i] < progress[i-1] {
			t.Fatalf("progress went backwards: %v", progress)
		}
	}
	if len(progress) == 0 || progress[len(progress)-1] != 1 || progress[0] > 0.2 {
		t.Errorf("progress = %v, want from near 0 up to 1", progress)
	}
}

func TestStreamExplicitLanguageAndErrors(t *testing.T) {
	tr := &windowEcho{}
	out, err := Stream(context.Background(), tr, source(2, time.Second, nil), time.Second, 0, Options{Language: "fr"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Language != "fr" || tr.calls[0].Language != "fr" || tr.calls[1].Language != "fr" {
		t.Errorf("language %q, calls %+v; want fr throughout", out.Language, tr.calls)
	}

	boom := errors.New("boom")
	failing := func(ctx context.Context, w time.Duration, fn func(time.Duration, []float32) error) error { return boom }
	if _, err := Stream(context.Background(), tr, failing, time.Second, 0, Options{}, nil); !errors.Is(err, boom) {
		t.Errorf("source error = %v, want boom", err)
	}
}

func TestDefaultBuildHasNoTranscriber(t *testing.T) {
	ok, reason := Available()
	if ok {
		t.Skip("SKIP: built with the whisper tag; the whisper tests cover this build")
	}
	if reason == "" {
		t.Error("no reason given")
	}
	tr, err := NewWhisper(WhisperConfig{Model: "/nonexistent"})
	if tr != nil || !errors.Is(err, ErrUnavailable) {
		t.Errorf("NewWhisper = %v, %v; want nil and ErrUnavailable", tr, err)
	}
	t.Logf("default build: %v", err)
}

func TestWhisperConfigNeedsAModel(t *testing.T) {
	t.Setenv(ModelEnv, "")
	if _, err := (WhisperConfig{}).resolve(context.Background()); err == nil {
		t.Error("no model accepted")
	}
	if _, err := (WhisperConfig{Model: t.TempDir()}).resolve(context.Background()); err == nil {
		t.Error("a directory accepted as model")
	}
	t.Setenv(ModelEnv, "/nonexistent/ggml-base.bin")
	if _, err := (WhisperConfig{}).resolve(context.Background()); err == nil {
		t.Error("a missing file accepted as model")
	}
}
