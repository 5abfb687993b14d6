package media

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Frame is one still image taken from a video.
type Frame struct {
	Time   time.Duration `json:"time"` // from the start of the file
	Width  int           `json:"width"`
	Height int           `json:"height"`
	JPEG   []byte        `json:"-"`
}

// DataURL returns the frame as "data:image/jpeg;base64,…", the form a task
// result carries thumbnails in.
func (f Frame) DataURL() string {
	return "data:image/jpeg;base64," + base64.StdEncoding.EncodeToString(f.JPEG)
}

// FrameOptions configures Thumbnails and Keyframes.
type FrameOptions struct {
	// Count is the number of thumbnails (default 5, as upstream) or the
	// maximum number of keyframes (default 10, as upstream).
	Count int
	// Width and Height are the output size; default 320x240, as upstream,
	// which scales to exactly that size without keeping the aspect ratio.
	Width, Height int
}

// maxFrames bounds Count: each frame is one more input ffmpeg opens.
const maxFrames = 100

func (o FrameOptions) withDefaults(count int) (FrameOptions, error) {
	if o.Count == 0 {
		o.Count = count
	}
	if o.Width == 0 && o.Height == 0 {
		o.Width, o.Height = 320, 240
	}
	if o.Count < 0 || o.Count > maxFrames {
		return o, fmt.Errorf("frame count %d out of range 1..%d", o.Count, maxFrames)
	}
	if o.Width <= 0 || o.Height <= 0 || o.Width > 8192 || o.Height > 8192 {
		return o, fmt.Errorf("frame size %dx%d out of range", o.Width, o.Height)
	}
	return o, nil
}

// Thumbnails takes Count evenly spaced JPEGs from the video in path, at
// upstream's timestamps (the first frame, …, one second before the end).
// On a GPU that passed Detect, frames are decoded by NVDEC and scaled by
// scale_cuda; otherwise, or when that fails for this file, on the CPU. The
// returned Path says which.
func (t *Tools) Thumbnails(ctx context.Context, path string, opts FrameOptions) ([]Frame, Path, error) {
	const op = "thumbnails"
	opts, err := opts.withDefaults(5)
	if err != nil {
		return nil, Path{}, &Error{Op: op, Path: path, Err: err}
	}
	info, err := t.Probe(ctx, path)
	if err != nil {
		return nil, Path{}, reop(err, op)
	}
	if !info.HasVideo() {
		return nil, Path{}, &Error{Op: op, Path: path, Kind: ErrNoVideo}
	}
	return t.frames(ctx, op, info, thumbnailTimes(info.Duration, opts.Count), opts)
}

// thumbnailTimes reproduces MoRAG's VideoProcessor: the middle for one
// thumbnail, else i*d/(n-1) capped at one second before the end.
func thumbnailTimes(d time.Duration, n int) []time.Duration {
	if n == 1 {
		return []time.Duration{d / 2}
	}
	times := make([]time.Duration, n)
	for i := range times {
		ts := min(time.Duration(i)*d/time.Duration(n-1), d-time.Second)
		times[i] = max(ts, 0)
	}
	return times
}

// Keyframes extracts up to Count of the video's keyframes (I-frames),
// evenly chosen over the file when it has more. The keyframes are found
// from the packet index, without decoding, and each is then decoded alone.
func (t *Tools) Keyframes(ctx context.Context, path string, opts FrameOptions) ([]Frame, Path, error) {
	const op = "keyframes"
	opts, err := opts.withDefaults(10)
	if err != nil {
		return nil, Path{}, &Error{Op: op, Path: path, Err: err}
	}
	info, err := t.Probe(ctx, path)
	if err != nil {
		return nil, Path{}, reop(err, op)
	}
	v := info.Video()
	if v == nil {
		return nil, Path{}, &Error{Op: op, Path: path, Kind: ErrNoVideo}
	}
	out, err := t.run(ctx, op, path, t.ffprobe(), []string{"-v", "error",
		"-select_streams", fmt.Sprintf("%d", v.Index), "-show_entries", "packet=pts_time,flags",
		"-of", "csv=p=0", fileURL(path)})
	if err != nil {
		return nil, Path{}, err
	}
	times := keyframeTimes(string(out), info.StartTime)
	if len(times) == 0 {
		return nil, Path{}, &Error{Op: op, Path: path, Kind: ErrCorrupt, Err: errors.New("the video has no keyframe")}
	}
	return t.frames(ctx, op, info, pickEvenly(times, opts.Count), opts)
}

// keyframeTimes parses ffprobe's "pts_time,flags" lines ("12.000000,K__")
// into sorted, distinct times from the start of the file.
func keyframeTimes(csv string, start time.Duration) []time.Duration {
	seen := map[time.Duration]bool{}
	var times []time.Duration
	for _, line := range strings.Split(csv, "\n") {
		pts, flags, ok := strings.Cut(strings.TrimSpace(line), ",")
		if !ok || !strings.Contains(flags, "K") {
			continue
		}
		f, err := strconv.ParseFloat(pts, 64)
		if err != nil {
			continue
		}
		ts := max(time.Duration(f*float64(time.Second))-start, 0).Round(time.Microsecond)
		if !seen[ts] {
			seen[ts] = true
			times = append(times, ts)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return times
}

// pickEvenly returns at most n of times, spread from first to last.
func pickEvenly(times []time.Duration, n int) []time.Duration {
	if len(times) <= n {
		return times
	}
	if n == 1 {
		return times[:1]
	}
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = times[(i*(len(times)-1)+(n-1)/2)/(n-1)]
	}
	return out
}

// nvdecCodec reports whether the NVDEC of every NVIDIA generation since
// Pascal decodes codec; anything else goes straight to the CPU. AV1 is
// left out on purpose: A100/H100/H200 (Turing-class NVDEC) cannot decode it.
func nvdecCodec(codec string) bool {
	switch codec {
	case "h264", "hevc", "vp8", "vp9", "mpeg1video", "mpeg2video", "mpeg4", "vc1", "mjpeg":
		return true
	}
	return false
}

// frames decodes one frame at each time, all in one ffmpeg process (one
// input per seek, so the file is opened once per frame but ffmpeg starts,
// and a CUDA context is made, only once).
func (t *Tools) frames(ctx context.Context, op string, info *Info, times []time.Duration, opts FrameOptions) ([]Frame, Path, error) {
	gpu := t.GPU.NVDEC && nvdecCodec(info.Video().Codec)
	var fallback string
	if gpu {
		frames, err := t.framesOnce(ctx, op, info, times, opts, true)
		if err == nil {
			return frames, Path{Decode: PathNVDEC}, nil
		}
		if ctx.Err() != nil {
			return nil, Path{}, err
		}
		fallback = "nvdec: " + err.Error()
	}
	frames, err := t.framesOnce(ctx, op, info, times, opts, false)
	if err != nil {
		return nil, Path{}, err
	}
	return frames, Path{Decode: PathCPU, Fallback: fallback}, nil
}

func (t *Tools) framesOnce(ctx context.Context, op string, info *Info, times []time.Duration, opts FrameOptions, gpu bool) ([]Frame, error) {
	dir, err := os.MkdirTemp("", "morag-frames-")
	if err != nil {
		return nil, &Error{Op: op, Path: info.Path, Err: err}
	}
	defer os.RemoveAll(dir)

	frames := make([]Frame, len(times))
	missing := make([]int, len(times))
	for i := range missing {
		missing[i] = i
	}
	// A seek past the last decodable frame (variable frame rate, a video
	// track shorter than the audio) gives no picture; those are retried
	// once two seconds earlier.
	for attempt := 0; attempt < 2 && len(missing) > 0; attempt++ {
		at := make([]time.Duration, len(missing))
		for k, i := range missing {
			at[k] = times[i]
			if attempt > 0 {
				at[k] = max(times[i]-2*time.Second, 0)
			}
		}
		args := frameArgs(info, at, opts, gpu, gpu && t.GPU.ScaleCUDA, dir, attempt)
		if _, err := t.run(ctx, op, info.Path, t.ffmpeg(), args); err != nil {
			return nil, err
		}
		var still []int
		for k, i := range missing {
			data, err := os.ReadFile(filepath.Join(dir, frameName(attempt, k)))
			if errors.Is(err, fs.ErrNotExist) || (err == nil && len(data) == 0) {
				still = append(still, i)
				continue
			}
			if err != nil {
				return nil, &Error{Op: op, Path: info.Path, Err: err}
			}
			frames[i] = Frame{Time: at[k], Width: opts.Width, Height: opts.Height, JPEG: data}
		}
		missing = still
	}
	if len(missing) > 0 {
		return nil, &Error{Op: op, Path: info.Path, Kind: ErrCorrupt,
			Err: fmt.Errorf("no picture could be decoded at %v", times[missing[0]])}
	}
	return frames, nil
}

func frameName(attempt, k int) string { return fmt.Sprintf("a%d-f%03d.jpg", attempt, k) }

// frameArgs builds: one "-ss T -i file" input per time, and per input one
// single-frame JPEG output. The GPU form keeps frames in video memory
// through scale_cuda and downloads only the small result.
func frameArgs(info *Info, times []time.Duration, opts FrameOptions, gpu, scaleCUDA bool, dir string, attempt int) []string {
	args := ffmpegArgs()
	in := fileURL(info.Path)
	for _, ts := range times {
		if gpu {
			args = append(args, "-hwaccel", "cuda")
			if scaleCUDA {
				args = append(args, "-hwaccel_output_format", "cuda")
			}
		}
		args = append(args, "-ss", fmt.Sprintf("%.6f", ts.Seconds()), "-i", in)
	}
	filter := fmt.Sprintf("scale=%d:%d", opts.Width, opts.Height)
	if gpu && scaleCUDA {
		filter = fmt.Sprintf("scale_cuda=%d:%d,hwdownload,format=nv12", opts.Width, opts.Height)
	}
	for i := range times {
		args = append(args, "-map", fmt.Sprintf("%d:%d", i, info.Video().Index), "-frames:v", "1", "-vf", filter,
			"-q:v", "3", "-f", "image2", "-update", "1", filepath.Join(dir, frameName(attempt, i)))
	}
	return args
}
