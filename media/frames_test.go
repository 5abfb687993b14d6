package media

import (
	"bytes"
	"encoding/base64"
	"image/jpeg"
	"strings"
	"testing"
	"time"
)

func TestThumbnailsFormats(t *testing.T) {
	tools := &Tools{}
	for _, format := range allFormats {
		t.Run(format, func(t *testing.T) {
			frames, path, err := tools.Thumbnails(testContext(t), fixture(t, format), FrameOptions{})
			if !isVideo(format) {
				assertKind(t, err, ErrNoVideo)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if path.Decode != PathCPU || path.Fallback != "" {
				t.Errorf("path = %+v, want the CPU path with no fallback", path)
			}
			if len(frames) != 5 {
				t.Fatalf("%d thumbnails, want upstream's default 5", len(frames))
			}
			// Upstream's timestamps for 3 s: 0, 0.75, 1.5, then capped at
			// duration-1 = 2.
			want := []time.Duration{0, 750 * time.Millisecond, 1500 * time.Millisecond, 2 * time.Second, 2 * time.Second}
			for i, f := range frames {
				if d := f.Time - want[i]; d < -20*time.Millisecond || d > 20*time.Millisecond {
					t.Errorf("thumbnail %d at %v, want %v", i, f.Time, want[i])
				}
				assertJPEG(t, f.JPEG, 320, 240)
			}
			// The test pattern moves: frames from different times differ.
			if bytes.Equal(frames[0].JPEG, frames[2].JPEG) {
				t.Error("thumbnails at 0 s and 1.5 s are identical; seeking did not happen")
			}
		})
	}
}

func TestThumbnailsCountAndSize(t *testing.T) {
	frames, _, err := (&Tools{}).Thumbnails(testContext(t), fixture(t, "mp4"), FrameOptions{Count: 3, Width: 160, Height: 90})
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 3 {
		t.Fatalf("%d thumbnails, want 3", len(frames))
	}
	for _, f := range frames {
		assertJPEG(t, f.JPEG, 160, 90)
	}
	one, _, err := (&Tools{}).Thumbnails(testContext(t), fixture(t, "mp4"), FrameOptions{Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 1 || one[0].Time != 1500*time.Millisecond {
		t.Errorf("one thumbnail: %d frames at %v, want the middle (1.5 s)", len(one), one[0].Time)
	}
}

func TestThumbnailsBadOptions(t *testing.T) {
	for _, o := range []FrameOptions{{Count: -1}, {Count: maxFrames + 1}, {Width: -5, Height: 10}, {Width: 100000, Height: 10}} {
		if _, _, err := (&Tools{}).Thumbnails(testContext(t), fixture(t, "mp4"), o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

func TestThumbnailsDamagedInput(t *testing.T) {
	_, _, err := (&Tools{}).Thumbnails(testContext(t), fixture(t, "garbage.mp4"), FrameOptions{})
	assertKind(t, err, ErrCorrupt)
	_, _, err = (&Tools{}).Thumbnails(testContext(t), fixture(t, "trunc-clip.mp4"), FrameOptions{})
	assertKind(t, err, ErrCorrupt)
	for _, name := range []string{"trunc-fast.mp4", "trunc-clip.mkv", "trunc-clip.webm"} {
		_, _, err = (&Tools{}).Thumbnails(testContext(t), fixture(t, name), FrameOptions{})
		assertKind(t, err, ErrTruncated)
		_, _, err = (&Tools{}).Keyframes(testContext(t), fixture(t, name), FrameOptions{})
		assertKind(t, err, ErrTruncated)
	}
}

func TestFrameDataURL(t *testing.T) {
	frames, _, err := (&Tools{}).Thumbnails(testContext(t), fixture(t, "mkv"), FrameOptions{Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	url := frames[0].DataURL()
	const prefix = "data:image/jpeg;base64,"
	if !strings.HasPrefix(url, prefix) {
		t.Fatalf("data URL starts %q", url[:min(len(url), 40)])
	}
	data, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(url, prefix))
	if err != nil {
		t.Fatal(err)
	}
	assertJPEG(t, data, 320, 240)
}

func TestKeyframes(t *testing.T) {
	tools := &Tools{}
	for _, format := range videoFormats {
		t.Run(format, func(t *testing.T) {
			// The fixtures have a keyframe every second (-g 25 at 25 fps).
			frames, path, err := tools.Keyframes(testContext(t), fixture(t, format), FrameOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if path.Decode != PathCPU {
				t.Errorf("decode path %q, want cpu", path.Decode)
			}
			if len(frames) != 3 {
				t.Fatalf("%d keyframes, want 3 (0 s, 1 s, 2 s)", len(frames))
			}
			for i, f := range frames {
				if d := f.Time - time.Duration(i)*time.Second; d < -50*time.Millisecond || d > 50*time.Millisecond {
					t.Errorf("keyframe %d at %v, want %v", i, f.Time, time.Duration(i)*time.Second)
				}
				assertJPEG(t, f.JPEG, 320, 240)
			}
		})
	}
	frames, _, err := tools.Keyframes(testContext(t), fixture(t, "mp4"), FrameOptions{Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 || frames[0].Time != 0 || frames[1].Time != 2*time.Second {
		t.Errorf("Count 2 gave %d keyframes, want the first and the last", len(frames))
	}
	_, _, err = tools.Keyframes(testContext(t), fixture(t, "wav"), FrameOptions{})
	assertKind(t, err, ErrNoVideo)
}

func TestPickEvenly(t *testing.T) {
	ts := []time.Duration{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	for n, want := range map[int][]time.Duration{
		1: {0}, 2: {0, 9}, 3: {0, 5, 9}, 4: {0, 3, 6, 9}, 10: ts, 20: ts,
	} {
		got := pickEvenly(ts, n)
		if len(got) != len(want) {
			t.Errorf("pickEvenly(%d) = %v, want %v", n, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("pickEvenly(%d) = %v, want %v", n, got, want)
				break
			}
		}
	}
}

func TestThumbnailTimesMatchUpstream(t *testing.T) {
	// MoRAG: [min(i*d/(n-1), d-1) for i in range(n)], the middle for n=1.
	got := thumbnailTimes(600*time.Second, 5)
	want := []time.Duration{0, 150 * time.Second, 300 * time.Second, 450 * time.Second, 599 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("thumbnailTimes(600s, 5) = %v, want %v", got, want)
		}
	}
	if got := thumbnailTimes(500*time.Millisecond, 3); got[2] != 0 {
		t.Errorf("a half-second video gave times %v, want none negative", got)
	}
}

func TestKeyframeTimes(t *testing.T) {
	got := keyframeTimes("1.500000,K__\n2.000000,___\n0.500000,K_\n\n1.500000,K__\nbad,K\n", 500*time.Millisecond)
	want := []time.Duration{0, time.Second}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("keyframeTimes = %v, want %v", got, want)
	}
}

func assertJPEG(t *testing.T, data []byte, w, h int) {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not a valid JPEG (%d bytes): %v", len(data), err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Errorf("JPEG is %dx%d, want %dx%d", b.Dx(), b.Dy(), w, h)
	}
}
