package transcribe

import (
	"context"
	"testing"
	"time"
)

func TestToSegmentsSpeakerTurnsAndClamping(t *testing.T) {
	s := time.Second
	raw := []rawSegment{
		{start: 0, end: 2 * s, text: " one", speakerTurn: true},
		{start: 2 * s, end: 3 * s, text: " [BLANK_AUDIO]"},
		{start: 3 * s, end: 9 * s, text: " two", speakerTurn: true},
		{start: 9 * s, end: 12 * s, text: "three"},
		{start: 12 * s, end: 14 * s, text: "past the end"},
	}
	got := toSegments(raw, 10*s, true)
	want := []Segment{
		{Start: 0, End: 2 * s, Text: "one", Speaker: "SPEAKER_00"},
		{Start: 3 * s, End: 9 * s, Text: "two", Speaker: "SPEAKER_01"},
		{Start: 9 * s, End: 10 * s, Text: "three", Speaker: "SPEAKER_00"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("segment %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if plain := toSegments(raw, 10*s, false); plain[0].Speaker != "" {
		t.Errorf("speakers without tinydiarize: %+v", plain)
	}
	if !IsTinyDiarize("/m/ggml-small.en-tdrz.bin") || IsTinyDiarize("base.en") {
		t.Error("IsTinyDiarize")
	}
}

// speakerWindows returns per window the labels a tinydiarize transcriber
// would: each window starts at SPEAKER_00.
type speakerWindows struct{ labels [][]string }

func (w *speakerWindows) Transcribe(ctx context.Context, pcm []float32, _ Options, _ func(float64)) (*Transcript, error) {
	l := w.labels[0]
	w.labels = w.labels[1:]
	out := &Transcript{Duration: pcmDuration(len(pcm))}
	for i, sp := range l {
		out.Segments = append(out.Segments, Segment{Start: time.Duration(i) * time.Second, Text: "x", Speaker: sp})
	}
	return out, nil
}

func (w *speakerWindows) Close() error { return nil }

// A window's first speaker continues the previous window's last one.
func TestStreamKeepsSpeakersAcrossWindows(t *testing.T) {
	tr := &speakerWindows{labels: [][]string{{"SPEAKER_00", "SPEAKER_01"}, {"SPEAKER_00", "SPEAKER_01"}, {"SPEAKER_00"}}}
	src := func(ctx context.Context, window time.Duration, fn func(time.Duration, []float32) error) error {
		for i := range 3 {
			if err := fn(time.Duration(i)*10*time.Second, make([]float32, 10*SampleRate)); err != nil {
				return err
			}
		}
		return nil
	}
	out, err := Stream(context.Background(), tr, src, 10*time.Second, 0, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range out.Segments {
		got = append(got, s.Speaker)
	}
	want := []string{"SPEAKER_00", "SPEAKER_01", "SPEAKER_01", "SPEAKER_00", "SPEAKER_00"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("speakers %v, want %v", got, want)
		}
	}
}
