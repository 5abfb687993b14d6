package remote_test

// Gateway-mediated workers against a real redis-server, the real gateway
// handlers (httpapi, in process) and the real worker binary (go build), with
// Python Celery 5.2.6 publishing and reading results.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/auth"
	"morag-gpu/contract"
	"morag-gpu/gateway/httpapi"
	"morag-gpu/internal/testenv"
	"morag-gpu/internal/testgateway"
	"morag-gpu/protocol"
	"morag-gpu/remote"
	"morag-gpu/worker/runner"
)

var workerBin string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "remote-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	workerBin = filepath.Join(dir, "worker")
	if out, err := exec.Command("go", "build", "-o", workerBin, "morag-gpu/worker").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the worker failed: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

type env struct {
	t    testing.TB
	r    *testenv.Redis
	url  string
	keys map[string]string // user id -> API key
}

// start runs Redis and an in-process gateway with the given visibility
// timeout and confirm window, and makes keys for alice and bob.
func start(t testing.TB, vt, confirm time.Duration) *env {
	t.Helper()
	r := testenv.StartRedis(t)
	srv, base := testgateway.Unstarted()
	testgateway.Start(t, srv, httpapi.Config{RedisURL: r.URL(), UploadDir: t.TempDir(), PublicURL: base, WaitTimeout: time.Minute,
		VisibilityTimeout: vt, WorkerConfirm: confirm, WorkerMaxWait: 5 * time.Second,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	pool, err := protocol.NewPool(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ks := auth.NewKeyService(pool)
	e := &env{t: t, r: r, url: base, keys: map[string]string{}}
	for _, u := range []string{"alice", "bob"} {
		k, _, err := ks.Create(context.Background(), u, "remote worker test", 1)
		if err != nil {
			t.Fatal(err)
		}
		e.keys[u] = k
	}
	return e
}

// worker starts the worker binary for user with only a gateway URL and a
// key.
func (e *env) worker(user, name string, args ...string) *testenv.Process {
	e.t.Helper()
	full := append([]string{"-server", e.url, "-queues", contract.GPUQueue(user), "-hostname", name + "@%h",
		"-diagnostics", "-loglevel", "info"}, args...)
	p := testenv.Start(e.t, "", []string{"MORAG_API_KEY=" + e.keys[user], "REDIS_URL="}, workerBin, full...)
	if !p.WaitOutput(`"ready."`, 30*time.Second) {
		e.t.Fatalf("remote worker did not become ready:\n%s", p.Output())
	}
	return p
}

// remoteClient is a remote.Client with user's key, after its hello; opts
// gives the rest (Server and APIKey are filled in).
func (e *env) remoteClient(user string, opts remote.ClientOptions) (*remote.Client, error) {
	opts.Server, opts.APIKey = e.url, e.keys[user]
	c, err := remote.NewClient(opts)
	if err != nil {
		return nil, err
	}
	if _, err := c.Hello(context.Background()); err != nil {
		return nil, err
	}
	return c, nil
}

// runInProcess runs a runner.Server with cfg and mux, over a remote.Client
// with user's key (opts: its Wait and HTTPClient), until the test ends.
func (e *env) runInProcess(user string, cfg runner.Config, mux *runner.Mux, opts remote.ClientOptions) {
	e.t.Helper()
	cfg.NewTransport = func(tc runner.TransportConfig) (runner.Transport, error) {
		o := opts
		o.Hostname, o.Queues, o.Logger = tc.Hostname, tc.Queues, tc.Logger
		c, err := e.remoteClient(user, o)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	srv, err := runner.NewServer(cfg, mux)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }() // owner: the test; stopped by its cleanup
	e.t.Cleanup(func() { cancel(); <-done })
}

// post calls the worker API as user's key would.
func (e *env) post(user, worker, path string, body any) (int, map[string]any) {
	e.t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, e.url+remote.PathPrefix+path, bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+e.keys[user])
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(remote.HeaderWorker, worker)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

func (e *env) python(script string, args ...string) []map[string]any {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	out := testenv.RunPython(e.t, ctx, e.r.URL(), script, args...)
	var lines []map[string]any
	for _, l := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}

// send publishes a diag task from Python Celery and returns its id.
func (e *env) send(queue, name string, args ...any) string {
	e.t.Helper()
	a, _ := json.Marshal(args)
	lines := e.python(`
import json, sys
from diagapp import app, emit
res = app.send_task(sys.argv[1], args=json.loads(sys.argv[2]), queue=sys.argv[3])
emit({"id": res.id})
`, name, string(a), queue)
	if len(lines) != 1 {
		e.t.Fatalf("python printed %v; want one task id", lines)
	}
	return lines[0]["id"].(string)
}

func (e *env) int(cmd string, args ...any) int {
	e.t.Helper()
	c := e.r.Conn()
	defer c.Close()
	n, err := redis.Int(c.Do(cmd, args...))
	if err != nil && err != redis.ErrNil {
		e.t.Fatalf("redis %s: %v", cmd, err)
	}
	return n
}

func (e *env) do(cmd string, args ...any) {
	e.t.Helper()
	c := e.r.Conn()
	defer c.Close()
	if _, err := c.Do(cmd, args...); err != nil {
		e.t.Fatalf("redis %s: %v", cmd, err)
	}
}

func (e *env) meta(id string) map[string]any {
	c := e.r.Conn()
	defer c.Close()
	data, err := redis.Bytes(c.Do("GET", "celery-task-meta-"+id))
	if err != nil {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	return m
}

func (e *env) waitState(id string, timeout time.Duration, states ...string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		if m := e.meta(id); m != nil {
			last = m
			for _, s := range states {
				if m["status"] == s {
					return m
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("task %s did not reach %v within %s; last meta %v", id, states, timeout, last)
	return nil
}

// TestRemoteWorkerCompletesTask: a worker with only a gateway URL and
// alice's key runs tasks Python publishes to gpu-tasks-alice; Python's
// AsyncResult reads the results (PROGRESS went through the gateway too),
// and the gateway publishes the worker's heartbeats.
func TestRemoteWorkerCompletesTask(t *testing.T) {
	t.Parallel()
	e := start(t, time.Hour, 0)
	c := e.r.Conn()
	psc := redis.PubSubConn{Conn: c}
	if err := psc.PSubscribe("/0.celeryev/worker.*"); err != nil {
		t.Fatal(err)
	}
	w := e.worker("alice", "remote-alice")
	q := contract.GPUQueue("alice")

	lines := e.python(`
import sys
from diagapp import app, emit
echo = app.send_task("diag.echo", args=[1, "two"], kwargs={"k": 3}, queue=sys.argv[1])
sleep = app.send_task("diag.sleep", args=[1.5], queue=sys.argv[1])
emit({"echo": echo.get(timeout=60), "sleep": sleep.get(timeout=60), "state": sleep.state})
`, q)
	if len(lines) != 1 {
		t.Fatalf("python printed %v", lines)
	}
	got := lines[0]
	echo, _ := got["echo"].(map[string]any)
	if fmt.Sprint(echo["args"]) != "[1 two]" || fmt.Sprint(echo["kwargs"]) != "map[k:3]" {
		t.Errorf("diag.echo result = %v", got["echo"])
	}
	if got["sleep"] != 1.5 || got["state"] != "SUCCESS" {
		t.Errorf("diag.sleep = %v (%v); want 1.5 SUCCESS", got["sleep"], got["state"])
	}
	if n := e.int("ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages left unacked", n)
	}

	// Heartbeats reach Celery's event channel as the worker's own.
	deadline := time.Now().Add(10 * time.Second)
	seen := false
	for !seen && time.Now().Before(deadline) {
		switch m := psc.ReceiveWithTimeout(5 * time.Second).(type) {
		case redis.Message:
			if strings.Contains(m.Channel, "worker.heartbeat") && bytes.Contains(m.Data, []byte(`"hostname": "remote-alice@`)) {
				seen = true
			}
		case error:
			t.Fatalf("events subscription: %v", m)
		}
	}
	if !seen {
		t.Errorf("no worker-heartbeat of remote-alice on /0.celeryev/worker.heartbeat")
	}

	// Remote control reaches it through the gateway: inspect ping and
	// active_queues from Python, and the gateway's own worker listing.
	host, _ := os.Hostname()
	node := "remote-alice@" + host
	lines = e.python(`
import sys
from diagapp import app, emit
i = app.control.inspect(timeout=3, destination=[sys.argv[1]])
emit({"ping": i.ping(), "queues": i.active_queues()})
`, node)
	if len(lines) != 1 {
		t.Fatalf("python printed %v", lines)
	}
	if fmt.Sprint(lines[0]["ping"]) != fmt.Sprintf("map[%s:map[ok:pong]]", node) {
		t.Errorf("inspect ping = %v; want pong from %s", lines[0]["ping"], node)
	}
	if !strings.Contains(fmt.Sprint(lines[0]["queues"]), "name:"+q) {
		t.Errorf("inspect active_queues = %v; want %s", lines[0]["queues"], q)
	}
	deadline = time.Now().Add(20 * time.Second)
	var listing string
	for time.Now().Before(deadline) {
		resp, err := http.Get(e.url + "/api/v1/status/workers")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		listing = string(b)
		if strings.Contains(listing, node) && strings.Contains(listing, `"queues":["`+q+`"]`) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(listing, node) || !strings.Contains(listing, `"queues":["`+q+`"]`) {
		t.Errorf("/api/v1/status/workers does not list %s consuming %s:\n%s", node, q, listing)
	}

	w.Signal(syscall.SIGTERM)
	if _, ok := w.Wait(30 * time.Second); !ok {
		t.Errorf("remote worker did not stop on SIGTERM:\n%s", w.Output())
	}
}

// TestForeignQueuesForbidden: alice's key cannot consume, forward to or
// publish to bob's queue or celery, nor settle a message bob's worker
// holds: 403 with a JSON error, and nothing popped.
func TestForeignQueuesForbidden(t *testing.T) {
	t.Parallel()
	e := start(t, time.Hour, 0)
	bobQ := contract.GPUQueue("bob")
	e.send(bobQ, "diag.echo", 1)
	e.send(contract.DefaultQueue, "diag.echo", 2)

	for _, q := range []string{bobQ, contract.DefaultQueue, contract.CPUQueue("bob")} {
		code, body := e.post("alice", "a@h", "/fetch", map[string]any{"queues": []string{q}, "max": 5, "wait_ms": 100})
		if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(body["detail"]), "gpu-tasks-alice") {
			t.Errorf("alice fetching %s: %d %v; want 403 naming her own queues", q, code, body)
		}
		code, body = e.post("alice", "a@h", "/hello", map[string]any{"hostname": "a@h", "queues": []string{q}})
		if code != http.StatusForbidden {
			t.Errorf("alice's hello for %s: %d %v; want 403", q, code, body)
		}
	}
	// Mixed with her own queue, still nothing.
	code, _ := e.post("alice", "a@h", "/fetch", map[string]any{"queues": []string{contract.GPUQueue("alice"), bobQ}, "max": 5})
	if code != http.StatusForbidden {
		t.Errorf("alice fetching her queue and bob's: %d; want 403", code)
	}
	if n := e.int("LLEN", bobQ); n != 1 {
		t.Errorf("bob's queue has %d messages; want 1 (nothing popped)", n)
	}
	if n := e.int("LLEN", contract.DefaultQueue); n != 1 {
		t.Errorf("celery has %d messages; want 1", n)
	}

	// Bob's worker holds his message; alice's key cannot touch it.
	if code, body := e.post("bob", "b@h", "/hello", map[string]any{"hostname": "b@h", "queues": []string{bobQ}}); code != 200 {
		t.Fatalf("bob's hello: %d %v", code, body)
	}
	code, body := e.post("bob", "b@h", "/fetch", map[string]any{"queues": []string{bobQ}, "max": 5, "wait_ms": 1000})
	ds, _ := body["deliveries"].([]any)
	if code != 200 || len(ds) != 1 {
		t.Fatalf("bob's fetch: %d %v", code, body)
	}
	tag := ds[0].(map[string]any)["tag"].(string)
	for _, c := range []struct {
		path string
		body any
	}{
		{"/ack", map[string]any{"tag": tag}},
		{"/restore", map[string]any{"tag": tag}},
		{"/lease", map[string]any{"tags": []string{tag}}},
		{"/dead-letter", map[string]any{"tag": tag, "reason": "x"}},
		{"/commit", map[string]any{"ops": []any{map[string]any{"kind": "f", "tag": tag}}}},
		{"/forward", map[string]any{"tag": tag, "queue": contract.GPUQueue("alice"), "envelope": []byte("{}")}},
	} {
		if code, body := e.post("alice", "a@h", c.path, c.body); code != http.StatusForbidden {
			t.Errorf("alice %s on bob's message: %d %v; want 403", c.path, code, body)
		}
	}
	if n := e.int("HEXISTS", "unacked", tag); n != 1 {
		t.Errorf("bob's message is no longer held after alice's attempts")
	}
	// Nor publish into bob's queue, nor speak as bob's worker.
	if code, _ := e.post("alice", "a@h", "/publish", map[string]any{"queue": bobQ, "envelope": []byte("{}")}); code != http.StatusForbidden {
		t.Errorf("alice publishing to bob's queue: %d; want 403", code)
	}
	if code, _ := e.post("alice", "b@h", "/hello", map[string]any{"hostname": "b@h", "queues": []string{contract.GPUQueue("alice")}}); code != http.StatusForbidden {
		t.Errorf("alice registering bob's worker name: %d; want 403", code)
	}
	// Nor send events as another node, or anything but worker/task events.
	if code, body := e.post("alice", "a@h", "/hello", map[string]any{"hostname": "a@h", "queues": []string{contract.GPUQueue("alice")}}); code != 200 {
		t.Fatalf("alice's hello: %d %v", code, body)
	}
	_, asBob, _ := protocol.NewEventDispatcher(nil, 0, "b@h", "").Encode("worker-heartbeat", nil)
	_, asAlice, _ := protocol.NewEventDispatcher(nil, 0, "a@h", "").Encode("worker-heartbeat", nil)
	for _, ev := range []map[string]any{
		{"rk": "worker.heartbeat", "envelope": asBob},
		{"rk": "control", "envelope": asAlice},
	} {
		if code, body := e.post("alice", "a@h", "/events", map[string]any{"events": []any{ev}}); code != http.StatusForbidden {
			t.Errorf("alice sending event %v: %d %v; want 403", ev["rk"], code, body)
		}
	}
	if code, body := e.post("alice", "a@h", "/events", map[string]any{"events": []any{map[string]any{"rk": "worker.heartbeat", "envelope": asAlice}}}); code != 200 {
		t.Errorf("alice's own heartbeat: %d %v", code, body)
	}
	// Without a key: 401.
	req, _ := http.NewRequest(http.MethodPost, e.url+remote.PathPrefix+"/fetch", strings.NewReader(`{"queues":["celery"]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("fetch without a key: %d; want 401", resp.StatusCode)
	}
}

// TestSIGKILLedRemoteWorkerTaskRunsOnceElsewhere: a remote worker killed
// mid-task leaves its message held; after the visibility timeout it is
// restored and another remote worker runs it: one result.
func TestSIGKILLedRemoteWorkerTaskRunsOnceElsewhere(t *testing.T) {
	t.Parallel()
	e := start(t, 3*time.Second, time.Second)
	args := []string{"-visibility-timeout", "3s"}
	first := e.worker("alice", "first", args...)
	id := e.send(contract.GPUQueue("alice"), "diag.sleep", 4)
	e.waitState(id, 30*time.Second, "STARTED", "PROGRESS")
	first.Signal(syscall.SIGKILL)
	first.Wait(10 * time.Second)

	second := e.worker("alice", "second", args...)
	m := e.waitState(id, 45*time.Second, "SUCCESS", "FAILURE")
	if m["status"] != "SUCCESS" || m["result"] != float64(4) {
		t.Errorf("result after the kill = %v; want SUCCESS 4", m)
	}
	if n := second.WaitLogLines("task succeeded", id, 1, 10*time.Second); n != 1 {
		t.Errorf("second worker completed the task %d times; want 1", n)
	}
	if n := first.LogLines("task succeeded", id); n != 0 {
		t.Errorf("killed worker completed it %d times", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.int("ZCARD", "unacked_index") != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := e.int("ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages left unacked", n)
	}
}

// TestCutLongPollLosesNothing: a fetch whose worker hangs up during the
// long poll restores what it popped at once; a fetch answer that never
// reaches its worker (it is not confirmed) is restored by the normal
// visibility-timeout restore within the confirm window.
func TestCutLongPollLosesNothing(t *testing.T) {
	t.Parallel()
	e := start(t, time.Hour, time.Second)
	q := contract.GPUQueue("alice")
	if code, body := e.post("alice", "a@h", "/hello", map[string]any{"hostname": "a@h", "queues": []string{q}}); code != 200 {
		t.Fatalf("hello: %d %v", code, body)
	}

	// 1. The worker leaves while the gateway waits; a message arrives
	// right after.
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		data, _ := json.Marshal(map[string]any{"queues": []string{q}, "max": 4, "wait_ms": 4000})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+remote.PathPrefix+"/fetch", bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+e.keys["alice"])
		req.Header.Set(remote.HeaderWorker, "a@h")
		go func() {
			time.Sleep(400 * time.Millisecond)
			e.send(q, "diag.echo", i)
		}()
		if resp, err := http.DefaultClient.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("the long poll answered before it was cut: %d %s", resp.StatusCode, b)
		}
		cancel()
		// The message is either still queued or restored at once.
		deadline := time.Now().Add(8 * time.Second)
		for e.int("LLEN", q) != 1 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := e.int("LLEN", q); n != 1 {
			t.Fatalf("round %d: queue holds %d messages, unacked %d; want 1 queued", i, n, e.int("ZCARD", "unacked_index"))
		}
		e.do("RPOPLPUSH", q, "stash") // out of the next round's way
	}
	for range 3 {
		e.do("RPOPLPUSH", "stash", q)
	}
	if n := e.int("ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages held for a worker that left", n)
	}

	// 2. The answer is written but never confirmed (lost on the way):
	// its lease is short, and any restorer brings the messages back.
	code, body := e.post("alice", "a@h", "/fetch", map[string]any{"queues": []string{q}, "max": 10, "wait_ms": 1000})
	ds, _ := body["deliveries"].([]any)
	if code != 200 || len(ds) != 3 {
		t.Fatalf("fetch: %d %v", code, body)
	}
	pool, _ := protocol.NewPool(e.r.URL())
	defer pool.Close()
	deadline := time.Now().Add(5 * time.Second)
	for e.int("LLEN", q) != 3 && time.Now().Before(deadline) {
		// Any restorer with the 1 h visibility timeout brings them back
		// (the gateway runs one too).
		if _, err := protocol.NewBroker(pool, protocol.BrokerOptions{}).RestoreExpired(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n, held := e.int("LLEN", q), e.int("ZCARD", "unacked_index"); n != 3 || held != 0 {
		t.Errorf("after the confirm window: %d queued, %d held; want the 3 unconfirmed messages back in the queue", n, held)
	}

	// 3. A confirmed fetch keeps the full visibility timeout.
	_, body = e.post("alice", "a@h", "/fetch", map[string]any{"queues": []string{q}, "max": 10, "wait_ms": 1000})
	ds, _ = body["deliveries"].([]any)
	var tags []string
	for _, d := range ds {
		tags = append(tags, d.(map[string]any)["tag"].(string))
	}
	if code, body := e.post("alice", "a@h", "/lease", map[string]any{"tags": tags}); code != 200 || body["n"] != float64(3) {
		t.Fatalf("confirm: %d %v", code, body)
	}
	time.Sleep(1100 * time.Millisecond)
	if n, _ := protocol.NewBroker(pool, protocol.BrokerOptions{}).RestoreExpired(context.Background()); n != 0 {
		t.Errorf("confirmed messages restored: %d", n)
	}
	if n := e.int("ZCARD", "unacked_index"); n != 3 {
		t.Errorf("%d confirmed messages still held; want 3", n)
	}
}

// TestLeaseRefreshThroughGatewayKeepsLongTask: a task 2.5 times longer
// than the visibility timeout runs once: the worker refreshes its lease
// through the gateway while a restorer sweeps all the time. (4 s: each
// refresh must cross HTTP within a third of it on a busy 2-core machine.)
func TestLeaseRefreshThroughGatewayKeepsLongTask(t *testing.T) {
	t.Parallel()
	e := start(t, 4*time.Second, time.Second)
	w := e.worker("alice", "long", "-visibility-timeout", "4s")
	id := e.send(contract.GPUQueue("alice"), "diag.sleep", 10)
	pool, _ := protocol.NewPool(e.r.URL())
	defer pool.Close()
	b := protocol.NewBroker(pool, protocol.BrokerOptions{VisibilityTimeout: 4 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	restored := make(chan int, 1)
	go func() {
		total := 0
		for ctx.Err() == nil {
			n, _ := b.RestoreExpired(ctx)
			total += n
			time.Sleep(200 * time.Millisecond)
		}
		restored <- total
	}()
	m := e.waitState(id, 40*time.Second, "SUCCESS", "FAILURE")
	cancel()
	if n := <-restored; n != 0 {
		t.Errorf("the restorer took back %d messages of a task whose lease was refreshed", n)
	}
	if m["status"] != "SUCCESS" {
		t.Errorf("result = %v", m)
	}
	if n := w.LogLines("task started", id); n != 1 {
		t.Errorf("task started %d times; want 1", n)
	}
}

// TestServerFlagConflicts: -server refuses Redis flags and a missing key,
// each with a message naming the fix.
func TestServerFlagConflicts(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"MORAG_API_KEY=k"}, []string{"-server", "http://127.0.0.1:1", "-redis", "redis://x"}, "drop [-redis]"},
		{[]string{"MORAG_API_KEY="}, []string{"-server", "http://127.0.0.1:1"}, "MORAG_API_KEY"},
	} {
		cmd := exec.Command(workerBin, c.args...)
		cmd.Env = append(os.Environ(), c.env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("worker %v: %v\n%s\nwant an error naming %q", c.args, err, out, c.want)
		}
	}
}

// The worker-side client is a runner transport.
var _ runner.Transport = (*remote.Client)(nil)

// TestRevokeTerminateThroughGateway: Python's revoke(terminate=True)
// reaches a running task on a gateway-mediated worker.
func TestRevokeTerminateThroughGateway(t *testing.T) {
	t.Parallel()
	e := start(t, time.Hour, 0)
	e.worker("alice", "revoke")
	id := e.send(contract.GPUQueue("alice"), "diag.sleep", 60)
	e.waitState(id, 30*time.Second, "STARTED", "PROGRESS")
	lines := e.python(`
import sys
from diagapp import app, emit
emit({"reply": app.control.revoke(sys.argv[1], terminate=True, reply=True, timeout=3)})
`, id)
	if len(lines) != 1 || !strings.Contains(fmt.Sprint(lines[0]["reply"]), id) {
		t.Errorf("revoke reply = %v; want one naming %s", lines, id)
	}
	m := e.waitState(id, 20*time.Second, "REVOKED", "SUCCESS", "FAILURE")
	if m["status"] != "REVOKED" {
		t.Errorf("state after revoke(terminate=True) = %v; want REVOKED", m["status"])
	}
}

// TestWorkerRefusedAtStart: a bad key, or a queue that is not the key's,
// stops the worker at once with the gateway's reason.
func TestWorkerRefusedAtStart(t *testing.T) {
	t.Parallel()
	e := start(t, time.Hour, 0)
	for _, c := range []struct {
		key, queue, want string
	}{
		{"not-a-key", contract.GPUQueue("alice"), "MORAG_API_KEY"},
		{e.keys["alice"], contract.GPUQueue("bob"), `not "gpu-tasks-bob"`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, workerBin, "-server", e.url, "-queues", c.queue)
		cmd.Env = append(os.Environ(), "MORAG_API_KEY="+c.key)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), c.want) || !strings.Contains(string(out), "refused") {
			t.Errorf("worker with queue %s: %v\n%s\nwant a refusal naming %s", c.queue, err, out, c.want)
		}
	}
}

// TestForwardOutsideUserQueuesFailsTask: an unknown task on a
// gateway-mediated worker would be forwarded to celery, which the key may
// not publish to: the task fails with the gateway's reason instead of
// staying in hand, and celery gets nothing.
func TestForwardOutsideUserQueuesFailsTask(t *testing.T) {
	t.Parallel()
	e := start(t, time.Hour, 0)
	e.worker("alice", "fwd")
	id := e.send(contract.GPUQueue("alice"), "no.such.task", 1)
	m := e.waitState(id, 30*time.Second, "FAILURE", "SUCCESS")
	if m["status"] != "FAILURE" || !strings.Contains(fmt.Sprint(m["result"]), "may forward only to") {
		t.Errorf("unknown task's result = %v; want FAILURE naming the refusal", m)
	}
	if n := e.int("LLEN", contract.DefaultQueue); n != 0 {
		t.Errorf("celery got %d messages", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.int("ZCARD", "unacked_index") != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := e.int("ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages left held", n)
	}
}

// blockLease is an http.RoundTripper that holds every lease request
// (/lease: the confirmation of a fetch, and refreshes) until open is
// closed, as a link that fails right after a fetch answer arrives would.
type blockLease struct {
	open <-chan struct{}
	held atomic.Int64
}

func (b *blockLease) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/lease") {
		b.held.Add(1)
		select {
		case <-b.open:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestUnconfirmedFetchNotRun: a worker whose confirmation of a fetch
// cannot reach the gateway within the confirm window must not run the
// message: by then the gateway may have restored it and another worker
// taken it (with the same delivery tag, so the late confirmation, the
// first worker's result and its ack would land on the other worker's
// hold). Before the fix the task ran on both workers.
func TestUnconfirmedFetchNotRun(t *testing.T) {
	t.Parallel()
	const vt, confirm = 20 * time.Second, time.Second
	e := start(t, vt, confirm)
	q := contract.GPUQueue("alice")
	var mu sync.Mutex
	started, finished := map[string]int{}, map[string]int{}
	mux := runner.NewMux()
	mux.HandleFunc("late.task", func(ctx context.Context, task *runner.Task) (any, error) {
		mu.Lock()
		started[task.Hostname]++
		mu.Unlock()
		select {
		case <-time.After(4 * time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		mu.Lock()
		finished[task.Hostname]++
		mu.Unlock()
		return "done", nil
	})
	run := func(name string, hc *http.Client) {
		e.runInProcess("alice", runner.Config{Queues: []string{q}, Concurrency: 1, Hostname: name + "@h", VisibilityTimeout: vt,
			Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)},
			mux, remote.ClientOptions{Wait: 2 * time.Second, HTTPClient: hc})
	}
	open := make(chan struct{})
	bl := &blockLease{open: open}
	run("cut", &http.Client{Transport: bl})
	pool, _ := protocol.NewPool(e.r.URL())
	defer pool.Close()
	client := protocol.NewClient(protocol.NewBroker(pool, protocol.BrokerOptions{VisibilityTimeout: vt}), protocol.NewBackend(pool, protocol.BackendOptions{}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := client.Send(ctx, "late.task", nil, nil, protocol.SendOptions{Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for bl.held.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if bl.held.Load() == 0 {
		t.Fatal("the worker never confirmed a fetch")
	}
	// The gateway restores the unconfirmed message after the confirm
	// window; a second worker with a working link takes it.
	deadline = time.Now().Add(20 * time.Second)
	for e.int("LLEN", q) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	run("spare", http.DefaultClient)
	time.Sleep(2 * time.Second)
	close(open) // the late confirmation arrives
	raw, err := res.Get(ctx)
	if err != nil || string(raw) != `"done"` {
		t.Fatalf("result %s, %v", raw, err)
	}
	time.Sleep(5 * time.Second) // the first worker's run, if it ran, ends now
	mu.Lock()
	defer mu.Unlock()
	if started["cut@h"] != 0 || finished["spare@h"] != 1 {
		t.Errorf("runs started %v, finished %v; want only the spare to run it (once)", started, finished)
	}
	if n := e.int("ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages left held", n)
	}
}

// TestLongPollLateMessageRuns: a message that arrives late in a long poll
// (after more than the confirm window of waiting) is confirmed and run at
// once: the confirm window starts when the gateway takes the message, not
// when the worker asked.
func TestLongPollLateMessageRuns(t *testing.T) {
	t.Parallel()
	e := start(t, 20*time.Second, time.Second)
	q := contract.GPUQueue("alice")
	logs := &syncBuf{}
	mux := runner.NewMux()
	mux.HandleFunc("late.echo", func(context.Context, *runner.Task) (any, error) { return "ran", nil })
	e.runInProcess("alice", runner.Config{Queues: []string{q}, Concurrency: 1, Hostname: "late@h", VisibilityTimeout: 20 * time.Second,
		Logger: zerolog.New(logs).Level(zerolog.WarnLevel)}, mux, remote.ClientOptions{Wait: 5 * time.Second})
	pool, _ := protocol.NewPool(e.r.URL())
	defer pool.Close()
	client := protocol.NewClient(protocol.NewBroker(pool, protocol.BrokerOptions{}), protocol.NewBackend(pool, protocol.BackendOptions{}))
	for i := range 3 {
		time.Sleep(3 * time.Second) // well into the worker's 5 s long poll
		t0 := time.Now()
		res, err := client.Send(context.Background(), "late.echo", nil, nil, protocol.SendOptions{Queue: q})
		if err != nil {
			t.Fatal(err)
		}
		gctx, gcancel := context.WithTimeout(context.Background(), 30*time.Second)
		raw, err := res.Get(gctx)
		gcancel()
		if err != nil || string(raw) != `"ran"` {
			t.Fatalf("round %d: result %s, %v\n%s", i, raw, err, logs)
		}
		if d := time.Since(t0); d > 4*time.Second {
			t.Errorf("round %d: the result took %s: the message was dropped and restored, not run at once\n%s", i, d, logs)
		}
	}
	if strings.Contains(logs.String(), "could not confirm") {
		t.Errorf("the worker dropped a long-polled message:\n%s", logs)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestControlRelaysAreCounted: each relay holds a Redis subscription, so
// one user may have at most 16 under remote control; the 17th name gets a
// 429 saying so, and another user is not held back by it.
func TestControlRelaysAreCounted(t *testing.T) {
	e := start(t, time.Hour, 30*time.Second)
	poll := map[string]any{"methods": []string{"ping"}, "wait_ms": 0}
	for i := range 16 {
		if code, body := e.post("alice", fmt.Sprintf("w%d@h", i), "/control/poll", poll); code != 200 {
			t.Fatalf("relay %d: %d %v", i, code, body)
		}
	}
	code, body := e.post("alice", "w16@h", "/control/poll", poll)
	if detail, _ := body["detail"].(string); code != http.StatusTooManyRequests || !strings.Contains(detail, "16") {
		t.Fatalf("the 17th relay of one user: %d %v, want 429 naming the limit", code, body)
	}
	// A name already relayed keeps working; another user is not held back.
	if code, body := e.post("alice", "w3@h", "/control/poll", poll); code != 200 {
		t.Fatalf("an existing relay after the limit: %d %v", code, body)
	}
	if code, body := e.post("bob", "b@h", "/control/poll", poll); code != 200 {
		t.Fatalf("another user's first relay: %d %v", code, body)
	}
}

// TestLateSettleAfterLeaseLapseIsRefused: a gateway-mediated worker whose
// lease lapsed (a partition, say) while another worker took the message
// again, under the same delivery tag, must not settle that worker's hold
// with a request that arrives late. The gateway refuses every request
// whose lease bound (HeaderLeaseUntil) has passed, before it touches
// Redis; a request without the bound (an older worker) is not checked,
// which the end of the test shows is exactly the hole it closes.
func TestLateSettleAfterLeaseLapseIsRefused(t *testing.T) {
	t.Parallel()
	const vt, confirm = 2 * time.Second, time.Second
	e := start(t, vt, confirm)
	q := contract.GPUQueue("alice")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := e.remoteClient("alice", remote.ClientOptions{Hostname: "late@h", Queues: []string{q}, Wait: time.Second,
		Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	id := e.send(q, "late.task")
	ds, err := a.FetchN(ctx, time.Second, 1)
	if err != nil || len(ds) != 1 || ds[0].Message == nil || ds[0].Message.ID != id {
		t.Fatalf("fetch: %v %v", ds, err)
	}
	tag := ds[0].Tag

	// A refreshes nothing; once the lease is older than the visibility
	// timeout a restorer (any kombu consumer) brings the message back and
	// worker B, on Redis directly, holds it under the same tag.
	pool, err := protocol.NewPool(e.r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	broker := protocol.NewBroker(pool, protocol.BrokerOptions{VisibilityTimeout: vt})
	deadline := time.Now().Add(20 * time.Second)
	for e.int("LLEN", q) == 0 && time.Now().Before(deadline) {
		if _, err := broker.RestoreExpired(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	held, err := broker.NewConsumer(q).FetchN(ctx, time.Second, 1)
	if err != nil || len(held) != 1 || held[0].Tag != tag {
		t.Fatalf("worker B's fetch: %v %v; want the same message, tag %s", held, err, tag)
	}
	stillB := func() bool { return e.int("HEXISTS", "unacked", tag) == 1 && e.int("ZCARD", "unacked_index") == 1 }

	// A's requests now arrive after its lease could have lapsed.
	_, err = a.Ack(ctx, tag)
	var refused *remote.Refused
	if !errors.As(err, &refused) || refused.Status != http.StatusConflict || refused.Code != "lease_expired" {
		t.Errorf("A's late ack: %v; want a 409 lease_expired refusal", err)
	}
	_, err = a.Commit(ctx, []protocol.CommitOp{{Kind: protocol.CommitFinish, Tag: tag,
		Store: &protocol.StoreRequest{TaskID: id, State: protocol.StateSuccess, Result: "from A"}}})
	if !errors.As(err, &refused) || refused.Status != http.StatusConflict {
		t.Errorf("A's late finish: %v; want a 409 refusal", err)
	}
	if err := a.Touch(ctx, tag); err == nil {
		t.Error("A's late lease refresh reported success")
	}
	if !stillB() {
		t.Fatal("worker B lost its hold to worker A's late requests")
	}
	if st := e.meta(id); st != nil {
		t.Errorf("A's late finish stored a result: %v", st)
	}

	// The same ack without the bound, as an older worker sends it, is
	// applied: B's hold is gone. This is what the bound prevents.
	if code, _ := e.post("alice", "late@h", "/ack", map[string]any{"tag": tag}); code != http.StatusOK {
		t.Fatalf("unfenced ack answered %d", code)
	}
	if stillB() {
		t.Error("the unfenced late ack left B's hold in place; the test shows nothing")
	}
}
