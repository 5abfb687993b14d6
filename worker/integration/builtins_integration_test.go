package integration_test

import (
	"fmt"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

// TestBuiltinCanvasTasks sends celery.map, celery.starmap, celery.chunks
// and celery.accumulate to a Go worker and to a Python worker: the Go
// worker runs them when it has the inner task, with Python's results, and
// forwards them when it does not.
func TestBuiltinCanvasTasks(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	testenv.StartCeleryWorker(t, r.URL(), "diagapp", "-Q", "bi-py", "-c", "1", "-n", "py-bi@%h")
	goW := startWorker(t, r.URL(), "-queues", "bi-go,celery", "-forward-unknown", "bi-py", "-hostname", "go-bi@%h")

	lines := python(t, r.URL(), `
from celery.canvas import xmap, xstarmap
from celery.result import result_from_tuple
from diagapp import app, emit, poll_states
echo = app.signature("diag.echo")
def poll(task_id):
    poll_states(task_id, timeout=60)
    return app.AsyncResult(task_id).result
def args_of(v):
    return [x["args"] for x in v]
for q in ("bi-go", "bi-py"):
    out = {"queue": q}
    out["map"] = args_of(xmap(echo, [1, "a", [2]], app=app).apply_async(queue=q).get(timeout=60))
    out["starmap"] = args_of(xstarmap(echo, [[1, 2], [], ["x"]], app=app).apply_async(queue=q).get(timeout=60))
    out["accumulate"] = app.send_task("celery.accumulate", args=[1, 2, 3], queue=q).get(timeout=60)
    out["accumulate_index"] = app.send_task("celery.accumulate", args=[1, 2, 3], kwargs={"index": 1}, queue=q).get(timeout=60)
    res = app.send_task("celery.chunks", kwargs={"task": dict(echo), "it": [[1], [2], [3]], "n": 2}, queue=q)
    group = result_from_tuple(res.get(timeout=60), app=app)
    out["chunks"] = [args_of(poll(c.id)) for c in group.results]
    bad = xstarmap(app.signature("diag.sleep"), [[]], app=app).apply_async(queue=q)
    bad.get(timeout=60, propagate=False)
    out["map_error"] = repr(bad.result)
    emit(out)
# A map whose inner task only Python has: the Go worker forwards it.
res = xmap(app.signature("diag.pydouble"), [1, 2], app=app).apply_async(queue="bi-go")
emit({"forwarded": res.get(timeout=60), "id": res.id})
`)
	if len(lines) != 3 {
		t.Fatalf("script printed %v", lines)
	}
	goOut, pyOut := lines[0], lines[1]
	for _, key := range []string{"map", "starmap", "accumulate", "accumulate_index", "chunks", "map_error"} {
		if g, p := fmt.Sprint(goOut[key]), fmt.Sprint(pyOut[key]); g != p {
			t.Errorf("%s: Go %s, Python %s", key, g, p)
		} else {
			t.Logf("%s: %s", key, g)
		}
	}
	if fmt.Sprint(lines[2]["forwarded"]) != "[2 4]" {
		t.Errorf("celery.map of a Python-only task = %v; want [2 4] from the Python worker", lines[2]["forwarded"])
	}
	if n := goW.WaitLogLines("task forwarded", lines[2]["id"].(string), 1, 10*time.Second); n != 1 {
		t.Errorf("the Go worker forwarded the map %d times; want 1", n)
	}
}
