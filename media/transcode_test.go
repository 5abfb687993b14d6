package media

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestTranscodeFormats(t *testing.T) {
	tools := &Tools{}
	for _, format := range allFormats {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, "proxy.mp4")
			path, err := tools.Transcode(testContext(t), fixture(t, format), dst, TranscodeOptions{Height: 120})
			if !isVideo(format) {
				assertKind(t, err, ErrNoVideo)
				assertDirEmpty(t, dir)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if path != (Path{Decode: PathCPU, Encode: PathLibx264}) {
				t.Errorf("path = %+v, want cpu decode and libx264 encode", path)
			}
			info, err := tools.Probe(testContext(t), dst)
			if err != nil {
				t.Fatal(err)
			}
			v, a := info.Video(), info.Audio()
			if v == nil || v.Codec != "h264" || v.Width != 160 || v.Height != 120 {
				t.Fatalf("proxy video = %+v, want h264 160x120", v)
			}
			if a == nil || a.Codec != "aac" {
				t.Fatalf("proxy audio = %+v, want aac", a)
			}
			if d := info.Duration - fixtureDuration; d < -200*time.Millisecond || d > 200*time.Millisecond {
				t.Errorf("proxy lasts %v, want about %v", info.Duration, fixtureDuration)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("transcode left %d files next to the proxy, want only the proxy", len(entries)-1)
			}
		})
	}
}

func TestTranscodeNeverUpscales(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "proxy.mp4")
	if _, err := (&Tools{}).Transcode(testContext(t), fixture(t, "mute.mp4"), dst, TranscodeOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := (&Tools{}).Probe(testContext(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	if v := info.Video(); v.Width != 320 || v.Height != 240 {
		t.Errorf("720p proxy of 320x240 is %dx%d, want 320x240", v.Width, v.Height)
	}
	if info.HasAudio() {
		t.Error("proxy of a silent video has an audio stream")
	}
}

func TestTranscodeBadInputLeavesNothing(t *testing.T) {
	for name, kind := range map[string]error{
		"garbage.mp4":     ErrCorrupt,
		"trunc-clip.mp4":  ErrCorrupt,
		"trunc-fast.mp4":  ErrTruncated, // probes fine, fails while encoding
		"trunc-clip.mkv":  ErrTruncated,
		"trunc-clip.webm": ErrTruncated,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := (&Tools{}).Transcode(testContext(t), fixture(t, name), filepath.Join(dir, "proxy.mp4"), TranscodeOptions{})
			assertKind(t, err, kind)
			assertDirEmpty(t, dir)
		})
	}
}

func TestProxySize(t *testing.T) {
	for _, c := range []struct{ w, h, target, ww, wh int }{
		{1920, 1080, 720, 1280, 720},
		{1080, 1920, 720, 404, 720},
		{320, 240, 720, 320, 240},
		{641, 481, 720, 640, 480},
		{3840, 1600, 720, 1728, 720},
	} {
		if w, h := proxySize(c.w, c.h, c.target); w != c.ww || h != c.wh {
			t.Errorf("proxySize(%d, %d, %d) = %dx%d, want %dx%d", c.w, c.h, c.target, w, h, c.ww, c.wh)
		}
	}
}

func TestParseQuality(t *testing.T) {
	for in, want := range map[string]int{"720p": 720, "1080P": 1080, " 480p ": 480, "360": 360} {
		if got, err := ParseQuality(in); err != nil || got != want {
			t.Errorf("ParseQuality(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "hd", "0p", "-720p", "99999p"} {
		if _, err := ParseQuality(in); err == nil {
			t.Errorf("ParseQuality(%q) accepted", in)
		}
	}
}

func assertDirEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}
