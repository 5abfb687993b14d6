package morag

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"morag-gpu/media"
	"morag-gpu/media/transcribe"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func sec(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// segments is the fixed transcript the golden files are made from.
func segments(speakers bool) []transcribe.Segment {
	segs := []transcribe.Segment{
		{Start: sec(0), End: sec(2.5), Text: "And so my fellow Americans,", Speaker: "SPEAKER_00"},
		{Start: sec(2.5), End: sec(7.9), Text: "ask not what your country can do for you,", Speaker: "SPEAKER_00"},
		{Start: sec(7.9), End: sec(11), Text: "ask what you can do for your country.", Speaker: "SPEAKER_01"},
		{Start: sec(3599.5), End: sec(3725.25), Text: "Thank you.", Speaker: "SPEAKER_00"},
	}
	for i := range segs {
		segs[i].Confidence = -0.25
		if !speakers {
			segs[i].Speaker = ""
		}
	}
	return segs
}

func audioInfo() *media.Info {
	return &media.Info{
		Path: "/tmp/upload-1234.mp3", Format: "mp3", Duration: sec(3725.2653), Size: 59604,
		Tags: map[string]string{"title": "Inaugural Address", "encoder": "Lavf59.27.100"},
		Streams: []media.Stream{{Index: 0, Type: "audio", Codec: "mp3", Channels: 2, SampleRate: 44100,
			Duration: sec(3725.2653)}},
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file.\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

func TestAudioMarkdownGolden(t *testing.T) {
	for _, c := range []struct {
		name     string
		speakers bool
	}{{"audio_speakers.md", true}, {"audio_plain.md", false}} {
		t.Run(c.name, func(t *testing.T) {
			tr := &transcribe.Transcript{Language: "en", Segments: segments(c.speakers), Duration: sec(3725.2653)}
			meta := AudioMetadata(AudioInput{FileName: "address.mp3", Info: audioInfo(), Transcript: tr, ProcessingTime: 1500 * time.Millisecond})
			md := AudioMarkdown("address.mp3", tr, meta)
			golden(t, c.name, md)
			if !strings.HasPrefix(md, "# Audio Transcription: address.mp3\n") {
				t.Errorf("title line missing")
			}
			for _, section := range []string{"\n## Metadata\n", "\n## Full Transcript\n", "\n## Detailed Transcript\n", "- **Duration**: 01:02:05"} {
				if !strings.Contains(md, section) {
					t.Errorf("markdown lacks %q", section)
				}
			}
			if c.speakers && !strings.Contains(md, "**SPEAKER_00 (00:00:00 - 00:00:07)**: And so my fellow Americans, ask not what your country can do for you,") {
				t.Error("consecutive segments of one speaker are not grouped")
			}
		})
	}
}

func TestAudioMarkdownWithoutSegmentsIsEmpty(t *testing.T) {
	if md := AudioMarkdown("a.mp3", &transcribe.Transcript{}, nil); md != "" {
		t.Errorf("markdown = %q, want \"\" as upstream's failed conversion", md)
	}
}

func TestAudioMetadataKeys(t *testing.T) {
	tr := &transcribe.Transcript{Language: "en", Segments: segments(true)}
	m := AudioMetadata(AudioInput{FileName: "Address.MP3", Info: audioInfo(), Transcript: tr, ProcessingTime: 2 * time.Second})
	want := map[string]any{
		"filename": "Address.MP3", "file_size": int64(59604), "file_extension": "mp3", "duration": 3725.265,
		"channels": 2, "sample_rate": 44100, "bit_depth": 16, "tag_title": "Inaugural Address", "tag_encoder": "Lavf59.27.100",
		"processing_time": 2.0, "word_count": 24, "segment_count": 4, "has_speaker_info": true,
		"has_topic_info": false, "num_speakers": 2, "language": "en",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if sp, _ := m["speakers"].([]string); len(sp) != 2 || sp[0] != "SPEAKER_00" || sp[1] != "SPEAKER_01" {
		t.Errorf("speakers = %#v", m["speakers"])
	}
	if len(m) != len(want)+1 {
		t.Errorf("metadata has %d keys, want %d: %v", len(m), len(want)+1, m)
	}
	// Without speakers, upstream (diarization off) has no speaker keys.
	tr.Segments = segments(false)
	m = AudioMetadata(AudioInput{FileName: "a.wav", Info: audioInfo(), Transcript: tr})
	if _, ok := m["num_speakers"]; ok || m["has_speaker_info"] != false {
		t.Errorf("speaker keys without speakers: %v", m)
	}
	if _, err := json.Marshal(m); err != nil {
		t.Errorf("metadata does not encode as JSON: %v", err)
	}
}

func videoInfo() *media.Info {
	return &media.Info{
		Path: "/tmp/upload.mp4", Format: "mov,mp4,m4a,3gp,3g2,mj2", Duration: sec(754.32), Size: 1234567,
		Tags: map[string]string{"creation_time": "2024-05-01T10:00:00.000000Z"},
		Streams: []media.Stream{
			{Index: 0, Type: "video", Codec: "h264", Width: 1920, Height: 1080, FPS: 30000.0 / 1001},
			{Index: 1, Type: "audio", Codec: "aac", Channels: 2, SampleRate: 48000},
		},
	}
}

func TestVideoMarkdownGolden(t *testing.T) {
	var thumbs, keys []Image
	for i := range 6 {
		thumbs = append(thumbs, Image{Ref: "thumbnail_" + string(rune('1'+i)) + ".jpg", Time: sec(150.5 * float64(i))})
	}
	for i := range 2 {
		keys = append(keys, Image{Ref: "keyframe_" + string(rune('1'+i)) + ".jpg", Time: sec(3700 * float64(i))})
	}
	md := VideoMarkdown(VideoInput{
		Info:       videoInfo(),
		Transcript: &transcribe.Transcript{Language: "en", Segments: segments(false)},
		Thumbnails: thumbs,
		Keyframes:  keys,
	})
	golden(t, "video.md", md)
	for _, want := range []string{"# Video Analysis\n", "| FPS | 29.97002997002997 |", "| Audio | Yes (aac) |",
		"## Transcript\n", "[00:02 - 00:07] ask not what your country can do for you,", "*1 more thumbnails not shown*"} {
		if !strings.Contains(md, want) {
			t.Errorf("video markdown lacks %q", want)
		}
	}

	// A silent video without transcript, thumbnails or keyframes.
	info := videoInfo()
	info.Streams = info.Streams[:1]
	info.Streams[0].FPS = 25
	info.Tags = nil
	golden(t, "video_silent.md", VideoMarkdown(VideoInput{Info: info}))
}

func TestVideoMetadata(t *testing.T) {
	m := VideoMetadata(videoInfo())
	want := map[string]any{"duration": 754.32, "resolution": "1920x1080", "fps": 30000.0 / 1001,
		"format": "mov,mp4,m4a,3gp,3g2,mj2", "has_audio": true}
	if len(m) != len(want) {
		t.Errorf("keys: %v", m)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
}

func TestPythonFormatting(t *testing.T) {
	for v, want := range map[any]string{
		25.0: "25.0", 29.97002997002997: "29.97002997002997", 0.0: "0.0", 1e16: "1e+16", 1.5e-5: "1.5e-05",
		0.0001: "0.0001", 123456.789: "123456.789", true: "True", 3: "3", "it's": `"it's"`,
	} {
		if got := pyRepr(v); got != want {
			t.Errorf("pyRepr(%#v) = %s, want %s", v, got, want)
		}
	}
	if got := pyRepr([]string{"a", `b'c"`}); got != `['a', 'b\'c"']` {
		t.Errorf("list repr = %s", got)
	}
	if got := pyTitle("num speakers x2y"); got != "Num Speakers X2Y" {
		t.Errorf("pyTitle = %q", got)
	}
	if hms(sec(3725.9)) != "01:02:05" || clock(sec(59.99)) != "00:59" || clock(sec(3600)) != "01:00:00" {
		t.Error("time formats differ from upstream")
	}
}
