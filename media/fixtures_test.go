package media

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixtureDir holds the media every test reads, generated once by TestMain
// with ffmpeg's lavfi sources and espeak-ng: nothing is downloaded.
var fixtureDir string

// The generated inputs: 3 s each, a 440 Hz tone (and a test pattern for
// the videos, 320x240 at 25 fps with a keyframe every second).
var (
	audioFormats = []string{"mp3", "wav", "m4a"}
	videoFormats = []string{"mp4", "mkv", "webm"}
	allFormats   = append(append([]string{}, audioFormats...), videoFormats...)
)

const (
	fixtureDuration = 3 * time.Second
	toneHz          = 440
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		fmt.Println("SKIP: media tests need ffmpeg and ffprobe (run scripts/setup): ", err)
		return 0
	}
	dir, err := os.MkdirTemp("", "media-fixtures-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(dir)
	fixtureDir = dir
	if err := makeFixtures(dir); err != nil {
		fmt.Println("cannot generate test media:", err)
		return 1
	}
	return m.Run()
}

func makeFixtures(dir string) error {
	tone := fmt.Sprintf("sine=f=%d:d=3:sample_rate=44100", toneHz)
	video := "testsrc=s=320x240:r=25:d=3"
	jobs := map[string][]string{
		"tone.mp3":  {"-f", "lavfi", "-i", tone, "-c:a", "libmp3lame", "-b:a", "64k"},
		"tone.wav":  {"-f", "lavfi", "-i", tone, "-c:a", "pcm_s16le"},
		"tone.m4a":  {"-f", "lavfi", "-i", tone, "-c:a", "aac", "-b:a", "64k"},
		"clip.mp4":  {"-f", "lavfi", "-i", video, "-f", "lavfi", "-i", tone, "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"},
		"clip.mkv":  {"-f", "lavfi", "-i", video, "-f", "lavfi", "-i", tone, "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "libvorbis", "-shortest"},
		"clip.webm": {"-f", "lavfi", "-i", video, "-f", "lavfi", "-i", tone, "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-g", "25", "-c:a", "libopus", "-shortest"},
		"mute.mp4":  {"-f", "lavfi", "-i", video, "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"},
		// moov first, so a cut-off copy still probes and only decoding
		// finds the missing bytes.
		"fast.mp4": {"-f", "lavfi", "-i", video, "-f", "lavfi", "-i", tone, "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-movflags", "+faststart"},
	}
	errs := make(chan error, len(jobs))
	for name, args := range jobs {
		go func() {
			args := append([]string{"-nostdin", "-v", "error", "-y"}, args...)
			out, err := exec.Command("ffmpeg", append(args, filepath.Join(dir, name))...).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%s: %v: %s", name, err, out)
			}
			errs <- err
		}()
	}
	for range jobs {
		if err := <-errs; err != nil {
			return err
		}
	}
	if _, err := exec.LookPath("espeak-ng"); err == nil {
		out, err := exec.Command("espeak-ng", "-w", filepath.Join(dir, "speech.wav"),
			"And so my fellow Americans, ask not what your country can do for you.").CombinedOutput()
		if err != nil {
			return fmt.Errorf("espeak-ng: %v: %s", err, out)
		}
	}
	// Damaged copies: a third of each file, and random bytes named .mp4.
	for _, name := range []string{"tone.mp3", "clip.mp4", "clip.mkv", "clip.webm", "fast.mp4"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "trunc-"+name), data[:len(data)/3], 0o644); err != nil {
			return err
		}
	}
	garbage := make([]byte, 8192)
	for i := range garbage {
		garbage[i] = byte(i*7919 + i>>3)
	}
	if err := os.WriteFile(filepath.Join(dir, "garbage.mp4"), garbage, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "notes.srt"), []byte("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n"), 0o644)
}

// fixture returns the path of a generated file: fixture("mp3") is the tone,
// fixture("mp4") the clip, or any name made by makeFixtures.
func fixture(t testing.TB, name string) string {
	t.Helper()
	switch name {
	case "mp3", "wav", "m4a":
		name = "tone." + name
	case "mp4", "mkv", "webm":
		name = "clip." + name
	}
	p := filepath.Join(fixtureDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("SKIP: fixture %s was not generated: %v", name, err)
	}
	return p
}

func isVideo(format string) bool {
	for _, f := range videoFormats {
		if f == format {
			return true
		}
	}
	return false
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func assertKind(t *testing.T, err error, kind error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", kind)
	}
	if !strings.Contains(err.Error(), "media: ") {
		t.Errorf("error %q does not say it comes from media", err)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v is not a *media.Error", err, err)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("error kind = %v, want %v (error: %v)", e.Kind, kind, err)
	}
}

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o644) }
