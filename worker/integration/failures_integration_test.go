package integration_test

import (
	"strings"
	"testing"

	"morag-gpu/internal/testenv"
)

// TestGoFailuresMatchPython sends the same failing calls to a Go and a
// Python worker and compares what a Python client gets back: the
// exception class and text (TypeError for missing arguments,
// TimeLimitExceeded(1) for a hard limit), MaxRetriesExceededError seen by
// the task, and a traceback Python's .traceback returns as text ending in
// Python's exception line.
func TestGoFailuresMatchPython(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	testenv.StartCeleryWorker(t, r.URL(), "diagapp", "-Q", "fail-py", "-c", "1", "-n", "py-fail@%h")
	startWorker(t, r.URL(), "-queues", "fail-go", "-hostname", "go-fail@%h")

	lines := python(t, r.URL(), `
from diagapp import app, emit
calls = {
    "missing_args": ("diag.sleep", [], {}),
    "time_limit_int": ("diag.sleep", [5], {"time_limit": 1}),
    "time_limit_float": ("diag.sleep", [5], {"time_limit": 1.0}),
    "fail": ("diag.fail", ["boom"], {}),
    "exhaust": ("diag.exhaust", [2], {}),
}
for q in ("fail-go", "fail-py"):
    out = {"queue": q}
    for key, (name, args, opts) in calls.items():
        res = app.send_task(name, args=args, queue=q, **opts)
        res.get(timeout=60, propagate=False)
        exc = res.result
        out[key] = {"state": res.state, "type": type(exc).__name__, "repr": repr(exc), "str": str(exc),
                    "retries": app.backend.get_task_meta(res.id).get("retries"),
                    "tb_last": (res.traceback or "").rstrip("\n").split("\n")[-1]}
        if key == "fail":
            out["fail_traceback"] = res.traceback
    emit(out)
`)
	if len(lines) != 2 {
		t.Fatalf("script printed %v", lines)
	}
	goOut, pyOut := lines[0], lines[1]
	for _, key := range []string{"missing_args", "time_limit_int", "time_limit_float", "fail", "exhaust"} {
		g, p := goOut[key].(map[string]any), pyOut[key].(map[string]any)
		for _, field := range []string{"state", "type", "repr", "str"} {
			if g[field] != p[field] {
				t.Errorf("%s %s: Go %q, Python %q", key, field, g[field], p[field])
			}
		}
		t.Logf("%s: %v %v", key, g["state"], g["repr"])
	}
	// The traceback's last line is Python's exception line (none at all
	// for a hard time limit, as Python's on_timeout stores none).
	for _, key := range []string{"missing_args", "fail", "time_limit_int"} {
		g, p := goOut[key].(map[string]any), pyOut[key].(map[string]any)
		if g["tb_last"] != p["tb_last"] {
			t.Errorf("%s traceback last line: Go %q, Python %q", key, g["tb_last"], p["tb_last"])
		}
	}
	tb, _ := goOut["fail_traceback"].(string)
	if !strings.HasPrefix(tb, "Traceback (most recent call last):\n") || !strings.Contains(tb, "returned by the handler of diag.fail") {
		t.Errorf("Go traceback as Python reads it:\n%s", tb)
	}
}
