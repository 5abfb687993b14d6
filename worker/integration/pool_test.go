package integration_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"morag-gpu/internal/testenv"
)

// pool_grow, pool_shrink and autoscale from Python's control client change
// how many tasks run at once, without dropping work, and inspect stats'
// pool (with writes, as a prefork pool reports them) follows.
func TestPoolResizeFromPythonControl(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	startWorker(t, r.URL(), "-queues", "pool", "-concurrency", "1", "-hostname", "go-pool@%h")
	host, _ := os.Hostname()
	node := "go-pool@" + host

	out := python(t, r.URL(), `
import sys, time
from diagapp import app, emit
node = sys.argv[1]
ctl = app.control
def stats():
    return ctl.inspect(destination=[node], timeout=5).stats()[node]["pool"]
def running_at_once(n, secs=2):
    res = [app.send_task("diag.sleep", args=[secs], queue="pool") for _ in range(n)]
    peak, deadline = 0, time.time() + 60
    while time.time() < deadline and not all(r.ready() for r in res):
        peak = max(peak, sum(1 for r in res if r.state in ("STARTED", "PROGRESS")))
        time.sleep(0.05)
    return peak, [r.state for r in res]

emit({"case": "before", "pool": stats()})
emit({"case": "grow", "reply": ctl.pool_grow(2, reply=True, destination=[node], timeout=5)})
emit({"case": "grown", "pool": stats(), "prefetch": ctl.inspect(destination=[node], timeout=5).stats()[node]["prefetch_count"]})
peak, states = running_at_once(3)
emit({"case": "grown-run", "peak": peak, "states": states, "pool": stats()})

# Shrink while all three slots are busy: the running tasks finish.
res = [app.send_task("diag.sleep", args=[2], queue="pool") for _ in range(3)]
time.sleep(0.7)
emit({"case": "shrink", "reply": ctl.pool_shrink(2, reply=True, destination=[node], timeout=5)})
for r in res:
    r.get(timeout=60)
emit({"case": "shrunk", "states": [r.state for r in res], "pool": stats()})
peak, states = running_at_once(2, 1)
emit({"case": "shrunk-run", "peak": peak, "states": states})
emit({"case": "shrink-too-far", "reply": ctl.pool_shrink(5, reply=True, destination=[node], timeout=5)})

emit({"case": "autoscale", "reply": ctl.autoscale(4, 2, reply=True, destination=[node], timeout=5)})
emit({"case": "grow-autoscaled", "reply": ctl.pool_grow(1, reply=True, destination=[node], timeout=5)})
peak, states = running_at_once(4, 3)
emit({"case": "autoscaled-run", "peak": peak, "states": states, "pool": stats()})
`, node)
	byCase := map[string]map[string]any{}
	for _, l := range out {
		byCase[fmt.Sprint(l["case"])] = l
	}
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	pool := func(c string) map[string]any { p, _ := byCase[c]["pool"].(map[string]any); return p }

	if p := pool("before"); p["max-concurrency"] != float64(1) {
		t.Errorf("pool before = %s; want max-concurrency 1", js(p))
	}
	if got := js(byCase["grow"]["reply"]); !strings.Contains(got, `"ok":"pool will grow"`) {
		t.Errorf("pool_grow replied %s", got)
	}
	if p := pool("grown"); p["max-concurrency"] != float64(3) || len(p["processes"].([]any)) != 3 {
		t.Errorf("pool after pool_grow(2) = %s; want max-concurrency 3", js(p))
	}
	if got := byCase["grown"]["prefetch"]; got != float64(6) {
		t.Errorf("prefetch_count after pool_grow(2) of a 1-slot pool = %v; want 6 (3 running + 3 waiting, the prefetch follows the pool)", got)
	}
	if c := byCase["grown-run"]; c["peak"] != float64(3) {
		t.Errorf("after pool_grow(2) %v tasks ran at once (states %v); want 3", c["peak"], c["states"])
	}
	w, _ := pool("grown-run")["writes"].(map[string]any)
	if w == nil || w["total"] == nil || w["avg"] == nil || w["all"] == nil || w["raw"] == nil || w["strategy"] == nil || w["inqueues"] == nil {
		t.Errorf("stats pool.writes = %s; want Python's keys total, avg, all, raw, strategy, inqueues", js(w))
	}
	if got := js(byCase["shrink"]["reply"]); !strings.Contains(got, `"ok":"pool will shrink"`) {
		t.Errorf("pool_shrink replied %s", got)
	}
	if got := js(byCase["shrunk"]["states"]); got != `["SUCCESS","SUCCESS","SUCCESS"]` {
		t.Errorf("tasks running while the pool shrank ended %s; want all SUCCESS (no work dropped)", got)
	}
	if p := pool("shrunk"); p["max-concurrency"] != float64(1) {
		t.Errorf("pool after pool_shrink(2) = %s; want max-concurrency 1", js(p))
	}
	if c := byCase["shrunk-run"]; c["peak"] != float64(1) {
		t.Errorf("after pool_shrink(2) %v tasks ran at once; want 1", c["peak"])
	}
	if got := js(byCase["shrink-too-far"]["reply"]); !strings.Contains(got, `"error"`) {
		t.Errorf("pool_shrink(5) of a 1-slot pool replied %s; want an error", got)
	}
	if got := js(byCase["autoscale"]["reply"]); !strings.Contains(got, "autoscale now max=4 min=2") {
		t.Errorf("autoscale replied %s", got)
	}
	if got := js(byCase["grow-autoscaled"]["reply"]); !strings.Contains(got, "not supported with autoscale") {
		t.Errorf("pool_grow under autoscale replied %s; want Python's refusal", got)
	}
	if c := byCase["autoscaled-run"]; c["peak"] != float64(4) {
		t.Errorf("with autoscale max=4, %v of 4 tasks ran at once (states %v); want 4", c["peak"], c["states"])
	}
}

// After the reply to cancel_consumer, nothing more is taken from the queue,
// even by a fetch that was blocked on it when the command came.
func TestCancelConsumerTakesNothingAfterReply(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	startWorker(t, r.URL(), "-queues", "keep,drop", "-concurrency", "2", "-hostname", "go-cancel@%h")
	host, _ := os.Hostname()
	node := "go-cancel@" + host

	out := python(t, r.URL(), `
import sys, time
from diagapp import app, emit
node = sys.argv[1]
ctl = app.control
taken = []
for round in range(5):
    # The worker is idle, blocked in BRPOP on both queues.
    app.send_task("diag.echo", args=["warm"], queue="drop").get(timeout=30)
    time.sleep(0.3)
    reply = ctl.cancel_consumer("drop", reply=True, destination=[node], timeout=5)
    res = [app.send_task("diag.echo", args=[i], queue="drop") for i in range(3)]
    time.sleep(1.5)
    taken.append(sum(1 for r in res if r.state != "PENDING"))
    emit({"case": "round", "reply": reply, "taken": taken[-1], "queued": app.connection().default_channel.client.llen("drop")})
    app.connection().default_channel.client.delete("drop")
    ctl.add_consumer("drop", reply=True, destination=[node], timeout=5)
emit({"case": "keep", "result": app.send_task("diag.echo", args=["still"], queue="keep").get(timeout=30)})
`, node)
	rounds := 0
	for _, l := range out {
		switch l["case"] {
		case "round":
			rounds++
			if !strings.Contains(fmt.Sprint(l["reply"]), "no longer consuming from drop") {
				t.Errorf("cancel_consumer replied %v", l["reply"])
			}
			if l["taken"] != float64(0) || l["queued"] != float64(3) {
				t.Errorf("after the cancel_consumer reply the worker took %v of 3 tasks (%v left queued); want none taken", l["taken"], l["queued"])
			}
		case "keep":
			if res, _ := l["result"].(map[string]any); fmt.Sprint(res["args"]) != "[still]" {
				t.Errorf("the other queue stopped being served: %v", l)
			}
		}
	}
	if rounds != 5 {
		t.Fatalf("got %d rounds, want 5: %v", rounds, out)
	}
}
