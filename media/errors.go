package media

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Kinds of failure. An *Error wraps one of them, so callers test with
// errors.Is(err, media.ErrCorrupt) and read the details with errors.As.
var (
	ErrNotFound  = errors.New("file not found")
	ErrCorrupt   = errors.New("corrupt or unsupported media (ffmpeg cannot read it)")
	ErrTruncated = errors.New("media file is truncated (it ends before its own headers say it should)")
	ErrNoStreams = errors.New("media file has no audio or video stream")
	ErrNoAudio   = errors.New("media file has no audio stream")
	ErrNoVideo   = errors.New("media file has no video stream")
	ErrTooLong   = errors.New("media is longer than the allowed maximum")
	// ErrFormat: the content is not one of the audio/video containers the
	// worker opens (a playlist, a concat list, an image sequence, a
	// subtitle file, ...); the *Error's Err says which format it is.
	ErrFormat = errors.New("not an accepted audio/video container")
	// ErrLimit: the input exceeds one of the worker's Limits; the *Error's
	// Err is a *LimitError naming it and the flag that raises it.
	ErrLimit = errors.New("input exceeds a worker limit")
	// ErrToolMissing means ffmpeg or ffprobe is not installed; on Debian run
	// scripts/setup (apt-get install ffmpeg).
	ErrToolMissing = errors.New("ffmpeg/ffprobe not found (install Debian's ffmpeg package)")
	// ErrGPUUnavailable is returned by Detect in ModeOn when the GPU cannot
	// decode video; the message lists what each test run printed.
	ErrGPUUnavailable = errors.New("GPU video decoding (NVDEC) is not available")
)

// Error describes a failed media operation.
type Error struct {
	Op   string // "probe", "decode audio", "thumbnails", "keyframes", "transcode", "detect"
	Path string // the input file
	// Kind is one of the Err* values above, or nil when the failure could
	// not be classified (then Stderr says what ffmpeg reported).
	Kind error
	// Stderr is the tail of ffmpeg's or ffprobe's standard error.
	Stderr string
	// Err is the underlying error: the exit status, a context error, an I/O
	// error. May be nil.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("media: ")
	b.WriteString(e.Op)
	if e.Path != "" {
		b.WriteString(" ")
		b.WriteString(e.Path)
	}
	b.WriteString(": ")
	switch {
	case e.Kind != nil && e.Err != nil:
		fmt.Fprintf(&b, "%v (%v)", e.Kind, e.Err)
	case e.Kind != nil:
		b.WriteString(e.Kind.Error())
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString("failed")
	}
	if s := lastLines(e.Stderr, 3); s != "" {
		b.WriteString(": ")
		b.WriteString(s)
	}
	return b.String()
}

// Public is the error as a client may see it: the operation and what went
// wrong, without the worker's paths or ffmpeg's output (both stay in the
// worker's log through Error). Limit and format errors keep their detail,
// which names the limit or the detected format.
func (e *Error) Public() string {
	var l *LimitError
	var f *FormatError
	switch {
	case errors.As(e.Err, &l):
		return "media: " + e.Op + ": " + l.Error()
	case errors.As(e.Err, &f):
		return "media: " + e.Op + ": " + ErrFormat.Error() + ": " + f.Error()
	case e.Kind != nil:
		return "media: " + e.Op + ": " + e.Kind.Error()
	case errors.Is(e.Err, context.Canceled), errors.Is(e.Err, context.DeadlineExceeded):
		return "media: " + e.Op + ": cancelled"
	}
	return "media: " + e.Op + ": failed (the worker's log has ffmpeg's message)"
}

// fallbackReason says why a GPU attempt failed, for the result's
// gpu_fallback: the public text and ffmpeg's last line, which names the
// GPU's problem ("Cannot load libnvcuvid.so.1"), with the input's path
// taken out.
func fallbackReason(err error, path string) string {
	var e *Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	s := e.Public()
	if last := lastLines(e.Stderr, 1); last != "" {
		if path != "" {
			last = strings.ReplaceAll(last, fileURL(path), "<input>")
			last = strings.ReplaceAll(last, path, "<input>")
		}
		s += ": " + last
	}
	return s
}

// PublicError wraps err so that its text is client-safe (Public for an
// *Error inside it, with prefix before it) while errors.Is and errors.As
// still see everything underneath: the runner reads time limits and
// cancellations from the chain. Errors without an *Error are returned as
// they are.
func PublicError(prefix string, err error) error {
	var e *Error
	if err == nil || !errors.As(err, &e) {
		return err
	}
	return &publicError{text: prefix + e.Public(), err: err}
}

type publicError struct {
	text string
	err  error
}

func (p *publicError) Error() string { return p.text }
func (p *publicError) Unwrap() error { return p.err }

// FormatError names a detected container that is not accepted.
type FormatError struct {
	Format string // ffprobe's name for it, e.g. "hls", "concat"; "" when none was recognised
}

func (e *FormatError) Error() string {
	if e.Format == "" {
		return "no known format was recognised"
	}
	return fmt.Sprintf("detected format %q (accepted: %s)", e.Format, acceptedFormatsText)
}

// Unwrap exposes both the kind and the cause to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// classify maps ffmpeg's and ffprobe's messages to a Kind. The strings are
// libavformat's own, stable across the 5.x and 6.x releases.
func classify(stderr string) error {
	s := strings.ToLower(stderr)
	switch {
	case strings.Contains(s, "no such file or directory"):
		return ErrNotFound
	case strings.Contains(s, "partial file"),
		strings.Contains(s, "file ended prematurely"),
		strings.Contains(s, "truncated"),
		strings.Contains(s, "unexpected end of file"):
		return ErrTruncated
	case strings.Contains(s, "matches no streams") && strings.Contains(s, ":a"):
		return ErrNoAudio
	case strings.Contains(s, "matches no streams") && strings.Contains(s, ":v"):
		return ErrNoVideo
	case strings.Contains(s, "invalid data found when processing input"),
		strings.Contains(s, "moov atom not found"),
		strings.Contains(s, "could not find codec parameters"),
		strings.Contains(s, "invalid argument"),
		strings.Contains(s, "end of file"),
		strings.Contains(s, "decoding for stream"),
		strings.Contains(s, "unknown format"),
		strings.Contains(s, "could not seek"):
		return ErrCorrupt
	}
	return nil
}
