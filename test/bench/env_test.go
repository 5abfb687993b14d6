package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// env is what every row shares: one redis-server, the binaries built once,
// the repository root.
type env struct {
	cfg   config
	redis *testenv.Redis
	root  string
	bins  string
	gocmd string
	tab   *table

	builds map[string]error // package -> build error (nil: built into bins)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// do runs one Redis command on a fresh connection.
func (e *env) do(cmd string, args ...any) (any, error) {
	c, err := redis.Dial("tcp", e.redis.Addr(), redis.DialConnectTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// flush empties the database between rows, so that no row sees another's
// queues or results.
func (e *env) flush() error {
	_, err := e.do("FLUSHALL")
	return err
}

func (e *env) llen(key string) (int64, error) {
	return redis.Int64(e.do("LLEN", key))
}

// goTool finds the go command that runs this benchmark.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

// build compiles ./<pkg> into bins once and remembers a failure, which the
// rows that need the binary print as their reason.
func (e *env) build(ctx context.Context, pkg string) (string, error) {
	out := filepath.Join(e.bins, pkg)
	if err, done := e.builds[pkg]; done {
		return out, err
	}
	progress("building ./%s", pkg)
	cmd := exec.CommandContext(ctx, e.gocmd, "build", "-o", out, "./"+pkg)
	cmd.Dir = e.root
	msg, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("./%s does not build: %s", pkg, firstLines(string(msg), 2))
	} else if _, serr := os.Stat(out); serr != nil {
		err = fmt.Errorf("./%s built no binary (is it package main yet?)", pkg)
	}
	e.builds[pkg] = err
	return out, err
}

func firstLines(s string, n int) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
			continue
		}
		keep = append(keep, strings.TrimSpace(l))
		if len(keep) == n {
			break
		}
	}
	if len(keep) == 0 {
		return "(no output)"
	}
	return strings.Join(keep, "; ")
}

// goSide is the Go protocol stack the harness publishes with.
type goSide struct {
	pool    *redis.Pool
	broker  *protocol.Broker
	backend *protocol.Backend
	client  *protocol.Client
}

func (e *env) goProtocol() (*goSide, error) { return newGoSide(e.redis.URL()) }

func newGoSide(redisURL string) (*goSide, error) {
	g := &goSide{}
	err := protect(func() error {
		pool, err := protocol.NewPool(redisURL)
		if err != nil {
			return err
		}
		g.pool = pool
		g.broker = protocol.NewBroker(pool, protocol.BrokerOptions{})
		g.backend = protocol.NewBackend(pool, protocol.BackendOptions{})
		g.client = protocol.NewClient(g.broker, g.backend)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("Go client: %w", err)
	}
	return g, nil
}

func (g *goSide) close() {
	if g != nil && g.pool != nil {
		g.pool.Close()
	}
}

// pythonMissing says why Debian's Python cannot import modules, or "".
func pythonMissing(modules ...string) string {
	args := []string{"-c", "import " + strings.Join(modules, ", ")}
	if out, err := exec.Command(testenv.PythonBin, args...).CombinedOutput(); err != nil {
		return fmt.Sprintf("%s cannot import %s: %s", testenv.PythonBin, strings.Join(modules, ", "), firstLines(string(out), 1))
	}
	return ""
}

// runPython runs a script from test/python and returns its stdout.
func (e *env) runPython(ctx context.Context, tb testing.TB, script string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, testenv.PythonBin, append([]string{filepath.Join(e.root, "test", "python", script)}, args...)...)
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), testenv.PythonEnv(tb, e.redis.URL())...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s failed (%v): %s", script, err, lastLines(stderr.String(), 2))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "; ")
}

// startCelery starts a prefork Python worker on queue at Celery's default
// log level (WARNING: per-task INFO lines would slow it down and are not
// what an operator measures). Readiness is proven by the caller with a
// round-trip task, since WARNING hides the "ready." line.
func (e *env) startCelery(tb testing.TB, app, queue, node string) (*testenv.Process, error) {
	if why := pythonMissing("celery", "redis"); why != "" {
		return nil, errors.New(why)
	}
	return testenv.Start(tb, "", testenv.PythonEnv(tb, e.redis.URL()), testenv.PythonBin,
		"-m", "celery", "-A", app, "worker", "-P", "prefork", "-c", "2", "-Q", queue, "-n", node,
		"--without-mingle", "--without-gossip", "--loglevel=WARNING"), nil
}

// waitReady sends probe tasks until one comes back, proving that a freshly
// started worker consumes queue and stores results.
func waitReady(ctx context.Context, g *goSide, rr *resultReader, p *testenv.Process, task, queue string, args []any) error {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		id := newTaskID()
		ch := rr.expect(id)
		if err := protect(func() error {
			_, err := g.client.Send(ctx, task, args, nil, protocol.SendOptions{TaskID: id, Queue: queue})
			return err
		}); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		o, err := waitOne(wctx, ch)
		cancel()
		if err == nil {
			if o.status != "SUCCESS" {
				return fmt.Errorf("probe task %s ended %s: %s", task, o.status, oneLine(string(o.raw), 200))
			}
			return nil
		}
		rr.forget(id)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited before it took a task: %s", p.Name, lastLines(p.Output(), 3))
		default:
		}
	}
	return fmt.Errorf("%s took no %s task on %s within 90s: %s", p.Name, task, queue, lastLines(p.Output(), 3))
}

// waitListening polls until addr accepts TCP connections or p exits.
func waitListening(ctx context.Context, p *testenv.Process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited: %s", p.Name, lastLines(p.Output(), 3))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s does not listen on %s after %s: %s", p.Name, addr, timeout, lastLines(p.Output(), 3))
}
