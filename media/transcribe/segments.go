package transcribe

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// rawSegment is one segment as whisper.cpp reports it, times relative to
// the PCM it was given.
type rawSegment struct {
	start, end  time.Duration
	text        string
	logprob     float64 // mean log-probability of its text tokens
	speakerTurn bool    // tinydiarize: the next segment is another speaker
}

// toSegments turns whisper.cpp's segments into Segments: blank ones are
// dropped, times are kept inside the audio, and with speaker turns
// (tinydiarize) each segment gets a speaker label.
//
// tinydiarize marks where the speaker changes, not who speaks, so labels
// alternate between SPEAKER_00 and SPEAKER_01 at each turn: right for the
// two-party conversations it was trained on, and in MoRAG's label form
// (what pyannote produces upstream), so the markdown shows the turns.
func toSegments(raw []rawSegment, duration time.Duration, turns bool) []Segment {
	var out []Segment
	speaker := 0
	for _, r := range raw {
		label := ""
		if turns {
			label = SpeakerLabel(speaker)
		}
		if r.speakerTurn {
			speaker = 1 - speaker
		}
		text := strings.TrimSpace(r.text)
		if text == "" || text == "[BLANK_AUDIO]" {
			continue
		}
		if duration > 0 && r.start >= duration {
			continue
		}
		end := r.end
		if duration > 0 && end > duration {
			end = duration
		}
		out = append(out, Segment{Start: r.start, End: max(end, r.start), Text: text, Confidence: r.logprob, Speaker: label})
	}
	return out
}

// SpeakerLabel is MoRAG's label for speaker n: SPEAKER_00, SPEAKER_01, …
func SpeakerLabel(n int) string { return fmt.Sprintf("SPEAKER_%02d", n) }

// IsTinyDiarize reports whether a model name or file is a tinydiarize
// model (small.en-tdrz), whose speaker-turn marks become speaker labels.
func IsTinyDiarize(model string) bool {
	return strings.Contains(strings.ToLower(filepath.Base(model)), "tdrz")
}
