package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
)

// supervised is a Go worker process that a supervisor restarts whenever it
// dies, as systemd or Kubernetes would.
type supervised struct {
	mu     sync.Mutex
	p      *testenv.Process
	deaths int
}

func supervise(ctx context.Context, t *testing.T, url string, args ...string) *supervised {
	w := &supervised{p: startWorker(t, url, args...)}
	full := append([]string{"-redis", url, "-diagnostics", "-loglevel", "info"}, args...)
	go func() { // owner: the test; ends with ctx
		for {
			w.mu.Lock()
			p := w.p
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-p.Done():
			}
			if ctx.Err() != nil {
				return
			}
			np := testenv.Start(t, "", nil, workerBin, full...)
			w.mu.Lock()
			w.deaths++
			w.p = np
			w.mu.Unlock()
			np.WaitOutput(`"ready."`, 30*time.Second)
		}
	}()
	return w
}

func (w *supervised) Deaths() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.deaths
}

// echoLoad sends a diag.echo every 250 ms from a Python client until
// stopFile exists, then waits for the stragglers; it prints one JSON line
// per task ({"id", "state", "latency"}) and {"done": true} last.
const echoLoad = `
import os, time
from diagapp import app, emit
q, stop = os.environ["ECHO_QUEUE"], os.environ["STOP_FILE"]
pending = []
def reap(final):
    global pending
    still = []
    for sent, res in pending:
        if final:
            try:
                res.get(timeout=60)
            except Exception:
                pass
        if res.ready():
            emit({"id": res.id, "state": res.state, "latency": time.time() - sent})
        else:
            still.append((sent, res))
    pending = still
while not os.path.exists(stop):
    pending.append((time.time(), app.send_task("diag.echo", args=["alive"], queue=q)))
    reap(False)
    time.sleep(0.25)
reap(True)
for sent, res in pending:
    emit({"id": res.id, "state": res.state, "latency": time.time() - sent})
emit({"done": True})
`

// A task that SIGKILLs whichever Go worker runs it is failed after
// -max-deliveries starts, as WorkerLostError that a Python client raises,
// and dead-lettered, while two Go workers (restarted by a supervisor after
// each kill) and a Python worker on the same queue keep serving other
// tasks the whole time. The poison task goes to a second queue that only
// the Go workers consume: a Python worker cannot hand a message back
// safely (kombu's reject(requeue=True) restores it and then acks the same
// delivery tag, erasing the hold of whoever took it in between), and one
// that runs it itself records its own result, uncounted.
//
// The workers run with -count-before-run: diag.crash kills its worker
// microseconds after it starts, before a first delivery's start (counted
// while the handler runs by default) can reach Redis, and the test counts
// exactly -max-deliveries deaths. TestServerStartCounting covers when the
// default counts.
func TestPoisonMessageFailsAfterMaxDeliveries(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	testenv.RequireCelery(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const q = "fleet"
	py := testenv.Start(t, "", testenv.PythonEnv(t, r.URL(), "VISIBILITY_TIMEOUT=2"), testenv.PythonBin,
		"-m", "celery", "-A", "diagapp", "worker", "-Q", q, "-c", "1", "-n", "py-fleet@%h",
		"--without-mingle", "--without-gossip", "--loglevel=INFO")
	if !py.WaitOutput("ready.", 60*time.Second) {
		t.Fatalf("python worker not ready:\n%s", py.Output())
	}
	common := []string{"-queues", q + "," + q + ".go", "-visibility-timeout", "2s", "-max-deliveries", "3", "-count-before-run", "-concurrency", "2"}
	a := supervise(ctx, t, r.URL(), append(common, "-hostname", "go-a@%h")...)
	b := supervise(ctx, t, r.URL(), append(common, "-hostname", "go-b@%h")...)

	stopFile := filepath.Join(t.TempDir(), "stop")
	load := testenv.Start(t, "", testenv.PythonEnv(t, r.URL(), "ECHO_QUEUE="+q, "STOP_FILE="+stopFile), testenv.PythonBin, "-c", echoLoad)

	crashID := sendTask(t, r.URL(), q+".go", "diag.crash")
	m := waitState(t, r, crashID, 150*time.Second, "FAILURE", "SUCCESS")
	res, _ := m["result"].(map[string]any)
	if m["status"] != "FAILURE" || res["exc_type"] != "WorkerLostError" || res["exc_module"] != "billiard.exceptions" {
		t.Fatalf("poison task result = %v; want FAILURE billiard.exceptions.WorkerLostError", m)
	}
	if msg := fmt.Sprint(res["exc_message"]); !strings.Contains(msg, "delivered 3 times") || !strings.Contains(msg, "celery.deadletter") {
		t.Errorf("poison message text = %s; want it to say it was delivered 3 times and where it went", msg)
	}
	if deaths := a.Deaths() + b.Deaths(); deaths != 3 {
		t.Errorf("Go workers killed by the poison task: %d; want exactly 3 (-max-deliveries 3)", deaths)
	}

	// The dead-letter list holds the envelope with its reason, and the
	// message's count is gone.
	c := r.Conn()
	entries, err := redis.ByteSlices(c.Do("LRANGE", "celery.deadletter", 0, -1))
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		var dl struct{ Reason, Queue, Raw string }
		if json.Unmarshal(e, &dl) != nil || !strings.Contains(dl.Raw, crashID) {
			continue
		}
		found = strings.HasPrefix(dl.Reason, "poison:") && dl.Queue == q+".go"
		var env struct {
			Properties struct {
				DeliveryTag string `json:"delivery_tag"`
			} `json:"properties"`
		}
		_ = json.Unmarshal([]byte(dl.Raw), &env)
		if n := redisInt(t, r, "EXISTS", "celery.deliveries."+env.Properties.DeliveryTag); n != 0 {
			t.Errorf("the delivery count of the poison message is still there after it was failed")
		}
		t.Logf("dead letter: reason %q queue %q", dl.Reason, dl.Queue)
	}
	if !found {
		t.Errorf("no dead-letter entry with a poison reason for %s among %d entries", crashID, len(entries))
	}

	// A Python client raises it.
	got := python(t, r.URL(), `
import sys
from diagapp import app, emit
try:
    app.AsyncResult(sys.argv[1]).get(timeout=10)
    emit({"raised": None})
except Exception as exc:
    emit({"raised": type(exc).__name__, "text": str(exc)})
`, crashID)
	if len(got) != 1 || got[0]["raised"] != "WorkerLostError" {
		t.Errorf("Python get() of the poison task: %v; want WorkerLostError", got)
	}

	// The fleet kept serving: every echo sent meanwhile succeeded, and none
	// waited longer than a dead worker's visibility timeout, a restore
	// sweep and a restart explain.
	if err := os.WriteFile(stopFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if !load.WaitOutput(`"done": true`, 90*time.Second) {
		t.Fatalf("echo load did not finish:\n%s", load.Output())
	}
	n, worst := 0, 0.0
	for _, line := range strings.Split(load.Output(), "\n") {
		var e struct {
			ID      string  `json:"id"`
			State   string  `json:"state"`
			Latency float64 `json:"latency"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.ID == "" {
			continue
		}
		n++
		worst = max(worst, e.Latency)
		if e.State != "SUCCESS" {
			t.Errorf("echo %s sent while the poison message bounced ended %s", e.ID, e.State)
		}
	}
	if n < 20 {
		t.Errorf("only %d echo tasks ran during the test", n)
	}
	if worst > 20 {
		t.Errorf("an echo task waited %.1fs; the fleet stalled", worst)
	}
	t.Logf("%d echo tasks served meanwhile, slowest %.2fs", n, worst)
}

// A task whose worker was killed once (one unfinished start) still runs
// when redelivered, and its count is cleared when it finishes.
func TestTaskRestoredOnceStillRuns(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	args := []string{"-queues", "once", "-visibility-timeout", "2s", "-max-deliveries", "2", "-hostname", "go-once@%h"}
	first := startWorker(t, r.URL(), args...)
	id := sendTask(t, r.URL(), "once", "diag.sleep", 3)
	waitState(t, r, id, 30*time.Second, "STARTED", "PROGRESS")
	keys := func() int {
		c := r.Conn()
		defer c.Close()
		ks, _ := redis.Strings(c.Do("KEYS", "celery.deliveries.*"))
		return len(ks)
	}
	if n := keys(); n != 1 {
		t.Errorf("%d delivery counts while the task runs; want 1", n)
	}
	first.Kill()

	second := startWorker(t, r.URL(), args...)
	m := waitState(t, r, id, 45*time.Second, "SUCCESS", "FAILURE")
	if m["status"] != "SUCCESS" {
		t.Fatalf("task killed once: %v; want SUCCESS (one crash is below -max-deliveries 2)\n%s", m, second.Output())
	}
	if n := keys(); n != 0 {
		t.Errorf("%d delivery counts left after the task finished; want 0", n)
	}
	if n := redisInt(t, r, "LLEN", "celery.deadletter"); n != 0 {
		t.Errorf("%d dead letters; want none", n)
	}
}

// SIGKILL in the middle of a fast drain (batched fetches, results still on
// their way to Redis) loses nothing: after a restart every task has its
// result, nothing is left held, and no delivery count outlives its task.
func TestSIGKILLMidDrainLosesNothing(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	const n = 600
	ids := python(t, r.URL(), `
import sys
from diagapp import app, emit
emit({"ids": [app.send_task("diag.echo", args=[i], queue="drain").id for i in range(int(sys.argv[1]))]})
`, fmt.Sprint(n))[0]["ids"].([]any)
	args := []string{"-queues", "drain", "-visibility-timeout", "2s", "-concurrency", "8", "-hostname", "go-drain@%h"}
	first := startWorker(t, r.URL(), args...)
	deadline := time.Now().Add(30 * time.Second)
	for redisInt(t, r, "LLEN", "drain") > n/2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	first.Kill()
	held := redisInt(t, r, "ZCARD", "unacked_index")
	startWorker(t, r.URL(), args...)
	for _, id := range ids {
		m := waitState(t, r, id.(string), 60*time.Second, "SUCCESS", "FAILURE")
		if m["status"] != "SUCCESS" {
			t.Fatalf("task %s after the crash: %v", id, m)
		}
	}
	deadline = time.Now().Add(10 * time.Second)
	for redisInt(t, r, "ZCARD", "unacked_index") != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := redisInt(t, r, "ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages still held after the drain", n)
	}
	c := r.Conn()
	defer c.Close()
	if ks, _ := redis.Strings(c.Do("KEYS", "celery.deliveries.*")); len(ks) != 0 {
		t.Errorf("%d delivery counts left after every task finished", len(ks))
	}
	t.Logf("killed with %d messages held; all %d tasks succeeded after the restart", held, n)
}
