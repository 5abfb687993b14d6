package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errWallLimit is the cause a child's context is cancelled with when its
// wall-clock limit passes.
type errWallLimit struct{ limit time.Duration }

func (e errWallLimit) Error() string { return fmt.Sprintf("wall-clock limit of %v passed", e.limit) }

// child is one bounded ffmpeg/ffprobe process:
//
//   - its own process group, killed whole (SIGKILL) when ctx ends or the
//     wall-clock limit passes;
//   - Pdeathsig SIGKILL, so it dies with the worker even when the worker
//     is SIGKILLed and has no chance to clean up. (Pdeathsig follows the
//     OS thread that forked; the Go runtime does not retire threads unless
//     a goroutine exits while locked to one, which nothing here does.)
//   - RLIMIT_AS, RLIMIT_CPU and RLIMIT_FSIZE set with prlimit(2) right
//     after exec. Go's SysProcAttr has no rlimit field; the window between
//     exec and prlimit is microseconds, while ffmpeg spends milliseconds
//     loading its libraries before it reads a byte of input.
type child struct {
	cmd    *exec.Cmd
	lim    childLimits
	cancel context.CancelCauseFunc
	ctx    context.Context
}

// startChild starts bin under lim. stdout may be nil (discarded) or an
// io.Writer; use stdoutPipe for streaming.
func startChild(ctx context.Context, bin string, args []string, lim childLimits, stdout io.Writer, stderr io.Writer, pipe bool) (*child, io.ReadCloser, error) {
	cctx, cancel := context.WithCancelCause(ctx)
	if lim.Wall > 0 {
		// A timer rather than WithTimeoutCause, so the cause is the limit
		// and not a bare DeadlineExceeded.
		t := time.AfterFunc(lim.Wall, func() { cancel(errWallLimit{lim.Wall}) })
		context.AfterFunc(cctx, func() { t.Stop() })
	}
	cmd := exec.CommandContext(cctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// The whole group: ffmpeg itself forks nothing today, but a
		// wrapper or a future filter might.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	// glibc reserves 64 MiB of address space per malloc arena, up to 8 per
	// core: under RLIMIT_AS that is the limit spent on nothing.
	cmd.Env = append(os.Environ(), "MALLOC_ARENA_MAX=2")
	cmd.Stderr = stderr
	var out io.ReadCloser
	if pipe {
		r, err := cmd.StdoutPipe()
		if err != nil {
			cancel(nil)
			return nil, nil, err
		}
		out = r
	} else {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		cancel(nil)
		return nil, nil, err
	}
	c := &child{cmd: cmd, lim: lim, cancel: cancel, ctx: cctx}
	if err := c.setRlimits(); err != nil {
		// Never let a child run unbounded.
		cancel(nil)
		_ = cmd.Wait()
		return nil, nil, fmt.Errorf("cannot limit %s (pid %d): %w", bin, cmd.Process.Pid, err)
	}
	return c, out, nil
}

func (c *child) setRlimits() error {
	pid := c.cmd.Process.Pid
	set := func(res int, cur, max uint64) error {
		return unix.Prlimit(pid, res, &unix.Rlimit{Cur: cur, Max: max}, nil)
	}
	if c.lim.Memory > 0 {
		if err := set(unix.RLIMIT_AS, uint64(c.lim.Memory), uint64(c.lim.Memory)); err != nil {
			return fmt.Errorf("RLIMIT_AS: %w", err)
		}
	}
	if c.lim.CPU > 0 {
		// SIGXCPU at the soft limit (ffmpeg stops cleanly on it), SIGKILL a
		// second later.
		s := uint64(max(1, c.lim.CPU/time.Second))
		if err := set(unix.RLIMIT_CPU, s, s+1); err != nil {
			return fmt.Errorf("RLIMIT_CPU: %w", err)
		}
	}
	fs := uint64(max(0, c.lim.FileSize))
	if err := set(unix.RLIMIT_FSIZE, fs, fs); err != nil {
		return fmt.Errorf("RLIMIT_FSIZE: %w", err)
	}
	return nil
}

// wait waits for the child and releases its context.
func (c *child) wait() error {
	err := c.cmd.Wait()
	c.cancel(nil)
	return err
}

// kill ends the child (and its group) now.
func (c *child) kill() { c.cancel(errors.New("stopped by the worker")) }

// limitHit reports which of its limits the child ran into, or nil: the
// wall clock (its context's cause), CPU time (rusage against RLIMIT_CPU),
// the output size (SIGXFSZ or EFBIG) or memory (ENOMEM, or a crash, which
// under RLIMIT_AS is how a failed allocation usually ends).
func (c *child) limitHit(stderr string) *LimitError {
	var wl errWallLimit
	if errors.As(context.Cause(c.ctx), &wl) {
		return &LimitError{Limit: "time", Max: wl.limit.String(), Flag: "media-time-factor"}
	}
	st := c.cmd.ProcessState
	if st == nil {
		return nil
	}
	if c.lim.CPU > 0 && st.UserTime()+st.SystemTime() >= c.lim.CPU-time.Second {
		return &LimitError{Limit: "CPU time", Max: c.lim.CPU.String(), Flag: "media-time-factor"}
	}
	ws, _ := st.Sys().(syscall.WaitStatus)
	low := strings.ToLower(stderr)
	contains := strings.Contains
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGXFSZ, contains(low, "file too large"):
		return &LimitError{Limit: "output size", Max: byteCount(c.lim.FileSize), Flag: "proxy-max-ratio"}
	case contains(low, "cannot allocate memory"), contains(low, "out of memory"), contains(low, "malloc of size"),
		contains(low, "failed to map segment"),
		ws.Signaled() && (ws.Signal() == syscall.SIGSEGV || ws.Signal() == syscall.SIGABRT || ws.Signal() == syscall.SIGBUS),
		// A decoder whose allocation failed often reports only its
		// symptom ("decode_slice_header error"); a failed run that had
		// come within a quarter of the address-space limit in resident
		// memory alone ran into it.
		!st.Success() && c.lim.Memory > 0 && maxRSS(st) > c.lim.Memory*3/4:
		return &LimitError{Limit: "memory", Max: byteCount(c.lim.Memory), Flag: "media-memory"}
	}
	return nil
}

// maxRSS is the child's peak resident memory in bytes.
func maxRSS(st *os.ProcessState) int64 {
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10 // kilobytes on Linux
	}
	return 0
}

func byteCount(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
