package media

import (
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProbeFormats(t *testing.T) {
	tools := &Tools{}
	wantFormat := map[string]string{
		"mp3": "mp3", "wav": "wav", "m4a": "mp4", "mp4": "mp4", "mkv": "matroska", "webm": "webm",
	}
	wantAudio := map[string]string{
		"mp3": "mp3", "wav": "pcm_s16le", "m4a": "aac", "mp4": "aac", "mkv": "vorbis", "webm": "opus",
	}
	for _, format := range allFormats {
		t.Run(format, func(t *testing.T) {
			info, err := tools.Probe(testContext(t), fixture(t, format))
			if err != nil {
				t.Fatal(err)
			}
			if d := info.Duration - fixtureDuration; d < -150*time.Millisecond || d > 150*time.Millisecond {
				t.Errorf("duration = %v, want about %v", info.Duration, fixtureDuration)
			}
			if !strings.Contains(info.Format, wantFormat[format]) {
				t.Errorf("format = %q, want it to contain %q", info.Format, wantFormat[format])
			}
			if info.Size <= 0 {
				t.Errorf("size = %d, want > 0", info.Size)
			}
			if info.BitRate <= 0 {
				t.Errorf("bit rate = %d, want > 0", info.BitRate)
			}
			a := info.Audio()
			if !info.HasAudio() || a == nil {
				t.Fatalf("no audio stream in %+v", info.Streams)
			}
			if a.Codec != wantAudio[format] {
				t.Errorf("audio codec = %q, want %q", a.Codec, wantAudio[format])
			}
			if a.Channels != 1 {
				t.Errorf("channels = %d, want 1", a.Channels)
			}
			// Opus always decodes at 48 kHz; the others keep the source rate.
			wantRate := 44100
			if format == "webm" {
				wantRate = 48000
			}
			if a.SampleRate != wantRate {
				t.Errorf("sample rate = %d, want %d", a.SampleRate, wantRate)
			}
			if info.HasVideo() != isVideo(format) {
				t.Fatalf("HasVideo = %v for %s", info.HasVideo(), format)
			}
			if !isVideo(format) {
				return
			}
			v := info.Video()
			if v.Width != 320 || v.Height != 240 {
				t.Errorf("size = %dx%d, want 320x240", v.Width, v.Height)
			}
			if math.Abs(v.FPS-25) > 0.01 {
				t.Errorf("fps = %v, want 25", v.FPS)
			}
			wantCodec := map[string]string{"mp4": "h264", "mkv": "h264", "webm": "vp8"}[format]
			if v.Codec != wantCodec {
				t.Errorf("video codec = %q, want %q", v.Codec, wantCodec)
			}
		})
	}
}

func TestProbeErrors(t *testing.T) {
	tools := &Tools{}
	cases := []struct {
		name string
		path string
		kind error
	}{
		{"missing file", filepath.Join(t.TempDir(), "nope.mp4"), ErrNotFound},
		{"garbage", fixture(t, "garbage.mp4"), ErrCorrupt},
		{"truncated mp4 (moov lost)", fixture(t, "trunc-clip.mp4"), ErrCorrupt},
		{"empty file", emptyFile(t), ErrCorrupt},
		{"subtitles only (a text format, refused before demuxing)", fixture(t, "notes.srt"), ErrFormat},
		{"directory", t.TempDir(), ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			info, err := tools.Probe(testContext(t), c.path)
			if info != nil {
				t.Errorf("got info %+v with error %v", info, err)
			}
			assertKind(t, err, c.kind)
		})
	}
}

func TestProbeMissingFFprobe(t *testing.T) {
	tools := &Tools{FFprobe: "/nonexistent/ffprobe"}
	_, err := tools.Probe(testContext(t), fixture(t, "mp3"))
	assertKind(t, err, ErrToolMissing)
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{
		"25/1": 25, "30000/1001": 29.97002997002997, "0/0": 0, "": 0, "24": 24, "x/1": 0, "1/x": 0, "NaN": 0,
	} {
		if got := ParseRate(in); got != want {
			t.Errorf("ParseRate(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestParseProbeCoverArtIsNotVideo(t *testing.T) {
	info, err := parseProbe([]byte(`{"format":{"format_name":"mp3","duration":"2.5"},"streams":[
		{"index":0,"codec_type":"audio","codec_name":"mp3","channels":2,"sample_rate":"44100"},
		{"index":1,"codec_type":"video","codec_name":"mjpeg","width":500,"height":500,"disposition":{"attached_pic":1}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if info.HasVideo() {
		t.Error("cover art counted as video")
	}
	if !info.HasAudio() || info.Audio().SampleRate != 44100 || info.Duration != 2500*time.Millisecond {
		t.Errorf("bad parse: %+v", info)
	}
}

func emptyFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "empty.mp3")
	if err := writeFile(p, nil); err != nil {
		t.Fatal(err)
	}
	return p
}
