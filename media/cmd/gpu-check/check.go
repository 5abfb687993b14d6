package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"morag-gpu/media"
)

const (
	clipFrames  = 250 // 10 s at 25 fps
	decodeLoops = 8   // decode 2,000 frames, so CUDA start-up does not dominate
	encodeLoops = 2   // encode 500 frames
)

// row is one line of the result table.
type row struct {
	what, path string
	frames     int
	secs       float64
	note       string // set instead of a measurement when the row could not run
	baseline   *row   // the CPU row this one is compared with
}

func (r *row) fps() float64 {
	if r.secs <= 0 {
		return 0
	}
	return float64(r.frames) / r.secs
}

// check runs the media section (detection, ffmpeg rows) and the whisper
// section; media or whisper false leaves that one out.
func check(ctx context.Context, out io.Writer, withMedia, withWhisper bool) error {
	fmt.Fprintln(out, "== morag-gpu gpu-check")
	start := time.Now()
	if !withMedia {
		dir, err := os.MkdirTemp("", "gpu-check-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		whisperSection(ctx, out, dir)
		fmt.Fprintf(out, "\ngpu-check finished in %.0fs\n", time.Since(start).Seconds())
		return nil
	}

	caps, _ := media.Detect(ctx, media.DetectOptions{Mode: media.ModeAuto})
	js, _ := json.MarshalIndent(caps, "", "  ")
	fmt.Fprintf(out, "detection (as the worker reports it):\n%s\n\n", js)

	dir, err := os.MkdirTemp("", "gpu-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	clip := filepath.Join(dir, "clip-1080p.mp4")
	t0 := time.Now()
	if err := ffmpeg(ctx, "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=s=1920x1080:r=25:d=%d", clipFrames/25),
		"-f", "lavfi", "-i", fmt.Sprintf("sine=f=440:d=%d", clipFrames/25),
		"-c:v", "libx264", "-preset", "veryfast", "-g", "250", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", clip); err != nil {
		return fmt.Errorf("cannot generate the 1080p test clip: %w", err)
	}
	fmt.Fprintf(out, "test clip: 1920x1080 H.264 (libx264 veryfast), %d frames, made in %.1fs\n\n", clipFrames, time.Since(t0).Seconds())

	loop := func(n int) []string { return []string{"-stream_loop", fmt.Sprint(n - 1)} }
	var rows []*row
	measure := func(what, path string, frames int, needs string, base *row, args ...string) *row {
		r := &row{what: what, path: path, frames: frames, baseline: base}
		rows = append(rows, r)
		if needs != "" {
			r.note = "unavailable: " + needs
			return r
		}
		if ctx.Err() != nil {
			r.note = "skipped: out of time"
			return r
		}
		t := time.Now()
		if err := ffmpeg(ctx, args...); err != nil {
			r.note = "failed: " + firstLine(err.Error())
			return r
		}
		r.secs = time.Since(t).Seconds()
		return r
	}
	unavailable := func(ok bool, cap string) string {
		if ok {
			return ""
		}
		if reason := caps.Reasons[cap]; reason != "" {
			return cap + " (" + reason + ")"
		}
		return cap
	}
	noNVDEC := unavailable(caps.NVDEC, media.CapNVDEC)
	noNVENC := unavailable(caps.NVENC, media.CapNVENC)
	noScale := unavailable(caps.ScaleCUDA, media.CapScaleCUDA)
	either := func(a, b string) string {
		if a != "" {
			return a
		}
		return b
	}

	dec := decodeLoops * clipFrames
	cpuDec := measure("decode 1080p H.264", "cpu", dec, "", nil,
		append(loop(decodeLoops), "-i", clip, "-an", "-f", "null", "-")...)
	measure("decode 1080p H.264", "nvdec h264_cuvid", dec, noNVDEC, cpuDec,
		append(append([]string{"-hwaccel", "cuda", "-hwaccel_output_format", "cuda", "-c:v", "h264_cuvid"}, loop(decodeLoops)...),
			"-i", clip, "-an", "-f", "null", "-")...)
	measure("decode 1080p H.264", "nvdec -hwaccel cuda", dec, noNVDEC, cpuDec,
		append(append([]string{"-hwaccel", "cuda", "-hwaccel_output_format", "cuda"}, loop(decodeLoops)...),
			"-i", clip, "-an", "-f", "null", "-")...)

	enc := encodeLoops * clipFrames
	cpuEnc := measure("encode 1080p H.264", "cpu + libx264 veryfast", enc, "", nil,
		append(loop(encodeLoops), "-i", clip, "-an", "-c:v", "libx264", "-preset", "veryfast", "-f", "null", "-")...)
	measure("encode 1080p H.264", "nvdec + h264_nvenc p4", enc, either(noNVENC, noNVDEC), cpuEnc,
		append(append([]string{"-hwaccel", "cuda", "-hwaccel_output_format", "cuda"}, loop(encodeLoops)...),
			"-i", clip, "-an", "-c:v", "h264_nvenc", "-preset", "p4", "-f", "null", "-")...)

	cpuProxy := measure("720p proxy (Transcode)", "cpu + libx264", enc, "", nil,
		append(loop(encodeLoops), "-i", clip, "-an", "-vf", "scale=1280:720", "-c:v", "libx264", "-preset", "veryfast", "-f", "null", "-")...)
	measure("720p proxy (Transcode)", "nvdec + scale_cuda + libx264", enc, either(noNVDEC, noScale), cpuProxy,
		append(append([]string{"-hwaccel", "cuda", "-hwaccel_output_format", "cuda"}, loop(encodeLoops)...),
			"-i", clip, "-an", "-vf", "scale_cuda=1280:720,hwdownload,format=nv12", "-c:v", "libx264", "-preset", "veryfast", "-f", "null", "-")...)
	measure("720p proxy (Transcode)", "nvdec + scale_cuda + nvenc", enc, either(noNVENC, either(noNVDEC, noScale)), cpuProxy,
		append(append([]string{"-hwaccel", "cuda", "-hwaccel_output_format", "cuda"}, loop(encodeLoops)...),
			"-i", clip, "-an", "-vf", "scale_cuda=1280:720", "-c:v", "h264_nvenc", "-preset", "p4", "-f", "null", "-")...)

	// The package's own operations, as the worker runs them.
	cpuTools, gpuTools := &media.Tools{}, &media.Tools{GPU: caps}
	thumbs := func(tools *media.Tools, path string, base *row, needs string) *row {
		r := &row{what: "5 thumbnails (Thumbnails)", path: path, frames: 5, baseline: base}
		rows = append(rows, r)
		if needs != "" {
			r.note = "unavailable: " + needs
			return r
		}
		t := time.Now()
		_, p, err := tools.Thumbnails(ctx, clip, media.FrameOptions{})
		r.secs = time.Since(t).Seconds()
		switch {
		case err != nil:
			r.note, r.secs = "failed: "+firstLine(err.Error()), 0
		case p.Fallback != "":
			r.note = "fell back to the CPU: " + firstLine(p.Fallback)
		}
		return r
	}
	cpuThumbs := thumbs(cpuTools, "cpu", nil, "")
	thumbs(gpuTools, "nvdec + scale_cuda", cpuThumbs, noNVDEC)

	audio := &row{what: "audio to 16 kHz PCM (StreamPCM)", path: "cpu (no video decoded)"}
	t := time.Now()
	var samples int
	if err := cpuTools.StreamPCM(ctx, clip, time.Minute, func(_ time.Duration, s []float32) error { samples += len(s); return nil }); err != nil {
		audio.note = "failed: " + firstLine(err.Error())
	} else {
		audio.secs = time.Since(t).Seconds()
		audio.note = fmt.Sprintf("%.0fx real time", float64(samples)/media.SampleRate/audio.secs)
	}
	rows = append(rows, audio)

	printTable(out, rows)
	fmt.Fprintln(out)
	if withWhisper {
		whisperSection(ctx, out, dir)
	}
	fmt.Fprintf(out, "\ngpu-check finished in %.0fs\n", time.Since(start).Seconds())
	return nil
}

func printTable(out io.Writer, rows []*row) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tpath\tframes\tseconds\tfps\tvs CPU\tnote")
	for _, r := range rows {
		if r.secs == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t%s\n", r.what, r.path, r.note)
			continue
		}
		ratio := "1.0x (baseline)"
		if r.baseline != nil {
			ratio = "-"
			if r.baseline.secs > 0 {
				ratio = fmt.Sprintf("%.1fx", r.fps()/r.baseline.fps())
			}
		}
		if r.frames == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t%.2f\t-\t-\t%s\n", r.what, r.path, r.secs, r.note)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.0f\t%s\t%s\n", r.what, r.path, r.frames, r.secs, r.fps(), ratio, r.note)
	}
	tw.Flush()
}

// ffmpeg runs one measurement, bounded by a minute and by ctx.
func ffmpeg(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", append([]string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y"}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("timed out: %w", ctx.Err())
	}
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			return err
		}
		return errors.New(msg)
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	if len(line) > 160 {
		line = line[:160] + "…"
	}
	return line
}
