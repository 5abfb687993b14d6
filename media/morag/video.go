package morag

import (
	"fmt"
	"strings"
	"time"

	"morag-gpu/media"
	"morag-gpu/media/transcribe"
)

// Image is a thumbnail or keyframe as the video markdown shows it.
type Image struct {
	Ref  string        // what goes in ![…](Ref): a file name, a URL or a data URL
	Time time.Duration // shown after the heading, as upstream does for timed file names
}

// VideoInput is what a video result is made from.
type VideoInput struct {
	Info       *media.Info
	Transcript *transcribe.Transcript // nil or empty: no transcript section
	Thumbnails []Image
	Keyframes  []Image
}

// VideoMetadata is the metadata of VideoService.process_file: duration,
// resolution, fps, format, has_audio. The worker adds its own keys (the
// decode/encode paths, thumbnails) to the map.
func VideoMetadata(info *media.Info) map[string]any {
	m := map[string]any{
		"duration":   info.Duration.Seconds(),
		"resolution": "0x0",
		"fps":        0.0,
		"format":     info.Format,
		"has_audio":  info.HasAudio(),
	}
	if v := info.Video(); v != nil {
		m["resolution"] = fmt.Sprintf("%dx%d", v.Width, v.Height)
		m["fps"] = v.FPS
	}
	if m["format"] == "" {
		m["format"] = "unknown"
	}
	return m
}

// VideoMarkdown is VideoConverter.convert_to_markdown with the options
// VideoService passes: "# Video Analysis", a "## Video Information"
// table, "## Transcript" with "[MM:SS - MM:SS] text" lines, "## Thumbnails"
// (at most 5 shown) and "## Key Frames" (at most 10). Upstream's video
// task drops the transcript through a bug (AudioProcessingResult has no
// "language"); here it is included, as upstream's fix c8681a0 does.
func VideoMarkdown(in VideoInput) string {
	info := in.Info
	v := info.Video()
	if v == nil {
		v = &media.Stream{}
	}
	codec := v.Codec
	if codec == "" {
		codec = "unknown"
	}
	format := info.Format
	if format == "" {
		format = "unknown"
	}
	parts := []string{
		"# Video Analysis\n",
		"## Video Information\n",
		"| Property | Value |\n|----------|-------|",
		"| Duration | " + clock(info.Duration) + " |",
		fmt.Sprintf("| Resolution | %dx%d |", v.Width, v.Height),
		"| FPS | " + pyFloat(v.FPS) + " |",
		"| Format | " + format + " |",
		"| Video Codec | " + codec + " |",
	}
	if a := info.Audio(); a != nil {
		parts = append(parts, "| Audio | Yes ("+a.Codec+") |")
	} else {
		parts = append(parts, "| Audio | No |")
	}
	if ct := info.Tags["creation_time"]; ct != "" {
		parts = append(parts, "| Creation Time | "+ct+" |")
	}
	parts = append(parts, "\n")

	if t := in.Transcript; t != nil && t.Text() != "" {
		parts = append(parts, "## Transcript\n")
		if len(t.Segments) > 0 {
			lines := make([]string, len(t.Segments))
			for i, s := range t.Segments {
				lines[i] = "[" + clock(s.Start) + " - " + clock(s.End) + "] " + s.Text + "\n"
			}
			parts = append(parts, strings.Join(lines, "\n"))
		} else {
			parts = append(parts, t.Text())
		}
		parts = append(parts, "\n")
	}

	parts = appendImages(parts, "## Thumbnails\n", "Thumbnail", "thumbnails", in.Thumbnails, 5)
	parts = appendImages(parts, "## Key Frames\n", "Key Frame", "key frames", in.Keyframes, 10)
	return strings.Join(parts, "\n")
}

func appendImages(parts []string, heading, label, plural string, images []Image, limit int) []string {
	if len(images) == 0 {
		return parts
	}
	parts = append(parts, heading)
	for i, img := range images[:min(len(images), limit)] {
		parts = append(parts,
			fmt.Sprintf("### %s %d (%s)\n", label, i+1, clock(img.Time)),
			fmt.Sprintf("![%s %d](%s)\n\n", label, i+1, img.Ref))
	}
	if len(images) > limit {
		parts = append(parts, fmt.Sprintf("*%d more %s not shown*\n\n", len(images)-limit, plural))
	}
	return parts
}
