// Package morag formats results exactly as MoRAG (mattes337/MoRAG @
// bb0da91) does, so a client cannot tell a Go worker's result from a
// Python worker's: the audio markdown of AudioConverter.convert_to_markdown,
// the video markdown of VideoConverter.convert_to_markdown (with the
// transcript, which upstream loses to a bug), and the metadata maps with
// upstream's keys.
package morag

import (
	"math"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"morag-gpu/media"
	"morag-gpu/media/transcribe"
)

// AudioInput is what an audio result is made from.
type AudioInput struct {
	FileName       string // shown as the title and "filename"; the upload's name
	FileSize       int64  // 0 means Info.Size
	Info           *media.Info
	Transcript     *transcribe.Transcript
	ProcessingTime time.Duration
}

// AudioMetadata returns the metadata of MoRAG's AudioProcessor.process:
// filename, file_size, file_extension, duration, channels, sample_rate,
// bit_depth, tag_*, processing_time, word_count, segment_count,
// has_speaker_info, has_topic_info, language, and num_speakers and
// speakers when the segments carry speakers.
//
// Differences that cannot be helped: tags are ffprobe's names (title,
// artist) where upstream has mutagen's (TIT2, ©nam), and bit_depth is the
// source's sample size where upstream has pydub's decode size (16 for
// lossy codecs, which is also what this reports when the codec has none).
// Topic segmentation does not exist here, so has_topic_info is false, as
// upstream reports with topic segmentation off.
func AudioMetadata(in AudioInput) map[string]any {
	m := map[string]any{
		"filename":       in.FileName,
		"file_extension": strings.TrimPrefix(strings.ToLower(filepath.Ext(in.FileName)), "."),
	}
	size := in.FileSize
	if in.Info != nil {
		if size == 0 {
			size = in.Info.Size
		}
		dur := in.Info.Duration
		if a := in.Info.Audio(); a != nil {
			if a.Duration > 0 {
				dur = a.Duration
			}
			m["channels"] = a.Channels
			m["sample_rate"] = a.SampleRate
			m["bit_depth"] = 16
			if a.BitsPerSample > 0 {
				m["bit_depth"] = a.BitsPerSample
			}
		}
		// pydub: len(audio) / 1000.0, milliseconds.
		m["duration"] = math.Round(dur.Seconds()*1000) / 1000
		for k, v := range in.Info.Tags {
			switch k := strings.ToLower(k); k {
			case "cover", "picture", "artwork":
			default:
				m["tag_"+k] = v
			}
		}
	}
	m["file_size"] = size
	m["processing_time"] = seconds(in.ProcessingTime)

	t := in.Transcript
	if t == nil {
		t = &transcribe.Transcript{}
	}
	m["word_count"] = t.WordCount()
	m["segment_count"] = len(t.Segments)
	m["has_topic_info"] = false
	if t.Language != "" {
		m["language"] = t.Language
	}
	speakers := speakersOf(t.Segments)
	m["has_speaker_info"] = len(speakers) > 0
	if len(speakers) > 0 {
		m["num_speakers"] = len(speakers)
		m["speakers"] = speakers
	}
	return m
}

// speakersOf lists the distinct speaker labels, sorted (upstream lists a
// Python set, in no particular order).
func speakersOf(segs []transcribe.Segment) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range segs {
		if s.Speaker != "" && !seen[s.Speaker] {
			seen[s.Speaker] = true
			out = append(out, s.Speaker)
		}
	}
	sort.Strings(out)
	return out
}

// AudioMarkdown is AudioConverter.convert_to_markdown with the options
// AudioService passes:
//
//	# Audio Transcription: <file>
//	## Metadata            (duration as HH:MM:SS, speakers, word count)
//	## Full Transcript
//	## Detailed Transcript
//
// The detailed transcript groups consecutive segments of one speaker into
// "**SPEAKER_00 (HH:MM:SS - HH:MM:SS)**: text" lines when the segments
// carry speakers, and lists "[HH:MM:SS] text" lines when they do not, as
// upstream does without diarization. A transcript without segments gives
// "", as upstream's failed conversion does.
func AudioMarkdown(fileName string, t *transcribe.Transcript, meta map[string]any) string {
	if t == nil || len(t.Segments) == 0 {
		return ""
	}
	parts := []string{"# Audio Transcription: " + filepath.Base(fileName) + "\n", "## Metadata\n"}
	// AudioConversionOptions.metadata_fields, in order.
	for _, field := range []string{"duration", "num_speakers", "speakers", "num_topics", "word_count"} {
		v, ok := meta[field]
		if !ok {
			continue
		}
		value := pyStr(v)
		if field == "duration" {
			if secs, ok := number(v); ok {
				value = hms(time.Duration(secs * float64(time.Second)))
			}
		}
		parts = append(parts, "- **"+pyTitle(strings.ReplaceAll(field, "_", " "))+"**: "+value)
	}
	parts = append(parts, "\n", "## Full Transcript\n", t.Text(), "\n", "## Detailed Transcript\n")
	parts = append(parts, detailedLines(t.Segments)...)
	return strings.Join(parts, "\n")
}

// detailedLines is AudioConverter._format_segments.
func detailedLines(segs []transcribe.Segment) []string {
	var lines []string
	if len(speakersOf(segs)) == 0 {
		for _, s := range segs {
			lines = append(lines, "["+hms(s.Start)+"] "+s.Text)
		}
		return append(lines, "")
	}
	var (
		speaker    string
		texts      []string
		start, end time.Duration
	)
	flush := func() {
		if speaker != "" && len(texts) > 0 {
			lines = append(lines, "**"+speaker+" ("+hms(start)+" - "+hms(end)+")**: "+strings.Join(texts, " ")+"\n")
		}
	}
	for _, s := range segs {
		sp := s.Speaker
		if sp == "" {
			sp = "Unknown"
		}
		if sp != speaker {
			flush()
			speaker, texts, start, end = sp, []string{s.Text}, s.Start, s.End
		} else {
			texts = append(texts, s.Text)
			end = s.End
		}
	}
	flush()
	return lines
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}
