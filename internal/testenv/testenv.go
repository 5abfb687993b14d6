// Package testenv starts the real peers that integration tests run against:
// a private redis-server on a free loopback port and Python Celery 5.2.6
// processes from Debian's /usr/bin/python3. Everything it starts is stopped
// by t.Cleanup. When a peer is missing the test is skipped with the reason
// and the command that installs it.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// PythonBin is Debian's interpreter, the one python3-celery installs into.
// The python3 first on PATH may be another interpreter without Celery.
const PythonBin = "/usr/bin/python3"

// RepoRoot returns the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testenv: cannot locate source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// PythonPath is the PYTHONPATH that exposes the test fixtures (the stand-in
// morag package and the wire-test apps) to Python.
func PythonPath(t testing.TB) string {
	return filepath.Join(RepoRoot(t), "test", "python")
}

// RequireCelery skips the test when Debian's Python Celery is not installed.
func RequireCelery(t testing.TB) {
	t.Helper()
	if err := exec.Command(PythonBin, "-c", "import celery, redis").Run(); err != nil {
		t.Skipf("SKIP: Python Celery not available at %s (%v); run scripts/setup or `make test` to install python3-celery and python3-redis", PythonBin, err)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Redis is a private redis-server process.
type Redis struct {
	t    testing.TB
	Port int
	dir  string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedis starts redis-server on a free loopback port with persistence
// off, and stops it when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("SKIP: redis-server not installed (%v); run scripts/setup or `make test`", err)
	}
	r := &Redis{t: t, Port: FreePort(t), dir: t.TempDir()}
	r.start()
	t.Cleanup(r.Stop)
	return r
}

func (r *Redis) start() {
	r.t.Helper()
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir,
		"--protected-mode", "yes", "--loglevel", "warning")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("testenv: start redis-server: %v", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := redis.Dial("tcp", r.Addr(), redis.DialConnectTimeout(200*time.Millisecond))
		if err == nil {
			_, err = c.Do("PING")
			c.Close()
			if err == nil {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("testenv: redis-server on port %d did not answer PING: %s", r.Port, out.String())
}

// Addr is host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// URL is the redis:// URL for database db.
func (r *Redis) URL(db ...int) string {
	n := 0
	if len(db) > 0 {
		n = db[0]
	}
	return fmt.Sprintf("redis://127.0.0.1:%d/%d", r.Port, n)
}

// Conn dials a fresh connection for test assertions; the caller closes it.
func (r *Redis) Conn() redis.Conn {
	r.t.Helper()
	c, err := redis.Dial("tcp", r.Addr())
	if err != nil {
		r.t.Fatalf("testenv: dial redis: %v", err)
	}
	return c
}

// Do runs one command on a fresh connection and fails the test on error.
func (r *Redis) Do(cmd string, args ...any) any {
	r.t.Helper()
	c := r.Conn()
	defer c.Close()
	v, err := c.Do(cmd, args...)
	if err != nil {
		r.t.Fatalf("testenv: redis %s: %v", cmd, err)
	}
	return v
}

// Stop kills the server (SIGKILL: the tests use it to simulate a crash too).
func (r *Redis) Stop() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
}

// Restart stops the server and starts a new, empty one on the same port.
func (r *Redis) Restart() {
	r.Stop()
	r.start()
}

// Process is a child process whose output is kept for the test log.
type Process struct {
	t    testing.TB
	Name string
	cmd  *exec.Cmd

	mu    sync.Mutex
	out   bytes.Buffer // the first outputHead bytes, then the latest
	total int64        // bytes printed in all
	// drained is closed once the output pipe is read to its end (the
	// process and any child holding the pipe have exited).
	drained chan struct{}
	done    chan struct{}
	err     error
}

// A process's kept output is bounded: a server logging a line per request
// under a benchmark prints tens of MiB. The start (where readiness and
// configuration lines are) and the latest output are kept.
const (
	outputHead  = 1 << 20
	outputTail  = 2 << 20
	outputLimit = 4 << 20
)

// keep appends b to the kept output, dropping the middle once it
// outgrows outputLimit; the caller holds mu.
func (p *Process) keep(b []byte) {
	p.total += int64(len(b))
	p.out.Write(b)
	if p.out.Len() <= outputLimit {
		return
	}
	all := p.out.Bytes()
	var kept bytes.Buffer
	kept.Grow(outputHead + outputTail + 64)
	kept.Write(all[:outputHead])
	fmt.Fprintf(&kept, "\n[... %d bytes of output left out ...]\n", p.total-outputHead-outputTail)
	kept.Write(all[len(all)-outputTail:])
	p.out = kept
}

// Start runs name with args in dir (repo root when empty), with env added to
// the current environment. The process runs in its own process group and is
// killed when the test ends; its output is logged if the test failed.
func Start(t testing.TB, dir string, env []string, name string, args ...string) *Process {
	t.Helper()
	if dir == "" {
		dir = RepoRoot(t)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Process{t: t, Name: filepath.Base(name) + " " + strings.Join(args, " "), cmd: cmd, done: make(chan struct{}), drained: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatalf("testenv: pipe: %v", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", p.Name, err)
	}
	pw.Close()
	go func() {
		defer close(p.drained)
		// Read in chunks, not lines: cheaper under a flood of log lines,
		// and a line of any length cannot stop the draining (a child
		// whose pipe is not drained blocks).
		buf := make([]byte, 64<<10)
		for {
			n, err := pr.Read(buf)
			if n > 0 {
				p.mu.Lock()
				p.keep(buf[:n])
				p.mu.Unlock()
			}
			if err != nil {
				break
			}
		}
		pr.Close()
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() || os.Getenv("TESTENV_VERBOSE") != "" {
			t.Logf("--- output of %s ---\n%s", p.Name, p.Output())
		}
	})
	return p
}

// Output returns everything the process printed so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitOutput waits until the output contains substr.
func (p *Process) WaitOutput(substr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output(), substr) {
			return true
		}
		select {
		case <-p.done:
			return strings.Contains(p.Output(), substr)
		case <-time.After(25 * time.Millisecond):
		}
	}
	return false
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) { _ = syscall.Kill(-p.cmd.Process.Pid, sig) }

// Kill sends SIGKILL to the process group and waits for the process.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits up to timeout for the process to exit and returns its exit code
// (-1 when it was killed by a signal or did not exit in time).
func (p *Process) Wait(timeout time.Duration) (int, bool) {
	select {
	case <-p.done:
		if p.err == nil {
			return 0, true
		}
		if ee, ok := p.err.(*exec.ExitError); ok {
			return ee.ExitCode(), true
		}
		return -1, true
	case <-time.After(timeout):
		return -1, false
	}
}

// Done is closed when the process exits.
func (p *Process) Done() <-chan struct{} { return p.done }

// PythonEnv is the environment for a Python peer talking to redisURL.
func PythonEnv(t testing.TB, redisURL string, extra ...string) []string {
	return append([]string{
		"PYTHONPATH=" + PythonPath(t),
		"PYTHONUNBUFFERED=1",
		"PYTHONDONTWRITEBYTECODE=1",
		"REDIS_URL=" + redisURL,
	}, extra...)
}

// StartCeleryWorker runs `celery -A app worker` under Debian's Python with the
// fixtures on PYTHONPATH and waits until it reports ready.
func StartCeleryWorker(t testing.TB, redisURL, app string, args ...string) *Process {
	t.Helper()
	RequireCelery(t)
	full := append([]string{"-m", "celery", "-A", app, "worker", "--loglevel=INFO", "--without-mingle", "--without-gossip"}, args...)
	p := Start(t, "", PythonEnv(t, redisURL), PythonBin, full...)
	if !p.WaitOutput("ready.", 60*time.Second) {
		t.Fatalf("testenv: celery worker %s did not become ready:\n%s", app, p.Output())
	}
	return p
}

// RunPython runs a Python script under Debian's Python with the fixtures on
// PYTHONPATH and returns its stdout. A non-zero exit fails the test with the
// script's stderr.
func RunPython(t testing.TB, ctx context.Context, redisURL, script string, args ...string) string {
	t.Helper()
	RequireCelery(t)
	cmd := exec.CommandContext(ctx, PythonBin, append([]string{"-c", script}, args...)...)
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), PythonEnv(t, redisURL)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("testenv: python failed: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	return stdout.String()
}
