package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Tools runs ffmpeg and ffprobe. The zero value works: binaries from PATH
// and the CPU path for everything. Set GPU to what Detect returned once at
// start; a Tools value is safe for concurrent use and keeps no state.
type Tools struct {
	FFmpeg  string       // ffmpeg binary; "" means "ffmpeg" from PATH
	FFprobe string       // ffprobe binary; "" means "ffprobe" from PATH
	GPU     Capabilities // what Detect found; the zero value means CPU only
	// Limits bound every run on user input; the zero value means
	// DefaultLimits.
	Limits Limits
	// TempDir holds the operations' temporary directories; "" means
	// os.TempDir(). The worker points it at its own folder, which it sweeps.
	TempDir string
}

// Path records which hardware an operation used, for the task result's
// metadata (decode: nvdec|cpu, encode: nvenc|libx264).
type Path struct {
	Decode string `json:"decode"`           // "nvdec" or "cpu"
	Encode string `json:"encode,omitempty"` // "nvenc" or "libx264"; empty when nothing was encoded to video
	// Fallback says why a GPU attempt failed and the CPU path was used
	// instead; empty when the first choice worked.
	Fallback string `json:"fallback,omitempty"`
}

// Decode and encode path names.
const (
	PathNVDEC   = "nvdec"
	PathCPU     = "cpu"
	PathNVENC   = "nvenc"
	PathLibx264 = "libx264"
)

func (t *Tools) ffmpeg() string {
	if t == nil || t.FFmpeg == "" {
		return "ffmpeg"
	}
	return t.FFmpeg
}

func (t *Tools) ffprobe() string {
	if t == nil || t.FFprobe == "" {
		return "ffprobe"
	}
	return t.FFprobe
}

// ffmpegArgs starts every ffmpeg command line: never read the terminal,
// and print only errors, which is what gets classified and reported.
func ffmpegArgs(args ...string) []string {
	return append([]string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y"}, args...)
}

// tailBuffer keeps the last max bytes written to it: enough of ffmpeg's
// stderr to explain a failure without holding a chatty log in memory.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
	// seen accumulates classification of every line, including lines that
	// have scrolled out of the tail (a "partial file" near the start of a
	// long decode must still make it a truncation).
	kind error
}

func newTail(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k := classify(string(p)); k != nil && t.kind == nil {
		t.kind = k
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(bytes.ToValidUTF8(t.buf, nil)))
}

func (t *tailBuffer) Kind() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.kind
}

const stderrTail = 2048

// fileURL names a local file so that ffmpeg can never read it as an option
// ("-x.mp4"), another protocol ("http:…", "concat:…") or an image pattern.
func fileURL(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return "file:" + path
}

// command builds a process on the worker's own inputs (Detect's test
// clips), bound to ctx; user input goes through run, with its limits.
func command(ctx context.Context, bin string, args []string, stderr io.Writer) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run executes bin on user input to completion under lim. consume, when
// not nil, reads the child's stdout as it comes (a byte cap is the
// consumer's job, see cappedReader); an error from it kills the child and
// is returned. Without consume, stdout is discarded.
func (t *Tools) run(ctx context.Context, op, path, bin string, args []string, lim childLimits, consume func(io.Reader) error) error {
	tail := newTail(stderrTail)
	var c *child
	var err error
	if consume == nil {
		c, _, err = startChild(ctx, bin, args, lim, io.Discard, tail, false)
	} else {
		var out io.ReadCloser
		c, out, err = startChild(ctx, bin, args, lim, nil, tail, true)
		if err == nil {
			if cerr := consume(out); cerr != nil {
				c.kill()
				_ = c.wait()
				if ctx.Err() != nil {
					return &Error{Op: op, Path: path, Err: context.Cause(ctx)}
				}
				if l := c.limitHit(tail.String()); l != nil {
					return &Error{Op: op, Path: path, Kind: ErrLimit, Err: l, Stderr: tail.String()}
				}
				return cerr
			}
			// Whatever the consumer left is not wanted, but the child must
			// not block on a full pipe.
			_, _ = io.Copy(io.Discard, out)
		}
	}
	if err != nil {
		return t.failure(ctx, op, path, bin, err, tail, nil)
	}
	if err := c.wait(); err != nil {
		return t.failure(ctx, op, path, bin, err, tail, c)
	}
	if tail.Kind() == ErrTruncated {
		// ffmpeg reports a cut-off input and still exits 0, with a result
		// made of whatever came before the cut.
		return &Error{Op: op, Path: path, Kind: ErrTruncated, Stderr: tail.String()}
	}
	return nil
}

// failure turns a failed process into an *Error.
func (t *Tools) failure(ctx context.Context, op, path, bin string, err error, tail *tailBuffer, c *child) error {
	if ctx.Err() != nil {
		return &Error{Op: op, Path: path, Err: context.Cause(ctx)}
	}
	if errors.Is(err, exec.ErrNotFound) {
		return &Error{Op: op, Path: path, Kind: ErrToolMissing, Err: err}
	}
	if c != nil {
		if l := c.limitHit(tail.String()); l != nil {
			return &Error{Op: op, Path: path, Kind: ErrLimit, Err: l, Stderr: tail.String()}
		}
	}
	if l := pixelLimitHit(tail.String(), t.limits()); l != nil {
		return &Error{Op: op, Path: path, Kind: ErrLimit, Err: l, Stderr: tail.String()}
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		// The process never ran (permissions, a missing binary given by
		// absolute path, a failed prlimit): that is the installation, not
		// the input.
		return &Error{Op: op, Path: path, Kind: ErrToolMissing, Err: err}
	}
	return &Error{Op: op, Path: path, Kind: tail.Kind(), Stderr: tail.String(), Err: err}
}

var pictureSize = regexp.MustCompile(`Picture size (\d+x\d+) exceeds specified max pixel count`)

// pixelLimitHit recognises a decoder refusing a frame over -max_pixels.
func pixelLimitHit(stderr string, l Limits) *LimitError {
	m := pictureSize.FindStringSubmatch(stderr)
	if m == nil {
		return nil
	}
	return &LimitError{Limit: "resolution", Got: m[1], Max: fmt.Sprintf("%d pixels", l.MaxPixels), Flag: "media-max-pixels"}
}

// cappedReader fails a read past max bytes with the limit named, so a
// consumer of ffprobe's output stops at the cap instead of buffering a
// tag bomb.
type cappedReader struct {
	r    io.Reader
	left int64
	err  error
}

func newCapped(r io.Reader, max int64, err error) *cappedReader {
	return &cappedReader{r: r, left: max, err: err}
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, c.err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
