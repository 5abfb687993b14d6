package media

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TranscodeOptions configures Transcode.
type TranscodeOptions struct {
	// Height of the proxy; 0 means 720. A smaller source keeps its size:
	// a proxy is never upscaled.
	Height int
}

// ParseQuality reads a video_quality task option ("720p", "480p",
// "1080p") as a height.
func ParseQuality(s string) (int, error) {
	h, err := strconv.Atoi(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), "p"))
	if err != nil || h < 144 || h > 4320 {
		return 0, fmt.Errorf("media: video quality %q is not a height like \"720p\"", s)
	}
	return h, nil
}

// Transcode writes an H.264/AAC MP4 proxy of the video in src to dst. It
// takes the fastest path Detect allowed: NVDEC decode, scale_cuda and
// h264_nvenc when the GPU has an encoder; NVDEC decode with a libx264
// encode on GPUs without one (A100, H100, H200); the CPU otherwise. When a
// GPU path fails on this file (a codec or bit depth its NVDEC or NVENC
// does not take), the next path is tried. The returned Path says which one
// made the file. dst appears only when the proxy is complete.
func (t *Tools) Transcode(ctx context.Context, src, dst string, opts TranscodeOptions) (Path, error) {
	const op = "transcode"
	if opts.Height == 0 {
		opts.Height = 720
	}
	if opts.Height < 2 {
		return Path{}, &Error{Op: op, Path: src, Err: fmt.Errorf("height %d out of range", opts.Height)}
	}
	info, err := t.Probe(ctx, src)
	if err != nil {
		return Path{}, reop(err, op)
	}
	v := info.Video()
	if v == nil {
		return Path{}, &Error{Op: op, Path: src, Kind: ErrNoVideo}
	}
	if v.Width <= 0 || v.Height <= 0 {
		return Path{}, &Error{Op: op, Path: src, Kind: ErrCorrupt, Err: errors.New("video stream has no size")}
	}

	nvdec := t.GPU.NVDEC && nvdecCodec(v.Codec)
	var plans []Path
	if t.GPU.NVENC {
		plans = append(plans, Path{Decode: pick(nvdec, PathNVDEC, PathCPU), Encode: PathNVENC})
	}
	if nvdec {
		plans = append(plans, Path{Decode: PathNVDEC, Encode: PathLibx264})
	}
	plans = append(plans, Path{Decode: PathCPU, Encode: PathLibx264})

	// The proxy may not outgrow the input by more than ProxyRatio (a 1 MB
	// upload once made a 24 MB proxy): RLIMIT_FSIZE stops ffmpeg there.
	lim := t.limits()
	maxOut := max(int64(lim.ProxyRatio*float64(info.Size)), lim.ProxyFloor)
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".proxy-*.mp4")
	if err != nil {
		return Path{}, &Error{Op: op, Path: src, Err: fmt.Errorf("cannot write next to %s: %w", dst, err)}
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // a no-op after the rename

	var fallbacks []string
	for i, p := range plans {
		args := t.transcodeArgs(info, v, p, t.GPU.ScaleCUDA, opts.Height, tmp.Name())
		err := t.run(ctx, op, src, t.ffmpeg(), args, lim.child(info.Duration, true, maxOut), nil)
		if err == nil {
			if err := os.Rename(tmp.Name(), dst); err != nil {
				return Path{}, &Error{Op: op, Path: src, Err: err}
			}
			p.Fallback = strings.Join(fallbacks, "; ")
			return p, nil
		}
		if ctx.Err() != nil || i == len(plans)-1 || errors.Is(err, ErrLimit) {
			return Path{}, err
		}
		fallbacks = append(fallbacks, fmt.Sprintf("%s+%s: %s", p.Decode, p.Encode, fallbackReason(err, src)))
	}
	panic("unreachable: the CPU plan is always last")
}

func pick(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

// proxySize scales (w, h) to height target, keeping the aspect ratio,
// never enlarging, and rounding both to even numbers as H.264 4:2:0 needs.
func proxySize(w, h, target int) (int, int) {
	th := min(target, h)
	tw := int(float64(w)*float64(th)/float64(h) + 0.5)
	return max(2, tw&^1), max(2, th&^1)
}

func (t *Tools) transcodeArgs(info *Info, v *Stream, p Path, scaleCUDA bool, height int, out string) []string {
	w, h := proxySize(v.Width, v.Height, height)
	args := ffmpegArgs("-threads", strconv.Itoa(t.limits().Threads))
	var filter string
	switch {
	case p.Decode == PathNVDEC && scaleCUDA:
		// Frames stay in video memory through the scaler; libx264 needs
		// them downloaded, NVENC takes them as they are.
		args = append(args, "-hwaccel", "cuda", "-hwaccel_output_format", "cuda")
		filter = fmt.Sprintf("scale_cuda=%d:%d", w, h)
		if p.Encode == PathLibx264 {
			filter += ",hwdownload,format=nv12"
		}
	case p.Decode == PathNVDEC:
		// Without -hwaccel_output_format the decoded frames come back to
		// system memory for the CPU scaler.
		args = append(args, "-hwaccel", "cuda")
		filter = fmt.Sprintf("scale=%d:%d,format=yuv420p", w, h)
	default:
		filter = fmt.Sprintf("scale=%d:%d,format=yuv420p", w, h)
	}
	args = append(args, t.inputArgs(info.Path, demuxerOf(info))...)
	args = append(args, "-map", fmt.Sprintf("0:%d", v.Index), "-vf", filter)
	if p.Encode == PathNVENC {
		args = append(args, "-c:v", "h264_nvenc", "-preset", "p4", "-rc", "vbr", "-cq", "23", "-b:v", "0")
	} else {
		args = append(args, "-c:v", "libx264", "-preset", "veryfast", "-crf", "23")
	}
	if a := info.Audio(); a != nil {
		args = append(args, "-map", fmt.Sprintf("0:%d", a.Index))
		if a.Codec == "aac" {
			args = append(args, "-c:a", "copy")
		} else {
			args = append(args, "-c:a", "aac", "-b:a", "128k")
		}
	} else {
		args = append(args, "-an")
	}
	return append(args, "-sn", "-dn", "-movflags", "+faststart", "-f", "mp4", out)
}
