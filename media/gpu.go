package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Mode is the worker's -gpu flag.
type Mode string

const (
	// ModeAuto uses what works and falls back to the CPU for the rest.
	ModeAuto Mode = "auto"
	// ModeOn refuses to start unless the GPU can at least decode video.
	ModeOn Mode = "on"
	// ModeOff never touches the GPU; Detect runs no tests.
	ModeOff Mode = "off"
)

// ParseMode parses "auto", "on" or "off"; "" is auto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeOn, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("media: unknown GPU mode %q: use auto, on or off", s)
}

// Capability names, the keys of Capabilities.Reasons.
const (
	CapNVDEC     = "nvdec"
	CapNVENC     = "nvenc"
	CapScaleCUDA = "scale_cuda"
	CapDevice    = "device"
)

// Capabilities is what Detect proved this machine's ffmpeg can do on the
// GPU. It is plain data, meant to be computed once at start and reported
// as is (startup log, health check, inspect stats); its JSON form is
//
//	{"mode":"auto","nvdec":false,"nvenc":false,"scale_cuda":false,"device":"",
//	 "reasons":{"nvdec":"Cannot load libcuda.so.1", ...}}
//
// The zero value means CPU only.
type Capabilities struct {
	Mode      Mode   `json:"mode"`
	NVDEC     bool   `json:"nvdec"`      // -hwaccel cuda and h264_cuvid decode
	NVENC     bool   `json:"nvenc"`      // h264_nvenc encode (absent on A100/H100/H200)
	ScaleCUDA bool   `json:"scale_cuda"` // the scale_cuda filter
	Device    string `json:"device"`     // GPU name from nvidia-smi, "" when none
	Driver    string `json:"driver,omitempty"`
	// Reasons says, per capability that is false, why: the tail of what
	// ffmpeg printed when the test run failed.
	Reasons map[string]string `json:"reasons,omitempty"`
}

// Any reports whether any GPU path is usable.
func (c Capabilities) Any() bool { return c.NVDEC || c.NVENC || c.ScaleCUDA }

// String is a one-line summary for logs.
func (c Capabilities) String() string {
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	dev := c.Device
	if dev == "" {
		dev = "none"
	}
	s := fmt.Sprintf("gpu mode=%s device=%q nvdec=%s nvenc=%s scale_cuda=%s", c.Mode, dev, yn(c.NVDEC), yn(c.NVENC), yn(c.ScaleCUDA))
	keys := make([]string, 0, len(c.Reasons))
	for k := range c.Reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s += fmt.Sprintf(" %s_reason=%q", k, c.Reasons[k])
	}
	return s
}

// DetectOptions configures Detect.
type DetectOptions struct {
	Mode   Mode   // "" is ModeAuto
	FFmpeg string // "" means "ffmpeg" from PATH
	// Timeout bounds each test run; 0 means 20 s. A first CUDA context on a
	// cold driver takes a few seconds, a missing one fails in milliseconds.
	Timeout time.Duration
}

// Detect finds out, by real test runs, what the GPU can do for ffmpeg: a
// one-frame h264_nvenc encode, an h264_cuvid and a -hwaccel cuda decode of
// a tiny H.264 clip, and a scale_cuda filter pass. Listing encoders proves
// nothing (Debian's ffmpeg lists h264_nvenc on every machine), which is why
// each capability is tested by using it.
//
// In ModeOn, Detect returns the capabilities together with an error
// wrapping ErrGPUUnavailable when NVDEC does not work, so the worker can
// refuse to start and say why. NVENC is not required: the H100 has none.
func Detect(ctx context.Context, opts DetectOptions) (Capabilities, error) {
	mode := opts.Mode
	if mode == "" {
		mode = ModeAuto
	}
	if _, err := ParseMode(string(mode)); err != nil {
		return Capabilities{}, err
	}
	caps := Capabilities{Mode: mode, Reasons: map[string]string{}}
	if mode == ModeOff {
		for _, k := range []string{CapNVDEC, CapNVENC, CapScaleCUDA} {
			caps.Reasons[k] = "disabled by -gpu off"
		}
		return caps, nil
	}
	ffmpeg := opts.FFmpeg
	if ffmpeg == "" {
		ffmpeg = "ffmpeg"
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	try := func(stdin []byte, args ...string) (string, error) {
		tctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		tail := newTail(stderrTail)
		cmd := command(tctx, ffmpeg, ffmpegArgs(args...), tail)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		err := cmd.Run()
		if err != nil && tctx.Err() != nil {
			return "", fmt.Errorf("test run timed out after %v", timeout)
		}
		if err != nil {
			msg := excerpt(tail.String())
			if msg == "" {
				msg = err.Error()
			}
			return "", errors.New(msg)
		}
		return tail.String(), nil
	}

	caps.Device, caps.Driver, caps.Reasons[CapDevice] = nvidiaSMI(ctx, timeout)
	if caps.Reasons[CapDevice] == "" {
		delete(caps.Reasons, CapDevice)
	}

	// NVENC: one frame from a synthetic source.
	if _, err := try(nil, "-f", "lavfi", "-i", "nullsrc=s=256x256:d=0.1", "-frames:v", "1",
		"-c:v", "h264_nvenc", "-f", "null", "-"); err != nil {
		caps.Reasons[CapNVENC] = err.Error()
	} else {
		caps.NVENC = true
	}

	// NVDEC: a tiny H.264 clip made in memory with libx264, decoded both by
	// the explicit CUVID decoder (which cannot silently fall back to the
	// CPU) and by -hwaccel cuda, the form the operations use.
	clip, err := probeClip(ctx, ffmpeg, timeout)
	if err != nil {
		caps.Reasons[CapNVDEC] = "cannot make the H.264 test clip: " + err.Error()
	} else if _, err := try(clip, "-c:v", "h264_cuvid", "-f", "h264", "-i", "pipe:0", "-f", "null", "-"); err != nil {
		caps.Reasons[CapNVDEC] = "h264_cuvid: " + err.Error()
	} else if _, err := try(clip, "-hwaccel", "cuda", "-hwaccel_output_format", "cuda", "-f", "h264", "-i", "pipe:0",
		"-f", "null", "-"); err != nil {
		caps.Reasons[CapNVDEC] = "-hwaccel cuda: " + err.Error()
	} else {
		caps.NVDEC = true
	}

	// scale_cuda on uploaded frames, so it is tested even where NVDEC is
	// missing; hwdownload proves the frames come back.
	if _, err := try(nil, "-init_hw_device", "cuda=gpu", "-filter_hw_device", "gpu",
		"-f", "lavfi", "-i", "testsrc=s=256x256:d=0.1", "-frames:v", "1",
		"-vf", "format=nv12,hwupload,scale_cuda=128:128,hwdownload,format=nv12", "-f", "null", "-"); err != nil {
		caps.Reasons[CapScaleCUDA] = err.Error()
	} else {
		caps.ScaleCUDA = true
	}

	if len(caps.Reasons) == 0 {
		caps.Reasons = nil
	}
	if err := ctx.Err(); err != nil {
		return caps, &Error{Op: "detect", Err: err}
	}
	if mode == ModeOn && !caps.NVDEC {
		return caps, fmt.Errorf("media: -gpu on: %w: %s (NVENC: %s; scale_cuda: %s); "+
			"check that the NVIDIA driver is installed and, in a container, that NVIDIA_DRIVER_CAPABILITIES includes video, or run with -gpu auto",
			ErrGPUUnavailable, caps.Reasons[CapNVDEC], reasonOr(caps, CapNVENC), reasonOr(caps, CapScaleCUDA))
	}
	return caps, nil
}

func reasonOr(c Capabilities, k string) string {
	if r := c.Reasons[k]; r != "" {
		return r
	}
	return "ok"
}

// probeClip makes a 5-frame 256x256 H.264 elementary stream in memory.
func probeClip(ctx context.Context, ffmpeg string, timeout time.Duration) ([]byte, error) {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tail := newTail(stderrTail)
	var out bytes.Buffer
	cmd := command(tctx, ffmpeg, ffmpegArgs(
		"-f", "lavfi", "-i", "testsrc=s=256x256:r=25:d=0.2", "-c:v", "libx264", "-preset", "ultrafast",
		"-pix_fmt", "yuv420p", "-f", "h264", "pipe:1"), tail)
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, ErrToolMissing
		}
		if s := excerpt(tail.String()); s != "" {
			return nil, errors.New(s)
		}
		return nil, err
	}
	return out.Bytes(), nil
}

// nvidiaSMI names the GPU for the logs. Its absence is only a note: the
// test runs above decide the capabilities.
func nvidiaSMI(ctx context.Context, timeout time.Duration) (device, driver, reason string) {
	bin, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return "", "", "nvidia-smi not found (no NVIDIA driver installed or visible)"
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tail := newTail(stderrTail)
	cmd := command(tctx, bin, []string{"--query-gpu=name,driver_version", "--format=csv,noheader"}, tail)
	out, err := cmd.Output()
	if err != nil {
		msg := lastLines(tail.String()+"\n"+string(out), 2)
		if msg == "" {
			msg = err.Error()
		}
		return "", "", "nvidia-smi: " + msg
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	name, drv, _ := strings.Cut(first, ",")
	return strings.TrimSpace(name), strings.TrimSpace(drv), ""
}

// excerpt is the start of a failed test run's stderr, where ffmpeg names
// the root cause ("Cannot load libcuda.so.1"), without the per-run object
// addresses, so the reason is the same on every start.
func excerpt(stderr string) string {
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		if l = strings.TrimSpace(addrRE.ReplaceAllString(l, "[$1]")); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[:min(len(lines), 2)], "; ")
}

var addrRE = regexp.MustCompile(`\[([\w.-]+) @ 0x[0-9a-fA-F]+\]`)

// lastLines returns the last n non-empty lines of s, joined by "; ".
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
