package transcribe

import (
	"context"
	"time"
)

// Source delivers PCM in consecutive windows, as media.Tools.StreamPCM
// does; samples are only valid during the call.
type Source func(ctx context.Context, window time.Duration, fn func(offset time.Duration, samples []float32) error) error

// DefaultWindow is the PCM that Stream holds at a time: 10 minutes of
// 16 kHz float32 is 38 MB, and a cut every 10 minutes costs at most a word
// at each cut.
const DefaultWindow = 10 * time.Minute

// Stream transcribes a long input window by window, so that hours of audio
// never sit in memory. Each window's segments are shifted by the window's
// offset. With Options.Auto, the language detected in the first window
// that has speech is kept for the rest, so a long file does not switch
// language midway. total, when known (the probed duration), turns
// per-window progress into overall progress; with total 0, progress is
// reported per window only.
func Stream(ctx context.Context, tr Transcriber, src Source, window, total time.Duration, opts Options, progress func(float64)) (*Transcript, error) {
	if window <= 0 {
		window = DefaultWindow
	}
	out := &Transcript{Language: opts.Language}
	if opts.Auto() {
		out.Language = ""
	}
	err := src(ctx, window, func(offset time.Duration, samples []float32) error {
		if len(samples) == 0 {
			return nil
		}
		length := pcmDuration(len(samples))
		var report func(float64)
		if progress != nil {
			report = func(f float64) {
				if total > 0 {
					progress(min(1, (offset.Seconds()+f*length.Seconds())/total.Seconds()))
				}
			}
		}
		part, err := tr.Transcribe(ctx, samples, opts, report)
		if err != nil {
			return err
		}
		// Speaker labels from turn marks start afresh in every window; the
		// first speaker of a window is taken to be the last one of the
		// window before (a cut rarely falls on a turn).
		swap := false
		if n := len(out.Segments); n > 0 && len(part.Segments) > 0 && part.Segments[0].Speaker != "" {
			swap = out.Segments[n-1].Speaker != part.Segments[0].Speaker
		}
		for _, s := range part.Segments {
			s.Start += offset
			s.End += offset
			if swap {
				s.Speaker = otherSpeaker(s.Speaker)
			}
			out.Segments = append(out.Segments, s)
		}
		out.Duration = offset + length
		if opts.Auto() && out.Language == "" && len(part.Segments) > 0 && part.Language != "" {
			out.Language = part.Language
			opts.Language = part.Language
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if progress != nil {
		progress(1)
	}
	return out, nil
}

// otherSpeaker swaps the two labels tinydiarize turns alternate between.
func otherSpeaker(label string) string {
	switch label {
	case SpeakerLabel(0):
		return SpeakerLabel(1)
	case SpeakerLabel(1):
		return SpeakerLabel(0)
	}
	return label
}
