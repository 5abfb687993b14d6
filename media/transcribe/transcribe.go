// Package transcribe turns 16 kHz mono PCM into timed text.
//
// The one backend is whisper.cpp through its Go bindings, compiled only
// with the build tag "whisper" because it needs an installed libwhisper
// (cgo). A default build has no transcriber: NewWhisper returns an error
// wrapping ErrUnavailable and Available says why, so the worker can say so
// at start and hand transcription to a Python worker instead.
package transcribe

import (
	"context"
	"errors"
	"strings"
	"time"
)

// SampleRate is the PCM rate every Transcriber takes.
const SampleRate = 16000

// ErrUnavailable means this binary has no transcription backend.
var ErrUnavailable = errors.New("transcribe: no transcriber in this build")

// Segment is a stretch of speech.
type Segment struct {
	Start time.Duration `json:"start"`
	End   time.Duration `json:"end"`
	Text  string        `json:"text"`
	// Confidence is the mean log-probability of the segment's text tokens,
	// what upstream stores from faster-whisper's avg_logprob: at most 0,
	// and the closer to 0 the surer.
	Confidence float64 `json:"confidence"`
	// Speaker is the diarization label ("SPEAKER_00"); empty when no
	// diarization ran, which is the case for the whisper backend.
	Speaker string `json:"speaker,omitempty"`
}

// Transcript is the result of a transcription.
type Transcript struct {
	Language string        `json:"language"` // ISO 639-1 code, detected or as requested
	Segments []Segment     `json:"segments"`
	Duration time.Duration `json:"duration"` // length of the audio transcribed
}

// Text is the full transcript, the segments' texts joined by spaces.
func (t *Transcript) Text() string {
	parts := make([]string, 0, len(t.Segments))
	for _, s := range t.Segments {
		if s := strings.TrimSpace(s.Text); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, " ")
}

// WordCount counts whitespace-separated words, as Python's len(str.split()).
func (t *Transcript) WordCount() int { return len(strings.Fields(t.Text())) }

// Options are per-call settings.
type Options struct {
	// Language is an ISO 639-1 code ("en", "de") or "" / "auto" to detect
	// it, as MoRAG's language option.
	Language string
}

// Auto reports whether the language is to be detected.
func (o Options) Auto() bool { return o.Language == "" || strings.EqualFold(o.Language, "auto") }

// Transcriber turns PCM into a Transcript. Implementations are safe for
// concurrent use; how much runs in parallel is theirs to decide.
type Transcriber interface {
	// Transcribe transcribes pcm: mono float32 samples in [-1, 1] at
	// SampleRate. progress, if not nil, receives the fraction done (0 to 1)
	// from the transcriber's goroutine. Cancelling ctx stops the work at
	// the next opportunity (for whisper, the next 30-second window).
	Transcribe(ctx context.Context, pcm []float32, opts Options, progress func(float64)) (*Transcript, error)
	// Close frees the models, waiting for running transcriptions.
	Close() error
}

// pcmDuration converts a sample count at SampleRate to a duration.
func pcmDuration(samples int) time.Duration {
	return time.Duration(samples) * time.Second / SampleRate
}

// DeviceMemory is one GPU's memory, device-wide, in bytes.
type DeviceMemory struct{ Used, Total uint64 }
