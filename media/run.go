package media

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
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

// command builds an ffmpeg/ffprobe process bound to ctx: cancelling ctx
// kills it, and Wait gives up on its pipes a moment later so a wedged child
// cannot hang the worker.
func command(ctx context.Context, bin string, args []string, stderr io.Writer) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run executes bin to completion and returns its stdout.
func (t *Tools) run(ctx context.Context, op, path, bin string, args []string) ([]byte, error) {
	tail := newTail(stderrTail)
	var out bytes.Buffer
	cmd := command(ctx, bin, args, tail)
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), t.failure(ctx, op, path, bin, err, tail)
	}
	if tail.Kind() == ErrTruncated {
		// ffmpeg reports a cut-off input and still exits 0, with a result
		// made of whatever came before the cut.
		return out.Bytes(), &Error{Op: op, Path: path, Kind: ErrTruncated, Stderr: tail.String()}
	}
	return out.Bytes(), nil
}

// failure turns a failed process into an *Error.
func (t *Tools) failure(ctx context.Context, op, path, bin string, err error, tail *tailBuffer) error {
	if ctx.Err() != nil {
		return &Error{Op: op, Path: path, Err: ctx.Err()}
	}
	if errors.Is(err, exec.ErrNotFound) {
		return &Error{Op: op, Path: path, Kind: ErrToolMissing, Err: err}
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		// The process never ran (permissions, a missing binary given by
		// absolute path): that is the installation, not the input.
		return &Error{Op: op, Path: path, Kind: ErrToolMissing, Err: err}
	}
	return &Error{Op: op, Path: path, Kind: tail.Kind(), Stderr: tail.String(), Err: err}
}
