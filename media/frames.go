package media

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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
	return t.frames(ctx, op, info, thumbnailTimes(info.Duration, opts.Count), opts, false)
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
	times, err := t.keyframeTimes(ctx, op, info, v)
	if err != nil {
		return nil, Path{}, err
	}
	if len(times) == 0 {
		return nil, Path{}, &Error{Op: op, Path: path, Kind: ErrCorrupt, Err: errors.New("the video has no keyframe")}
	}
	return t.frames(ctx, op, info, pickEvenly(times, opts.Count), opts, true)
}

// keyframeTimes lists the video stream's packets with ffprobe, streaming
// its output: at most MaxPackets lines are read (one-byte laced packets
// make millions), and only the keyframes' times are kept.
func (t *Tools) keyframeTimes(ctx context.Context, op string, info *Info, v *Stream) ([]time.Duration, error) {
	lim := t.limits()
	args := append([]string{"-v", "error"}, t.inputArgs(info.Path, demuxerOf(info))...)
	args = append(args[:len(args)-2], "-select_streams", strconv.Itoa(v.Index),
		"-show_entries", "packet=pts_time,flags", "-of", "csv=p=0", fileURL(info.Path))
	var times []time.Duration
	err := t.run(ctx, op, info.Path, t.ffprobe(), args, lim.child(info.Duration, true, 0), func(r io.Reader) error {
		br := bufio.NewReaderSize(r, 64<<10)
		for n := 0; ; n++ {
			line, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				return &Error{Op: op, Path: info.Path, Kind: ErrCorrupt, Err: errors.New("ffprobe printed an overlong packet line")}
			}
			if n >= lim.MaxPackets {
				return &Error{Op: op, Path: info.Path, Kind: ErrLimit, Err: &LimitError{
					Limit: "packet count", Max: fmt.Sprint(lim.MaxPackets), Flag: "media-max-packets"}}
			}
			if ts, ok := keyframeTime(line, info.StartTime); ok {
				times = append(times, ts)
			}
			if err != nil {
				return nil // EOF; a read error shows in the exit status
			}
		}
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return slices.Compact(times), nil
}

// keyframeTime parses one of ffprobe's "pts_time,flags" lines
// ("12.000000,K__") into a time from the start of the file, if the packet
// is a keyframe.
func keyframeTime(line []byte, start time.Duration) (time.Duration, bool) {
	pts, flags, ok := strings.Cut(strings.TrimSpace(string(line)), ",")
	if !ok || !strings.Contains(flags, "K") {
		return 0, false
	}
	f, err := strconv.ParseFloat(pts, 64)
	if err != nil {
		return 0, false
	}
	return max(time.Duration(f*float64(time.Second))-start, 0).Round(time.Microsecond), true
}

// keyframeTimes parses a whole "pts_time,flags" listing into sorted,
// distinct times (tests use it; the worker streams with Tools.keyframeTimes).
func keyframeTimes(csv string, start time.Duration) []time.Duration {
	var times []time.Duration
	for _, line := range strings.Split(csv, "\n") {
		if ts, ok := keyframeTime([]byte(line), start); ok {
			times = append(times, ts)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return slices.Compact(times)
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

// frames decodes one frame at each time, each in its own ffmpeg: one
// decoder in memory at a time, however many frames are asked for (one
// ffmpeg with an input per timestamp held a decoder per timestamp, 8 GB
// for five thumbnails of a 16k×16k video). Keyframes are decoded with
// -skip_frame nokey, which decodes the keyframe and nothing else.
func (t *Tools) frames(ctx context.Context, op string, info *Info, times []time.Duration, opts FrameOptions, keyOnly bool) ([]Frame, Path, error) {
	gpu := t.GPU.NVDEC && nvdecCodec(info.Video().Codec)
	var fallback string
	if gpu {
		frames, err := t.framesOnce(ctx, op, info, times, opts, true, keyOnly)
		if err == nil {
			return frames, Path{Decode: PathNVDEC}, nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrLimit) {
			return nil, Path{}, err
		}
		fallback = "nvdec: " + fallbackReason(err, info.Path)
	}
	frames, err := t.framesOnce(ctx, op, info, times, opts, false, keyOnly)
	if err != nil {
		return nil, Path{}, err
	}
	return frames, Path{Decode: PathCPU, Fallback: fallback}, nil
}

func (t *Tools) framesOnce(ctx context.Context, op string, info *Info, times []time.Duration, opts FrameOptions, gpu, keyOnly bool) ([]Frame, error) {
	dir, err := os.MkdirTemp(t.TempDir, "morag-frames-")
	if err != nil {
		return nil, &Error{Op: op, Path: info.Path, Err: err}
	}
	defer os.RemoveAll(dir)

	frames := make([]Frame, len(times))
	for i, ts := range times {
		// A seek past the last decodable frame (variable frame rate, a
		// video track shorter than the audio) gives no picture; that time
		// is retried once two seconds earlier.
		for attempt := 0; ; attempt++ {
			at := ts
			if attempt > 0 {
				at = max(ts-2*time.Second, 0)
			}
			out := filepath.Join(dir, frameName(attempt, i))
			args := t.frameArgs(info, at, opts, gpu, gpu && t.GPU.ScaleCUDA, keyOnly, out)
			// A JPEG of at most Width×Height: 16 MiB is far beyond it.
			if err := t.run(ctx, op, info.Path, t.ffmpeg(), args, t.limits().child(0, false, 16<<20), nil); err != nil {
				return nil, err
			}
			data, err := os.ReadFile(out)
			if errors.Is(err, fs.ErrNotExist) || (err == nil && len(data) == 0) {
				if attempt == 0 && at > 0 {
					continue
				}
				return nil, &Error{Op: op, Path: info.Path, Kind: ErrCorrupt,
					Err: fmt.Errorf("no picture could be decoded at %v", ts)}
			}
			if err != nil {
				return nil, &Error{Op: op, Path: info.Path, Err: err}
			}
			frames[i] = Frame{Time: at, Width: opts.Width, Height: opts.Height, JPEG: data}
			break
		}
	}
	return frames, nil
}

func frameName(attempt, k int) string { return fmt.Sprintf("a%d-f%03d.jpg", attempt, k) }

// frameArgs builds one "-ss T -i file" input and one single-frame JPEG
// output, scaled first thing after the decoder. The GPU form keeps the
// frame in video memory through scale_cuda and downloads only the small
// result.
func (t *Tools) frameArgs(info *Info, at time.Duration, opts FrameOptions, gpu, scaleCUDA, keyOnly bool, out string) []string {
	args := ffmpegArgs("-threads", "1")
	if keyOnly {
		args = append(args, "-skip_frame", "nokey")
	}
	if gpu {
		args = append(args, "-hwaccel", "cuda")
		if scaleCUDA {
			args = append(args, "-hwaccel_output_format", "cuda")
		}
	}
	args = append(args, "-ss", fmt.Sprintf("%.6f", at.Seconds()))
	args = append(args, t.inputArgs(info.Path, demuxerOf(info))...)
	filter := fmt.Sprintf("scale=%d:%d", opts.Width, opts.Height)
	if gpu && scaleCUDA {
		filter = fmt.Sprintf("scale_cuda=%d:%d,hwdownload,format=nv12", opts.Width, opts.Height)
	}
	return append(args, "-map", fmt.Sprintf("0:%d", info.Video().Index), "-an", "-sn", "-dn", "-frames:v", "1",
		"-vf", filter, "-q:v", "3", "-f", "image2", "-update", "1", out)
}
