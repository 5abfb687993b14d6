package redisnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"golang.org/x/sys/unix"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// netLab is two network namespaces of this test's own, joined by a veth
// pair with addresses of their own: Redis lives in one ("r"), the worker
// under test in the other ("w"). Nothing here routes anywhere else.
type netLab struct {
	t            *testing.T
	nsR, nsW     string
	vethR, vethW string
	addrR, addrW string
	workerBin    string
	redisPort    int // inside nsR, on its loopback
	proxy        *proxy
}

// newNetLab creates the namespaces and the link, or skips the test saying
// why it cannot.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: network namespaces need root (CAP_NET_ADMIN); run the tests as root to include the real-network tests")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("SKIP: the ip command (iproute2) is missing: %v", err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	l := &netLab{t: t, nsR: "msr-" + id, nsW: "msw-" + id, vethR: "vr" + id, vethW: "vw" + id}
	// A /30 in 10.200.0.0/16 chosen at random: both ends live in this
	// test's namespaces, so it cannot clash with any route outside them.
	o := 4 * (int(b[0]) % 64)
	l.addrR, l.addrW = fmt.Sprintf("10.200.%d.%d", b[1], o+1), fmt.Sprintf("10.200.%d.%d", b[1], o+2)
	if out, err := exec.Command("ip", "netns", "add", l.nsR).CombinedOutput(); err != nil {
		t.Skipf("SKIP: cannot create a network namespace (%v: %s); the real-network tests need CAP_NET_ADMIN and a kernel with netns", err, out)
	}
	t.Cleanup(l.destroy)
	l.ip("netns", "add", l.nsW)
	l.ip("link", "add", l.vethR, "type", "veth", "peer", "name", l.vethW)
	l.ip("link", "set", l.vethR, "netns", l.nsR)
	l.ip("link", "set", l.vethW, "netns", l.nsW)
	for _, ns := range []struct{ name, dev, addr string }{{l.nsR, l.vethR, l.addrR}, {l.nsW, l.vethW, l.addrW}} {
		l.ip("-n", ns.name, "link", "set", "lo", "up")
		l.ip("-n", ns.name, "addr", "add", ns.addr+"/30", "dev", ns.dev)
		l.ip("-n", ns.name, "link", "set", ns.dev, "up")
	}
	return l
}

func (l *netLab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// destroy removes both namespaces (the veth pair goes with them); the
// processes started in them are killed by their own cleanups first.
func (l *netLab) destroy() {
	for _, ns := range []string{l.nsW, l.nsR} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

// linkDown and linkUp partition the worker's namespace from Redis's.
func (l *netLab) linkDown() { l.ip("-n", l.nsW, "link", "set", l.vethW, "down") }
func (l *netLab) linkUp()   { l.ip("-n", l.nsW, "link", "set", l.vethW, "up") }

// inNetns runs fn on an OS thread moved into namespace ns. Sockets keep
// the namespace they were created in, so a listener or connection made
// by fn works from any goroutine afterwards. If the thread cannot be
// moved back, it is left locked and dies with its goroutine.
func inNetns[T any](ns string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() { // owner: inNetns, which waits for it
		var zero T
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			ch <- result{zero, err}
			runtime.UnlockOSThread()
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			ch <- result{zero, err}
			runtime.UnlockOSThread()
			return
		}
		defer target.Close()
		if err := setns(target); err != nil {
			ch <- result{zero, fmt.Errorf("setns %s: %w", ns, err)}
			runtime.UnlockOSThread()
			return
		}
		v, ferr := fn()
		ch <- result{v, ferr}
		if setns(self) == nil {
			runtime.UnlockOSThread()
		}
	}()
	r := <-ch
	return r.v, r.err
}

func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }

// dialRedis connects to Redis inside nsR from this process.
func (l *netLab) dialRedis(ctx context.Context) (net.Conn, error) {
	return inNetns(l.nsR, func() (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", l.redisPort))
	})
}

func (l *netLab) redisPool() *redis.Pool {
	p := &redis.Pool{MaxIdle: 4, Dial: func() (redis.Conn, error) {
		c, err := l.dialRedis(context.Background())
		if err != nil {
			return nil, err
		}
		return redis.NewConn(c, 30*time.Second, 30*time.Second), nil
	}}
	l.t.Cleanup(func() { p.Close() })
	return p
}

// start runs a command inside ns.
func (l *netLab) start(ns string, name string, args ...string) *testenv.Process {
	return testenv.Start(l.t, "", nil, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

func (l *netLab) startWorker(ns, redisURL, hostname string, args ...string) *testenv.Process {
	l.t.Helper()
	p := l.start(ns, l.workerBin, append([]string{"-redis", redisURL, "-diagnostics", "-loglevel", "info", "-hostname", hostname}, args...)...)
	if !p.WaitOutput(`"ready."`, 60*time.Second) {
		l.t.Fatalf("worker %s did not become ready:\n%s", hostname, p.Output())
	}
	return p
}

// ranOnceKeepingLease checks a task partitioned from its worker for less
// than the visibility timeout: it started once on worker a, published one
// SUCCESS, and a logged no lease loss since it had logged lostBefore.
func ranOnceKeepingLease(t *testing.T, a *testenv.Process, id string, states *stateLog, lostBefore int) {
	t.Helper()
	if n := a.LogsByTask("task started")[id]; n != 1 {
		t.Errorf("task started %d times, want 1", n)
	}
	if n := states.count(id, "SUCCESS"); n != 1 {
		t.Errorf("SUCCESS published %d times, want 1 (states %v)", n, states.of(id))
	}
	if strings.Count(a.Output(), "lease lost") != lostBefore {
		t.Errorf("the worker gave up the lease after a partition shorter than the visibility timeout")
	}
}

// newWorkerNetLab is newNetLab with the worker binary built, for the
// tests that run it in a namespace of its own (they take about a minute
// each, so -short skips them).
func newWorkerNetLab(t *testing.T) *netLab {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP: -short: the real-network test takes about a minute")
	}
	l := newNetLab(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("SKIP: redis-server not installed (%v); run scripts/setup or `make test`", err)
	}
	l.workerBin = filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", l.workerBin, "morag-gpu/worker").CombinedOutput(); err != nil {
		t.Fatalf("build the worker: %v\n%s", err, out)
	}
	return l
}

// TestRealNetwork runs the Go worker in its own network namespace, with
// Redis in another behind an 80 ms RTT, 1 % loss link: tasks complete;
// a partition longer than the visibility timeout mid-task leaves each
// task with exactly one finished run and one result; a shorter one runs
// nothing twice.
func TestRealNetwork(t *testing.T) {
	l := newWorkerNetLab(t)
	l.redisPort = 6379 // nsR is this test's own: nothing else listens there
	rp := l.start(l.nsR, "redis-server", "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--loglevel", "notice")
	if !rp.WaitOutput("Ready to accept connections", 10*time.Second) {
		t.Fatalf("redis-server in %s did not start:\n%s", l.nsR, rp.Output())
	}
	// The impairing proxy listens on nsR's veth address: the worker's
	// traffic crosses the veth link, then the proxy.
	ln, err := inNetns(l.nsR, func() (net.Listener, error) { return net.Listen("tcp", l.addrR+":0") })
	if err != nil {
		t.Fatal(err)
	}
	l.proxy = startProxy(t, ln, l.dialRedis, 40*time.Millisecond, 0.01)
	proxyURL := fmt.Sprintf("redis://%s/0", l.proxy.Addr())

	const vt = 3 * time.Second
	a := l.startWorker(l.nsW, proxyURL, "netns-a@%h", "-queues", "net,net2", "-concurrency", "4", "-visibility-timeout", vt.String())
	pool := l.redisPool()
	c := protocol.NewClient(protocol.NewBroker(pool, protocol.BrokerOptions{VisibilityTimeout: vt}), protocol.NewBackend(pool, protocol.BackendOptions{}))
	states := recordStates(t, func() (redis.Conn, error) { return pool.Dial() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("80ms RTT and 1% loss", func(t *testing.T) {
		// What the worker's namespace sees: PING round trips through the
		// veth link and the proxy.
		conn, err := inNetns(l.nsW, func() (net.Conn, error) { return net.DialTimeout("tcp", l.proxy.Addr(), 5*time.Second) })
		if err != nil {
			t.Fatal(err)
		}
		rc := redis.NewConn(conn, 10*time.Second, 10*time.Second)
		var best time.Duration
		for i := range 5 {
			t0 := time.Now()
			if _, err := rc.Do("PING"); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(t0); i == 0 || d < best {
				best = d
			}
		}
		rc.Close()
		if best < 80*time.Millisecond {
			t.Fatalf("fastest PING from the worker's namespace took %s; the link should add 80 ms", best)
		}
		t.Logf("PING from the worker's namespace: fastest of 5 %s", best.Round(time.Millisecond))
		const n = 40
		start := time.Now()
		rs := make([]*protocol.AsyncResult, n)
		for i := range rs {
			r, err := c.Send(ctx, "diag.echo", []any{i}, nil, protocol.SendOptions{Queue: "net"})
			if err != nil {
				t.Fatal(err)
			}
			rs[i] = r
		}
		for i, r := range rs {
			raw, err := r.Get(ctx)
			if err != nil {
				t.Fatalf("task %d: %v", i, err)
			}
			var echo struct{ Args []int }
			if json.Unmarshal(raw, &echo) != nil || len(echo.Args) != 1 || echo.Args[0] != i {
				t.Fatalf("task %d returned %s", i, raw)
			}
		}
		t.Logf("%d tasks through 80 ms RTT / 1%% loss in %s (%d chunks delayed by a retransmission so far)", n, time.Since(start).Round(time.Millisecond), l.proxy.Lost())
	})

	t.Run("partition longer than the visibility timeout", func(t *testing.T) {
		var ids []string
		for range 2 {
			r, err := c.Send(ctx, "diag.sleep", []any{3}, nil, protocol.SendOptions{Queue: "net"})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, r.ID)
		}
		waitFor(t, 20*time.Second, "worker A to start both tasks", func() bool {
			s := a.LogsByTask("task started")
			return s[ids[0]] == 1 && s[ids[1]] == 1
		})
		l.linkDown()
		// Worker B, next to Redis, restores the messages once their lease
		// is older than the visibility timeout, and runs them.
		b := l.startWorker(l.nsR, fmt.Sprintf("redis://127.0.0.1:%d/0", l.redisPort), "netns-b@%h", "-queues", "net", "-visibility-timeout", vt.String())
		if !a.WaitOutput("lease lost while the task ran", 4*vt) {
			t.Fatalf("worker A did not give up its lease within %s of the partition", 4*vt)
		}
		time.Sleep(vt)
		l.linkUp()
		for _, id := range ids {
			if _, err := c.Result(id).Get(ctx); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 20*time.Second, "unacked to empty", func() bool {
			conn := pool.Get()
			defer conn.Close()
			n, err := redis.Int(conn.Do("HLEN", "unacked"))
			return err == nil && n == 0
		})
		time.Sleep(2 * time.Second) // anything worker A still meant to write would land now
		doneA, doneB := a.LogsByTask("task succeeded"), b.LogsByTask("task succeeded")
		finishedOnce(t, ids, doneA, doneB, states)
		b.Signal(syscall.SIGTERM)
		b.Wait(30 * time.Second)
	})

	t.Run("partition shorter than the visibility timeout", func(t *testing.T) {
		lostBefore := strings.Count(a.Output(), "lease lost")
		r, err := c.Send(ctx, "diag.sleep", []any{3}, nil, protocol.SendOptions{Queue: "net2"})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "worker A to start the task", func() bool { return a.LogsByTask("task started")[r.ID] == 1 })
		l.linkDown()
		time.Sleep(vt / 2)
		l.linkUp()
		if _, err := r.Get(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the recorder to see SUCCESS", func() bool { return states.count(r.ID, "SUCCESS") > 0 })
		ranOnceKeepingLease(t, a, r.ID, states, lostBefore)
	})
}
