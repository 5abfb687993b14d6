package media

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

func TestStreamPCMFormats(t *testing.T) {
	tools := &Tools{}
	for _, format := range allFormats {
		t.Run(format, func(t *testing.T) {
			path := fixture(t, format)
			info, err := tools.Probe(testContext(t), path)
			if err != nil {
				t.Fatal(err)
			}
			var (
				pcm     []float32
				offsets []time.Duration
				sizes   []int
			)
			err = tools.StreamPCM(testContext(t), path, time.Second, func(off time.Duration, s []float32) error {
				offsets = append(offsets, off)
				sizes = append(sizes, len(s))
				pcm = append(pcm, s...)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// The sample count matches the probed duration at 16 kHz
			// within 1% (codec priming and padding account for the rest).
			want := info.Duration.Seconds() * SampleRate
			if got := float64(len(pcm)); math.Abs(got-want) > want/100 {
				t.Errorf("%d samples, want %.0f ± 1%%", len(pcm), want)
			}
			// One-second windows: every window but the last is full and
			// starts where the previous one ended.
			for i, off := range offsets {
				if want := time.Duration(i) * time.Second; off != want {
					t.Errorf("window %d starts at %v, want %v", i, off, want)
				}
				if i < len(sizes)-1 && sizes[i] != SampleRate {
					t.Errorf("window %d has %d samples, want %d", i, sizes[i], SampleRate)
				}
			}
			if len(offsets) < 3 {
				t.Errorf("%d windows for 3 s, want 3 or 4", len(offsets))
			}
			assertTone(t, pcm)
		})
	}
}

// assertTone checks that pcm is the fixtures' 440 Hz tone at 16 kHz: loud
// enough, within [-1, 1], and crossing zero 880 times a second. A wrong
// sample format or rate would give noise or a different pitch.
func assertTone(t *testing.T, pcm []float32) {
	t.Helper()
	// Skip the edges, where encoders fade in and out.
	body := pcm[SampleRate/4 : len(pcm)-SampleRate/4]
	var sum float64
	crossings := 0
	for i, s := range body {
		if s < -1.0001 || s > 1.0001 || math.IsNaN(float64(s)) {
			t.Fatalf("sample %d = %v is not normalized PCM", i, s)
		}
		sum += float64(s) * float64(s)
		if i > 0 && (body[i-1] < 0) != (s < 0) {
			crossings++
		}
	}
	if rms := math.Sqrt(sum / float64(len(body))); rms < 0.05 {
		t.Errorf("RMS %.4f: the audio is silent", rms)
	}
	hz := float64(crossings) / 2 / (float64(len(body)) / SampleRate)
	if math.Abs(hz-toneHz) > toneHz*0.03 {
		t.Errorf("tone measured at %.1f Hz, want %d Hz", hz, toneHz)
	}
}

func TestDecodePCMSpeech(t *testing.T) {
	path := fixture(t, "speech.wav") // espeak-ng, 22050 Hz
	pcm, err := (&Tools{}).DecodePCM(testContext(t), path, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(pcm) < SampleRate {
		t.Fatalf("%d samples of speech, want more than a second", len(pcm))
	}
	var peak float32
	for _, s := range pcm {
		peak = max(peak, s, -s)
	}
	if peak < 0.1 {
		t.Errorf("peak %.3f: the speech decoded to silence", peak)
	}
}

func TestDecodePCMLimit(t *testing.T) {
	_, err := (&Tools{}).DecodePCM(testContext(t), fixture(t, "mp3"), time.Second)
	assertKind(t, err, ErrTooLong)
}

func TestStreamPCMDamagedInput(t *testing.T) {
	cases := []struct {
		name, fixture string
		kind          error
	}{
		{"garbage", "garbage.mp4", ErrCorrupt},
		{"mp4 without moov", "trunc-clip.mp4", ErrCorrupt},
		{"mp4 cut in mdat", "trunc-fast.mp4", ErrTruncated},
		{"mkv", "trunc-clip.mkv", ErrTruncated},
		{"webm", "trunc-clip.webm", ErrTruncated},
		{"mp3 shorter than its Xing header", "trunc-tone.mp3", ErrTruncated},
		{"video without sound", "mute.mp4", ErrNoAudio},
		{"subtitles", "notes.srt", ErrFormat},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := (&Tools{}).StreamPCM(testContext(t), fixture(t, c.fixture), time.Second, func(time.Duration, []float32) error { return nil })
			assertKind(t, err, c.kind)
			t.Logf("error: %v", err)
		})
	}
}

func TestStreamPCMCallbackErrorStopsDecoding(t *testing.T) {
	stop := errors.New("stop here")
	calls := 0
	err := (&Tools{}).StreamPCM(testContext(t), fixture(t, "wav"), 500*time.Millisecond, func(time.Duration, []float32) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("error = %v, want the callback's", err)
	}
	if calls != 1 {
		t.Errorf("callback ran %d times after failing, want 1", calls)
	}
}

func TestStreamPCMCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	err := (&Tools{}).StreamPCM(ctx, fixture(t, "mkv"), 100*time.Millisecond, func(time.Duration, []float32) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	if calls > 2 {
		t.Errorf("callback ran %d times after cancel", calls)
	}
}

func TestStreamPCMBadWindow(t *testing.T) {
	err := (&Tools{}).StreamPCM(testContext(t), fixture(t, "wav"), 0, func(time.Duration, []float32) error { return nil })
	if err == nil {
		t.Fatal("a zero window was accepted")
	}
}
