package media

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The benchmarks compare this package with "the Python way", upstream's
// ffmpeg-python pattern re-created in Go: an ffmpeg subprocess that writes
// a temporary file, which is then read back. Both run on the CPU path.
//
//	go test ./media/ -run '^$' -bench . -benchtime 3x

const benchLength = 10 * time.Minute

func benchFFmpeg(b *testing.B, args ...string) {
	b.Helper()
	out, err := exec.Command("ffmpeg", append([]string{"-nostdin", "-v", "error", "-y"}, args...)...).CombinedOutput()
	if err != nil {
		b.Fatalf("ffmpeg %v: %v: %s", args, err, out)
	}
}

func BenchmarkExtractAudio(b *testing.B) {
	dir := b.TempDir()
	in := filepath.Join(dir, "talk.mp3")
	benchFFmpeg(b, "-f", "lavfi", "-i", fmt.Sprintf("sine=f=440:d=%d", int(benchLength.Seconds())),
		"-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", in)
	tools := &Tools{}
	ctx := context.Background()
	report := func(b *testing.B, samples int) {
		if got := time.Duration(samples) * time.Second / SampleRate; got < benchLength-time.Second {
			b.Fatalf("decoded %v of %v", got, benchLength)
		}
		perOp := b.Elapsed().Seconds() / float64(b.N)
		b.ReportMetric(benchLength.Seconds()/perOp, "x_realtime")
	}

	b.Run("go-stream", func(b *testing.B) {
		var n int
		for range b.N {
			n = 0
			err := tools.StreamPCM(ctx, in, 30*time.Second, func(_ time.Duration, s []float32) error {
				n += len(s)
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		report(b, n)
	})

	b.Run("python-way-temp-wav", func(b *testing.B) {
		var pcm []float32
		for range b.N {
			var err error
			if pcm, err = extractViaTempWAV(in, b.TempDir()); err != nil {
				b.Fatal(err)
			}
		}
		report(b, len(pcm))
	})
}

// extractViaTempWAV is the subprocess-plus-temporary-file way: ffmpeg
// writes a 16 kHz mono s16le WAV, which is read whole and converted.
func extractViaTempWAV(in, tmp string) ([]float32, error) {
	wav := filepath.Join(tmp, "audio.wav")
	defer os.Remove(wav)
	if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-i", in, "-vn",
		"-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", wav).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, out)
	}
	data, err := os.ReadFile(wav)
	if err != nil {
		return nil, err
	}
	// Find the "data" chunk of the RIFF file.
	pos := 12
	for pos+8 <= len(data) && string(data[pos:pos+4]) != "data" {
		pos += 8 + int(binary.LittleEndian.Uint32(data[pos+4:]))
	}
	if pos+8 > len(data) {
		return nil, fmt.Errorf("no data chunk in %s", wav)
	}
	body := data[pos+8:]
	pcm := make([]float32, len(body)/2)
	for i := range pcm {
		pcm[i] = float32(int16(binary.LittleEndian.Uint16(body[2*i:]))) / 32768
	}
	return pcm, nil
}

func BenchmarkThumbnails(b *testing.B) {
	dir := b.TempDir()
	// Ten minutes of 1080p cheaply: ten seconds encoded, then looped by
	// stream copy.
	short := filepath.Join(dir, "short.mp4")
	in := filepath.Join(dir, "talk-1080p.mp4")
	benchFFmpeg(b, "-f", "lavfi", "-i", "testsrc2=s=1920x1080:r=25:d=10", "-f", "lavfi", "-i", "sine=d=10",
		"-c:v", "libx264", "-preset", "ultrafast", "-crf", "32", "-g", "250", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", short)
	benchFFmpeg(b, "-stream_loop", strconv.Itoa(int(benchLength/(10*time.Second))-1), "-i", short, "-c", "copy", in)
	tools := &Tools{}
	ctx := context.Background()

	b.Run("go-one-process", func(b *testing.B) {
		for range b.N {
			frames, _, err := tools.Thumbnails(ctx, in, FrameOptions{})
			if err != nil || len(frames) != 5 {
				b.Fatalf("%d frames, %v", len(frames), err)
			}
		}
	})

	b.Run("python-way-per-thumbnail", func(b *testing.B) {
		for range b.N {
			if n, err := thumbnailsViaTempFiles(in, b.TempDir(), 5); err != nil || n != 5 {
				b.Fatalf("%d frames, %v", n, err)
			}
		}
	})
}

// thumbnailsViaTempFiles is upstream's VideoProcessor._generate_thumbnails:
// ffprobe for the duration, then one ffmpeg per thumbnail (-ss t, scale
// 320:240, one frame) into a temporary JPEG that is read back.
func thumbnailsViaTempFiles(in, tmp string, n int) (int, error) {
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", in).Output()
	if err != nil {
		return 0, err
	}
	d, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, err
	}
	got := 0
	for i := range n {
		ts := math.Min(float64(i)*d/float64(n-1), d-1)
		jpg := filepath.Join(tmp, fmt.Sprintf("thumb_%d.jpg", i))
		if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", fmt.Sprint(ts), "-i", in,
			"-vf", "scale=320:240", "-vframes", "1", jpg).CombinedOutput(); err != nil {
			return got, fmt.Errorf("%v: %s", err, out)
		}
		if data, err := os.ReadFile(jpg); err == nil && len(data) > 0 {
			got++
		}
		os.Remove(jpg)
	}
	return got, nil
}
