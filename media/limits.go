package media

import (
	"errors"
	"fmt"
	"runtime"
	"time"
)

// Limits bound what one input may cost. Uploads are hostile until proven
// otherwise: a few megabytes can declare 16k×16k frames, ten hours of one
// pixel, hundreds of streams or megabytes of tags, and each of those costs
// the worker or ffmpeg gigabytes or hours. Every field's zero value means
// its default (DefaultLimits); a negative value is refused by Validate.
// The worker exposes each one as a flag (named in LimitError.Flag), so an
// operator who needs bigger inputs raises the one limit that was hit.
type Limits struct {
	// MaxPixels is the largest frame (width × height) probed or decoded;
	// ffmpeg's decoders refuse bigger ones (-max_pixels).
	MaxPixels int64
	// MaxDuration is the longest accepted media.
	MaxDuration time.Duration
	// MaxStreams is the most streams one file may have.
	MaxStreams int
	// MaxFPS is the highest average video frame rate accepted.
	MaxFPS float64
	// MaxProbeOutput caps the bytes read from one ffprobe run (stream and
	// format metadata, tags included): a tag bomb ends there.
	MaxProbeOutput int64
	// MaxPackets caps the packets listed when looking for keyframes.
	MaxPackets int
	// Memory is each ffmpeg/ffprobe child's address-space limit
	// (RLIMIT_AS), in bytes.
	Memory int64
	// TimeBase is the wall-clock time every child gets whatever the
	// media's length (a probe, one frame); TimeFactor is added per second
	// of media for the runs that decode all of it (proxy, audio): the
	// limit is TimeBase + TimeFactor × duration. CPU time is capped at the
	// wall limit times Threads.
	TimeBase   time.Duration
	TimeFactor float64
	// Threads bounds ffmpeg's decoder/encoder threads (memory grows with
	// frame threads).
	Threads int
	// ProxyRatio and ProxyFloor bound a proxy transcode's size to
	// max(ProxyRatio × input size, ProxyFloor) bytes.
	ProxyRatio float64
	ProxyFloor int64
}

// DefaultLimits are generous for real recordings (8K, four hours, a 4 GiB
// address space per ffmpeg) and refuse the bombs.
func DefaultLimits() Limits {
	return Limits{
		MaxPixels:      8192 * 4320,
		MaxDuration:    4 * time.Hour,
		MaxStreams:     64,
		MaxFPS:         1000,
		MaxProbeOutput: 4 << 20,
		MaxPackets:     2_000_000,
		Memory:         4 << 30,
		TimeBase:       60 * time.Second,
		TimeFactor:     4,
		Threads:        min(runtime.NumCPU(), 8),
		ProxyRatio:     4,
		ProxyFloor:     8 << 20,
	}
}

// withDefaults fills the zero fields.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxPixels == 0 {
		l.MaxPixels = d.MaxPixels
	}
	if l.MaxDuration == 0 {
		l.MaxDuration = d.MaxDuration
	}
	if l.MaxStreams == 0 {
		l.MaxStreams = d.MaxStreams
	}
	if l.MaxFPS == 0 {
		l.MaxFPS = d.MaxFPS
	}
	if l.MaxProbeOutput == 0 {
		l.MaxProbeOutput = d.MaxProbeOutput
	}
	if l.MaxPackets == 0 {
		l.MaxPackets = d.MaxPackets
	}
	if l.Memory == 0 {
		l.Memory = d.Memory
	}
	if l.TimeBase == 0 {
		l.TimeBase = d.TimeBase
	}
	if l.TimeFactor == 0 {
		l.TimeFactor = d.TimeFactor
	}
	if l.Threads == 0 {
		l.Threads = d.Threads
	}
	if l.ProxyRatio == 0 {
		l.ProxyRatio = d.ProxyRatio
	}
	if l.ProxyFloor == 0 {
		l.ProxyFloor = d.ProxyFloor
	}
	return l
}

// Validate refuses negative limits (0 means the default).
func (l Limits) Validate() error {
	if l.MaxPixels < 0 || l.MaxDuration < 0 || l.MaxStreams < 0 || l.MaxFPS < 0 || l.MaxProbeOutput < 0 ||
		l.MaxPackets < 0 || l.Memory < 0 || l.TimeBase < 0 || l.TimeFactor < 0 || l.Threads < 0 ||
		l.ProxyRatio < 0 || l.ProxyFloor < 0 {
		return errors.New("media: a limit is negative; use 0 for the default")
	}
	return nil
}

func (t *Tools) limits() Limits {
	if t == nil {
		return DefaultLimits()
	}
	return t.Limits.withDefaults()
}

// LimitError says which limit an input exceeded and which worker flag
// raises it. Its text is safe to show to the client: no paths, no ffmpeg
// output.
type LimitError struct {
	Limit string // "resolution", "duration", "memory", ...
	Got   string // what the input has or needed; may be empty
	Max   string // the limit
	Flag  string // the worker flag that sets it
}

func (e *LimitError) Error() string {
	got := ""
	if e.Got != "" {
		got = " " + e.Got
	}
	return fmt.Sprintf("%s limit exceeded:%s over the limit of %s (an operator can raise the worker flag -%s)", e.Limit, got, e.Max, e.Flag)
}

// Is makes errors.Is(err, ErrLimit) true for every LimitError.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// checkInfo applies the limits that a probe's result can be held to.
func (l Limits) checkInfo(info *Info) *LimitError {
	if n := len(info.Streams); n > l.MaxStreams {
		return &LimitError{Limit: "stream count", Got: fmt.Sprintf("%d streams", n), Max: fmt.Sprint(l.MaxStreams), Flag: "media-max-streams"}
	}
	if info.Duration > l.MaxDuration {
		return &LimitError{Limit: "duration", Got: info.Duration.Round(time.Second).String(), Max: l.MaxDuration.String(), Flag: "media-max-duration"}
	}
	for _, s := range info.Streams {
		if s.Type != "video" {
			continue
		}
		if px := int64(s.Width) * int64(s.Height); px > l.MaxPixels {
			return &LimitError{Limit: "resolution", Got: fmt.Sprintf("%dx%d", s.Width, s.Height), Max: fmt.Sprintf("%d pixels", l.MaxPixels), Flag: "media-max-pixels"}
		}
		if s.AvgFPS > l.MaxFPS {
			return &LimitError{Limit: "frame rate", Got: fmt.Sprintf("%.0f fps", s.AvgFPS), Max: fmt.Sprintf("%.0f fps", l.MaxFPS), Flag: "media-max-fps"}
		}
	}
	return nil
}

// childLimits are one process's bounds.
type childLimits struct {
	Wall   time.Duration
	CPU    time.Duration
	Memory int64
	// FileSize caps every file the child writes (RLIMIT_FSIZE); 0 means
	// it may write none, which is what a probe or a pipe decode needs.
	FileSize int64
}

// child returns the bounds of a run that handles media of duration d:
// whole says it decodes all of it (TimeFactor applies), else it is a
// probe or a single frame.
func (l Limits) child(d time.Duration, whole bool, fileSize int64) childLimits {
	wall := l.TimeBase
	if whole {
		wall += time.Duration(l.TimeFactor * float64(d))
	}
	return childLimits{Wall: wall, CPU: wall * time.Duration(max(1, l.Threads)), Memory: l.Memory, FileSize: fileSize}
}
