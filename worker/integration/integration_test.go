package integration_test

// Integration tests: the Go MoRAG worker binary (go run ./worker) against a real
// redis-server and Debian's Python Celery 5.2.6 (clients, workers, the
// celery CLI and an event receiver), each test on a private Redis.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
)

// workerBin is the Go worker built once by TestMain.
var workerBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "goworker-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	workerBin = filepath.Join(dir, "worker")
	build := exec.Command("go", "build", "-o", workerBin, "morag-gpu/worker")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the worker failed: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// startWorker runs the Go worker with -diagnostics on redisURL and waits
// until it is ready.
func startWorker(t *testing.T, redisURL string, args ...string) *testenv.Process {
	t.Helper()
	full := append([]string{"-redis", redisURL, "-diagnostics", "-loglevel", "info"}, args...)
	p := testenv.Start(t, "", nil, workerBin, full...)
	if !p.WaitOutput(`"ready."`, 30*time.Second) {
		t.Fatalf("Go worker did not become ready:\n%s", p.Output())
	}
	return p
}

// python runs a script with the diagapp fixture and decodes each JSON line
// it prints.
func python(t *testing.T, redisURL, script string, args ...string) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	out := testenv.RunPython(t, ctx, redisURL, script, args...)
	var lines []map[string]any
	for _, l := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}

// celeryCLI runs `celery -A diagapp <args>` and returns its stdout.
func celeryCLI(t *testing.T, redisURL string, args ...string) string {
	t.Helper()
	testenv.RequireCelery(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.PythonBin, append([]string{"-m", "celery", "-A", "diagapp"}, args...)...)
	cmd.Dir = testenv.RepoRoot(t)
	cmd.Env = append(os.Environ(), testenv.PythonEnv(t, redisURL)...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("celery %v: %v\n%s\n%s", args, err, out, stderr)
	}
	return string(out)
}

// sendTask publishes a diag task from Python and returns its id.
func sendTask(t *testing.T, redisURL, queue, name string, args ...any) string {
	t.Helper()
	a, _ := json.Marshal(args)
	lines := python(t, redisURL, `
import json, sys
from diagapp import app, emit
res = app.send_task(sys.argv[1], args=json.loads(sys.argv[2]), queue=sys.argv[3])
emit({"id": res.id})
`, name, string(a), queue)
	if len(lines) != 1 {
		t.Fatalf("send %s: unexpected output %v", name, lines)
	}
	return lines[0]["id"].(string)
}

// meta reads celery-task-meta-<id> (nil while PENDING).
func meta(t *testing.T, r *testenv.Redis, id string) map[string]any {
	t.Helper()
	c := r.Conn()
	defer c.Close()
	data, err := redis.Bytes(c.Do("GET", "celery-task-meta-"+id))
	if err == redis.ErrNil {
		return nil
	}
	if err != nil {
		return nil // Redis restarting: treat as not there yet
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("result of %s is not JSON: %s", id, data)
	}
	return m
}

// waitState polls the result until its status is one of states.
func waitState(t *testing.T, r *testenv.Redis, id string, timeout time.Duration, states ...string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		if m := meta(t, r, id); m != nil {
			last = m
			for _, s := range states {
				if m["status"] == s {
					return m
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("task %s did not reach %v within %s; last meta %v", id, states, timeout, last)
	return nil
}

func redisInt(t *testing.T, r *testenv.Redis, cmd string, args ...any) int {
	t.Helper()
	c := r.Conn()
	defer c.Close()
	n, err := redis.Int(c.Do(cmd, args...))
	if err != nil && err != redis.ErrNil {
		t.Fatalf("redis %s: %v", cmd, err)
	}
	return n
}

func TestDiagTasksFromPythonClient(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	startWorker(t, r.URL(), "-queues", "diag", "-concurrency", "2", "-hostname", "go-diag@%h")

	lines := python(t, r.URL(), `
import time
from celery.exceptions import TimeoutError
from diagapp import app, emit, poll_states

q = "diag"
# echo
res = app.send_task("diag.echo", args=[1, "x"], kwargs={"k": True}, queue=q)
emit({"case": "echo", "result": res.get(timeout=30)})

# sleep: PROGRESS seen by polling
res = app.send_task("diag.sleep", args=[3], queue=q)
states, progress = [], None
deadline = time.time() + 60
while time.time() < deadline:
    st = res.state
    if not states or states[-1] != st:
        states.append(st)
    if st == "PROGRESS" and progress is None:
        progress = res.info
    if st in ("SUCCESS", "FAILURE"):
        break
    time.sleep(0.05)
emit({"case": "sleep", "states": states, "progress": progress, "result": res.result})

# retry: RETRY then SUCCESS
res = app.send_task("diag.retry", args=[2], queue=q)
emit({"case": "retry", "states": poll_states(res.id), "result": res.result})

# fail: FAILURE raising in Python
res = app.send_task("diag.fail", args=["kaputt"], queue=q)
try:
    res.get(timeout=30)
    emit({"case": "fail", "raised": None})
except Exception as exc:
    emit({"case": "fail", "raised": type(exc).__name__, "message": str(exc), "state": res.state})

# ETA 3 s ahead runs no earlier
t0 = time.time()
res = app.send_task("diag.echo", args=["eta"], queue=q, countdown=3)
res.get(timeout=60)
emit({"case": "eta", "elapsed": time.time() - t0})

# health check
res = app.send_task("morag.worker.health_check_task", queue=q)
emit({"case": "health", "result": res.get(timeout=30)})
`)
	byCase := map[string]map[string]any{}
	for _, l := range lines {
		byCase[fmt.Sprint(l["case"])] = l
	}
	host, _ := os.Hostname()
	node := "go-diag@" + host

	echo := byCase["echo"]["result"].(map[string]any)
	if fmt.Sprint(echo["args"]) != "[1 x]" || fmt.Sprint(echo["kwargs"]) != "map[k:true]" || echo["worker"] != node {
		t.Errorf("diag.echo result = %v", echo)
	}

	sleep := byCase["sleep"]
	states := fmt.Sprint(sleep["states"])
	if !strings.Contains(states, "PROGRESS") || !strings.HasSuffix(states, "SUCCESS]") || sleep["result"] != float64(3) {
		t.Errorf("diag.sleep: states %s result %v; want PROGRESS then SUCCESS with 3", states, sleep["result"])
	}
	if p, ok := sleep["progress"].(map[string]any); !ok || p["progress"] == nil || p["message"] == "" {
		t.Errorf("PROGRESS meta = %v; want {progress, message}", sleep["progress"])
	}

	retry := byCase["retry"]
	rs := fmt.Sprint(retry["states"])
	if i, j := strings.Index(rs, "RETRY"), strings.LastIndex(rs, "SUCCESS"); i < 0 || j < i || retry["result"] != float64(2) {
		t.Errorf("diag.retry: states %s result %v; want RETRY then SUCCESS with 2", rs, retry["result"])
	}

	fail := byCase["fail"]
	if fail["raised"] != "RuntimeError" || fail["message"] != "kaputt" || fail["state"] != "FAILURE" {
		t.Errorf("diag.fail: %v; want RuntimeError('kaputt') and FAILURE", fail)
	}

	if el := byCase["eta"]["elapsed"].(float64); el < 2.9 {
		t.Errorf("ETA task 3 s ahead finished after %.2fs: it ran early", el)
	}

	health := byCase["health"]["result"].(map[string]any)
	// gpu is media.Detect's capability report (true or false per machine).
	gpu, _ := health["gpu"].(map[string]any)
	_, hasNVDEC := gpu["nvdec"].(bool)
	if health["status"] != "healthy" || health["worker"] != node || !hasNVDEC || fmt.Sprint(health["queues"]) != "[diag]" {
		t.Errorf("health = %v", health)
	}
}

func TestInspectAndRevokeTerminate(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	startWorker(t, r.URL(), "-queues", "ctl", "-hostname", "go-ctl@%h")
	host, _ := os.Hostname()
	node := "go-ctl@" + host

	ping := celeryCLI(t, r.URL(), "inspect", "ping", "--json", "-t", "10", "-d", node)
	if !strings.Contains(ping, node) || !strings.Contains(ping, "pong") {
		t.Errorf("inspect ping = %s; want a pong from %s", ping, node)
	}

	id := sendTask(t, r.URL(), "ctl", "diag.sleep", 60)
	waitState(t, r, id, 30*time.Second, "STARTED", "PROGRESS")

	active := celeryCLI(t, r.URL(), "inspect", "active", "--json", "-t", "10", "-d", node)
	if !strings.Contains(active, node) || !strings.Contains(active, id) || !strings.Contains(active, "diag.sleep") {
		t.Errorf("inspect active = %s; want %s running on %s", active, id, node)
	}
	var stats map[string]map[string]any
	if err := json.Unmarshal([]byte(celeryCLI(t, r.URL(), "inspect", "stats", "--json", "-t", "10", "-d", node)), &stats); err != nil {
		t.Fatalf("inspect stats is not JSON: %v", err)
	}
	st := stats[node]
	for _, key := range []string{"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"} {
		if _, ok := st[key]; !ok {
			t.Errorf("inspect stats lacks %q (Flower reads it): %v", key, st)
		}
	}
	if st["sw_ident"] != "morag-gpu" || st["sw_ver"] != "0.1.0" {
		t.Errorf("inspect stats sw_ident, sw_ver = %v, %v; want the MoRAG worker's morag-gpu, 0.1.0 (the fleet tells Go workers by it)", st["sw_ident"], st["sw_ver"])
	}
	if reg := celeryCLI(t, r.URL(), "inspect", "registered", "--json", "-t", "10", "-d", node); !strings.Contains(reg, "diag.sleep") {
		t.Errorf("inspect registered = %s", reg)
	}

	// Celery 5.2's CLI spells revoke --terminate as `control terminate`.
	out := celeryCLI(t, r.URL(), "control", "terminate", "SIGTERM", id, "--json", "-t", "10", "-d", node)
	if !strings.Contains(out, "terminate: "+id) {
		t.Errorf("control terminate replied %s", out)
	}
	assertTerminated(t, r, id)

	// The same through app.control.revoke(id, terminate=True).
	id2 := sendTask(t, r.URL(), "ctl", "diag.sleep", 60)
	waitState(t, r, id2, 30*time.Second, "STARTED", "PROGRESS")
	reply := python(t, r.URL(), `
import sys
from diagapp import app, emit
emit({"reply": app.control.revoke(sys.argv[1], terminate=True, reply=True, timeout=5)})
`, id2)
	if len(reply) != 1 || !strings.Contains(fmt.Sprint(reply[0]["reply"]), "terminate: "+id2) {
		t.Errorf("revoke(terminate=True) replied %v", reply)
	}
	assertTerminated(t, r, id2)
	if n := redisInt(t, r, "ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages still unacked after the revoke", n)
	}
}

func assertTerminated(t *testing.T, r *testenv.Redis, id string) {
	t.Helper()
	m := waitState(t, r, id, 15*time.Second, "REVOKED", "SUCCESS", "FAILURE")
	res, _ := m["result"].(map[string]any)
	if m["status"] != "REVOKED" || res["exc_type"] != "TaskRevokedError" || fmt.Sprint(res["exc_message"]) != "[terminated]" {
		t.Errorf("after revoke with terminate the result is %v; want REVOKED TaskRevokedError('terminated')", m)
	}
}

func TestPythonEventReceiverSeesGoWorker(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	testenv.RequireCelery(t)
	recv := testenv.Start(t, "", testenv.PythonEnv(t, r.URL()), testenv.PythonBin, "-c", `
from diagapp import app, emit
def on_event(ev):
    emit({"type": ev.get("type"), "hostname": ev.get("hostname"), "uuid": ev.get("uuid"), "freq": ev.get("freq")})
with app.connection() as conn:
    recv = app.events.Receiver(conn, handlers={"*": on_event})
    emit({"type": "listening"})
    recv.capture(limit=None, timeout=None, wakeup=False)
`)
	if !recv.WaitOutput(`"listening"`, 60*time.Second) {
		t.Fatalf("event receiver did not start:\n%s", recv.Output())
	}
	startWorker(t, r.URL(), "-queues", "ev", "-hostname", "go-ev@%h", "-events") // task events are off by default, as without celery -E
	host, _ := os.Hostname()
	node := "go-ev@" + host
	if !recv.WaitOutput(`"type": "worker-heartbeat", "hostname": "`+node+`"`, 30*time.Second) {
		t.Fatalf("no worker-heartbeat from %s:\n%s", node, recv.Output())
	}
	ids := python(t, r.URL(), `
from datetime import datetime, timedelta, timezone
from diagapp import app, emit
emit({
    "ok": app.send_task("diag.echo", args=["hi"], queue="ev").id,
    "fail": app.send_task("diag.fail", args=["bad"], queue="ev").id,
    "retry": app.send_task("diag.retry", args=[1, 0], queue="ev").id,
    "expired": app.send_task("diag.echo", args=["late"], queue="ev",
                             expires=datetime.now(timezone.utc) - timedelta(seconds=5)).id,
})
`)[0]
	okID, failID, retryID, expiredID := ids["ok"].(string), ids["fail"].(string), ids["retry"].(string), ids["expired"].(string)
	for _, want := range []struct{ typ, id string }{
		{"task-received", okID}, {"task-started", okID}, {"task-succeeded", okID},
		{"task-received", failID}, {"task-failed", failID},
		{"task-retried", retryID}, {"task-succeeded", retryID},
		{"task-revoked", expiredID},
	} {
		line := fmt.Sprintf(`"type": %q, "hostname": %q, "uuid": %q`, want.typ, node, want.id)
		if !recv.WaitOutput(line, 30*time.Second) {
			t.Errorf("event receiver did not see %s for %s from %s", want.typ, want.id, node)
		}
	}
	if !strings.Contains(recv.Output(), `"type": "worker-online", "hostname": "`+node) {
		t.Errorf("no worker-online from %s", node)
	}
}

func TestMixedFleetRunsEachTaskOnce(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	py := testenv.StartCeleryWorker(t, r.URL(), "diagapp", "-Q", "mixed", "-c", "2", "-n", "py-mixed@%h")
	goW := startWorker(t, r.URL(), "-queues", "mixed", "-concurrency", "2", "-hostname", "go-mixed@%h")

	lines := python(t, r.URL(), `
from diagapp import app, emit
results = [app.send_task("diag.echo", args=[i], queue="mixed") for i in range(200)]
for res in results:
    emit({"id": res.id, "result": res.get(timeout=120)})
`)
	if len(lines) != 200 {
		t.Fatalf("got %d results, want 200", len(lines))
	}
	host, _ := os.Hostname()
	byWorker := map[string]int{}
	goStarts := goW.LogsByTask("task started")
	for i, l := range lines {
		id := l["id"].(string)
		res := l["result"].(map[string]any)
		byWorker[fmt.Sprint(res["worker"])]++
		if fmt.Sprint(res["args"]) != fmt.Sprintf("[%d]", i) {
			t.Errorf("task %d returned args %v", i, res["args"])
		}
		pyRuns := redisInt(t, r, "GET", "diag:runs:"+id)
		if runs := pyRuns + goStarts[id]; runs != 1 {
			t.Errorf("task %s ran %d times (python %d, go %d); want exactly once", id, runs, pyRuns, goStarts[id])
		}
	}
	if byWorker["go-mixed@"+host] == 0 || byWorker["py-mixed@"+host] == 0 {
		t.Errorf("tasks per worker = %v; both workers should have taken some", byWorker)
	}
	t.Logf("tasks per worker: %v", byWorker)
	_ = py
}

func TestSIGKILLDuringTaskRerunsItOnce(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	args := []string{"-queues", "crash", "-visibility-timeout", "3s", "-hostname", "go-crash@%h"}
	first := startWorker(t, r.URL(), args...)
	id := sendTask(t, r.URL(), "crash", "diag.sleep", 5)
	waitState(t, r, id, 30*time.Second, "STARTED", "PROGRESS")
	first.Signal(syscall.SIGKILL)
	first.Wait(10 * time.Second)

	second := startWorker(t, r.URL(), args...)
	m := waitState(t, r, id, 45*time.Second, "SUCCESS", "FAILURE")
	if m["status"] != "SUCCESS" || m["result"] != float64(5) {
		t.Errorf("result after the crash = %v; want SUCCESS 5", m)
	}
	if n := second.WaitLogLines("task succeeded", id, 1, 10*time.Second); n != 1 {
		t.Errorf("restarted worker completed the task %d times; want 1", n)
	}
	if n := first.LogLines("task succeeded", id); n != 0 {
		t.Errorf("killed worker completed the task %d times; want 0", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for redisInt(t, r, "ZCARD", "unacked_index") != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := redisInt(t, r, "ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages left unacked", n)
	}
}

func TestSIGTERMFinishesRunningTask(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	w := startWorker(t, r.URL(), "-queues", "term", "-hostname", "go-term@%h")
	id := sendTask(t, r.URL(), "term", "diag.sleep", 2)
	waitState(t, r, id, 30*time.Second, "STARTED", "PROGRESS")
	w.Signal(syscall.SIGTERM)
	code, exited := w.Wait(30 * time.Second)
	if !exited || code != 0 {
		t.Fatalf("worker exit after SIGTERM: exited=%v code=%d; want 0\n%s", exited, code, w.Output())
	}
	if m := meta(t, r, id); m == nil || m["status"] != "SUCCESS" {
		t.Errorf("result after SIGTERM = %v; want SUCCESS (the running task finishes first)", m)
	}
	if n := redisInt(t, r, "ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages left unacked after a graceful shutdown", n)
	}
}

func TestSecondSignalRequeuesAndExits(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	w := startWorker(t, r.URL(), "-queues", "cold", "-hostname", "go-cold@%h")
	id := sendTask(t, r.URL(), "cold", "diag.sleep", 60)
	waitState(t, r, id, 30*time.Second, "STARTED", "PROGRESS")
	w.Signal(syscall.SIGTERM)
	if !w.WaitOutput("warm shutdown", 10*time.Second) {
		t.Fatalf("no warm shutdown after the first SIGTERM:\n%s", w.Output())
	}
	w.Signal(syscall.SIGTERM)
	code, exited := w.Wait(20 * time.Second)
	if !exited || code != 0 {
		t.Fatalf("after a second SIGTERM: exited=%v code=%d; want a prompt exit 0", exited, code)
	}
	if held, queued := redisInt(t, r, "ZCARD", "unacked_index"), redisInt(t, r, "LLEN", "cold"); held != 0 || queued != 1 {
		t.Errorf("after the cold shutdown %d held, %d queued; want the running task back in its queue", held, queued)
	}
	if m := meta(t, r, id); m != nil && (m["status"] == "FAILURE" || m["status"] == "SUCCESS") {
		t.Errorf("an interrupted task must be requeued, not finished: %v", m)
	}
}

func TestLongTaskOutlivesVisibilityTimeoutOnce(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	goW := startWorker(t, r.URL(), "-queues", "vt", "-visibility-timeout", "3s", "-concurrency", "1", "-hostname", "go-vt@%h")
	id := sendTask(t, r.URL(), "vt", "diag.sleep", 10)
	waitState(t, r, id, 30*time.Second, "STARTED", "PROGRESS")

	// A decoy that looks like a task a crashed consumer held for a minute:
	// restorers must put it back (proving they ran) while leaving the Go
	// worker's long task alone.
	decoy := python(t, r.URL(), `
import json, time, redis
from diagapp import app, emit, REDIS_URL
r = redis.Redis.from_url(REDIS_URL)
res = app.send_task("diag.echo", args=["decoy"], queue="vt-decoy")
env = json.loads(r.rpop("vt-decoy"))
tag = env["properties"]["delivery_tag"]
r.hset("unacked", tag, json.dumps([env, "", "vt"]))
r.zadd("unacked_index", {tag: time.time() - 60})
emit({"id": res.id})
`)[0]["id"].(string)

	py := testenv.Start(t, "", testenv.PythonEnv(t, r.URL(), "VISIBILITY_TIMEOUT=3"), testenv.PythonBin,
		"-m", "celery", "-A", "diagapp", "worker", "-Q", "vt", "-c", "1", "-n", "py-vt@%h",
		"--without-mingle", "--without-gossip", "--loglevel=INFO")

	m := waitState(t, r, id, 60*time.Second, "SUCCESS", "FAILURE")
	if m["status"] != "SUCCESS" {
		t.Errorf("long task result = %v", m)
	}
	waitState(t, r, decoy, 60*time.Second, "SUCCESS")
	if n := redisInt(t, r, "GET", "diag:runs:"+id); n != 0 {
		t.Errorf("the Python worker ran the Go worker's long task %d times: its lease was not kept", n)
	}
	if n := goW.LogsByTask("task started")[id]; n != 1 {
		t.Errorf("the Go worker started the long task %d times; want 1", n)
	}
	_ = py
}

func TestRedisRestartUnderRunningWorker(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	w := startWorker(t, r.URL(), "-queues", "restart", "-hostname", "go-restart@%h")
	before := python(t, r.URL(), `
from diagapp import app, emit
emit({"r": app.send_task("diag.echo", args=["before"], queue="restart").get(timeout=30)})
`)
	if len(before) != 1 {
		t.Fatalf("before restart: %v", before)
	}

	// A task in hand while Redis goes away: its result must still land.
	id := sendTask(t, r.URL(), "restart", "diag.sleep", 3)
	waitState(t, r, id, 30*time.Second, "STARTED", "PROGRESS")
	r.Restart()
	if m := waitState(t, r, id, 45*time.Second, "SUCCESS", "FAILURE"); m["status"] != "SUCCESS" {
		t.Errorf("task in hand during the restart: %v", m)
	}

	after := python(t, r.URL(), `
from diagapp import app, emit
emit({"r": app.send_task("diag.echo", args=["after"], queue="restart").get(timeout=60)})
`)
	if len(after) != 1 || fmt.Sprint(after[0]["r"].(map[string]any)["args"]) != "[after]" {
		t.Fatalf("after restart: %v", after)
	}
	host, _ := os.Hostname()
	node := "go-restart@" + host
	if ping := celeryCLI(t, r.URL(), "inspect", "ping", "--json", "-t", "10", "-d", node); !strings.Contains(ping, node) {
		t.Errorf("no pong after the Redis restart: %s", ping)
	}
	if !strings.Contains(w.Output(), "failed") {
		t.Logf("worker output has no reconnect warning; did Redis really go away?")
	}
}
