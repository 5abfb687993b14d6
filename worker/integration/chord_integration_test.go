package integration_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

// chordScript builds a chord from Python (chord(...) or chain(group, body))
// with each header part on the queue it names, waits for the body from the
// Python client and prints what AsyncResult saw.
const chordScript = `
import json, sys
from celery import chord, chain, group
from diagapp import app, emit, poll_states
form, header, body_queue, errback_queue = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
def part(p):
    if p[0] == "chain":  # ["chain", [[name, args, queue], ...]]
        return chain(*[part(x) for x in p[1]])
    name, args, queue = p
    return app.signature(name, args=args, queue=queue)
parts = [part(p) for p in header]
body = app.signature("diag.echo", queue=body_queue)
if len(sys.argv) > 6:  # a group body: group(echo@body_queue, echo("also")@argv[6])
    body = group(body, app.signature("diag.echo", args=["also"], queue=sys.argv[6]))
elif len(sys.argv) > 5 and sys.argv[5]:  # a chain body: body | echo("then")@argv[5]
    body = chain(body, app.signature("diag.echo", args=["then"], queue=sys.argv[5]))
if errback_queue:
    body.on_error(app.signature("diag.echo", args=["errback"], queue=errback_queue))
if form == "chord":
    res = chord(parts)(body)
else:
    res = chain(group(parts), body).apply_async()
out = {"id": res.id, "parts": [p.id for p in getattr(res.parent, "results", [])]}
# get() would raise a failed part's own error (it checks the parents
# first); wait for the body's own state instead.
if hasattr(res, "results"):  # a group body: report its results in order
    out["group"] = [r.get(timeout=90) for r in res.results]
    emit(out)
    sys.exit(0)
poll_states(res.id, timeout=90)
out["state"] = res.state
if res.state == "SUCCESS":
    out["result"] = res.result
else:
    out["exc_type"] = type(res.result).__name__
    out["exc"] = str(res.result)
emit(out)
`

type chordRun struct {
	ID      string
	Parts   []string
	State   string
	Result  map[string]any
	ExcType string `json:"exc_type"`
	Exc     string
	Group   []map[string]any
}

func runChord(t *testing.T, url, form string, header [][]any, bodyQueue, errbackQueue string, thenQueue ...string) chordRun {
	t.Helper()
	h, _ := json.Marshal(header)
	lines := python(t, url, chordScript, append([]string{form, string(h), bodyQueue, errbackQueue}, thenQueue...)...)
	if len(lines) != 1 {
		t.Fatalf("chord script printed %v", lines)
	}
	raw, _ := json.Marshal(lines[0])
	var cr chordRun
	if err := json.Unmarshal(raw, &cr); err != nil {
		t.Fatal(err)
	}
	return cr
}

// TestChordHeaderSplitBetweenGoAndPython runs chords whose header parts run
// on a Go and a Python worker, with the body on either, the last part
// completed by either, and a failing part on either.
func TestChordHeaderSplitBetweenGoAndPython(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	testenv.StartCeleryWorker(t, r.URL(), "diagapp", "-Q", "py", "-c", "2", "-n", "py-chord@%h")
	goW := startWorker(t, r.URL(), "-queues", "go", "-concurrency", "2", "-hostname", "go-chord@%h")
	host, _ := os.Hostname()
	goName, pyName := "go-chord@"+host, "py-chord@"+host

	echo := func(i int, q string) []any { return []any{"diag.echo", []any{i}, q} }
	sleep := func(q string) []any { return []any{"diag.sleep", []any{1}, q} }

	checkBody := func(t *testing.T, cr chordRun, wantWorker string, wantParts []string) {
		t.Helper()
		if cr.State != "SUCCESS" {
			t.Fatalf("chord body state %s (%s: %s); want SUCCESS", cr.State, cr.ExcType, cr.Exc)
		}
		if cr.Result["worker"] != wantWorker {
			t.Errorf("body ran on %v; want %s", cr.Result["worker"], wantWorker)
		}
		args, _ := cr.Result["args"].([]any)
		if len(args) != 1 {
			t.Fatalf("body args = %v; want one list of the header results", cr.Result["args"])
		}
		results, _ := args[0].([]any)
		if len(results) != len(wantParts) {
			t.Fatalf("body got %d header results (%v); want %d", len(results), results, len(wantParts))
		}
		for i, res := range results {
			if wantParts[i] == "sleep" {
				if res != float64(1) {
					t.Errorf("part %d result %v; want 1", i, res)
				}
				continue
			}
			m, _ := res.(map[string]any)
			if m["worker"] != wantParts[i] || fmt.Sprint(m["args"]) != fmt.Sprintf("[%d]", i) {
				t.Errorf("part %d result %v; want echo(%d) from %s, in header order", i, res, i, wantParts[i])
			}
		}
		gid := groupOf(t, r, cr.Parts[0])
		for _, suffix := range []string{".j", ".t", ".s"} {
			if n := redisInt(t, r, "EXISTS", "celery-taskset-meta-"+gid+suffix); n != 0 {
				t.Errorf("chord key %s left behind after the join", suffix)
			}
		}
	}

	t.Run("GoBodyPythonJoins", func(t *testing.T) {
		cr := runChord(t, r.URL(), "chord", [][]any{echo(0, "go"), echo(1, "go"), sleep("py")}, "go", "")
		checkBody(t, cr, goName, []string{goName, goName, "sleep"})
	})
	t.Run("PythonBodyGoJoins", func(t *testing.T) {
		cr := runChord(t, r.URL(), "chord", [][]any{echo(0, "py"), echo(1, "go"), echo(2, "py"), sleep("go")}, "py", "")
		checkBody(t, cr, pyName, []string{pyName, goName, pyName, "sleep"})
		if n := goW.LogLines("chord complete: body sent", ""); n < 1 {
			t.Errorf("the Go worker did not join the chord (its part finished last)")
		}
	})
	t.Run("ChainOfGroupGoJoinsGoBody", func(t *testing.T) {
		cr := runChord(t, r.URL(), "chain", [][]any{echo(0, "py"), echo(1, "go"), sleep("go")}, "go", "")
		checkBody(t, cr, goName, []string{pyName, goName, "sleep"})
	})
	failing := func(t *testing.T, failQ, lastQ, bodyQ string) {
		cr := runChord(t, r.URL(), "chord", [][]any{{"diag.fail", []any{"boom"}, failQ}, echo(1, "py"), sleep(lastQ)}, bodyQ, "go")
		if cr.State != "FAILURE" || cr.ExcType != "ChordError" {
			t.Fatalf("chord with a failing part: state %s, %s(%s); want FAILURE ChordError", cr.State, cr.ExcType, cr.Exc)
		}
		want := fmt.Sprintf("Dependency %s raised RuntimeError('boom')", cr.Parts[0])
		if cr.Exc != want {
			t.Errorf("ChordError message %q; want %q", cr.Exc, want)
		}
		m := waitState(t, r, cr.ID, 10*time.Second, "FAILURE")
		if tb, _ := m["traceback"].(string); !strings.Contains(tb, "ChordError") {
			t.Errorf("body traceback %q does not name ChordError", tb)
		}
		// The body's errback gets the body's id, as Python's old-style errbacks do.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if errbackSeen(t, r, cr.ID) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("the chord body's errback was not called with the body id %s", cr.ID)
	}
	t.Run("ChainBodyGoJoins", func(t *testing.T) {
		// chord(header, echo@go | echo("then")@py): Go joins and sends
		// the chain's first task with the rest of the chain.
		cr := runChord(t, r.URL(), "chord", [][]any{echo(0, "py"), sleep("go")}, "go", "", "py")
		if cr.State != "SUCCESS" || cr.Result["worker"] != pyName {
			t.Fatalf("chain body's last task: %s %v (%s: %s)", cr.State, cr.Result, cr.ExcType, cr.Exc)
		}
		args := cr.Result["args"].([]any)
		inner, _ := args[0].(map[string]any)
		if len(args) != 2 || args[1] != "then" || inner["worker"] != goName {
			t.Errorf("chain body's last task got %v; want [<echo of the header results from Go>, then]", args)
		}
	})
	t.Run("GroupBodyGoJoins", func(t *testing.T) {
		// chord(header, group(echo@go, echo("also")@py)): every body task
		// gets the header results.
		cr := runChord(t, r.URL(), "chord", [][]any{echo(0, "py"), sleep("go")}, "go", "", "", "py")
		if len(cr.Group) != 2 || cr.Group[0]["worker"] != goName || cr.Group[1]["worker"] != pyName {
			t.Fatalf("group body results %v; want one from Go, one from Python", cr.Group)
		}
		for i, res := range cr.Group {
			args := res["args"].([]any)
			if parts, _ := args[0].([]any); len(parts) != 2 || parts[1] != float64(1) {
				t.Errorf("group body task %d got %v; want the two header results first", i, args)
			}
		}
		if fmt.Sprint(cr.Group[1]["args"].([]any)[1]) != "also" {
			t.Errorf("group body task 1 lost its own args: %v", cr.Group[1]["args"])
		}
	})
	t.Run("ChainInHeader", func(t *testing.T) {
		// chord([echo(0)@py | echo(1)@go, sleep@py], body@go): the chain's
		// last task, run by Go, is the chord part.
		cr := runChord(t, r.URL(), "chord", [][]any{{"chain", []any{echo(0, "py"), echo(1, "go")}}, sleep("py")}, "go", "")
		if cr.State != "SUCCESS" {
			t.Fatalf("body state %s (%s: %s)", cr.State, cr.ExcType, cr.Exc)
		}
		results := cr.Result["args"].([]any)[0].([]any)
		first, _ := results[0].(map[string]any)
		if len(results) != 2 || first["worker"] != goName || results[1] != float64(1) {
			t.Errorf("body got %v; want [echo from Go, 1]", results)
		}
	})
	t.Run("FailedChainInHeader", func(t *testing.T) {
		// The chain's first task fails on Go: its unrun chord part is
		// recorded as failed, so the body fails instead of waiting.
		cr := runChord(t, r.URL(), "chord", [][]any{{"chain", []any{[]any{"diag.fail", []any{"early"}, "go"}, echo(1, "go")}}, sleep("py")}, "py", "")
		if cr.State != "FAILURE" || cr.ExcType != "ChordError" || !strings.Contains(cr.Exc, "raised RuntimeError('early')") {
			t.Errorf("body: %s %s(%s); want FAILURE ChordError", cr.State, cr.ExcType, cr.Exc)
		}
	})
	t.Run("GoPartFailsPythonJoins", func(t *testing.T) { failing(t, "go", "py", "go") })
	t.Run("PythonPartFailsGoJoins", func(t *testing.T) { failing(t, "py", "go", "py") })
}

// errbackSeen looks for a SUCCESS diag.echo result whose args start with
// the body id.
func errbackSeen(t *testing.T, r *testenv.Redis, bodyID string) bool {
	c := r.Conn()
	defer c.Close()
	keys, _ := c.Do("KEYS", "celery-task-meta-*")
	list, _ := keys.([]any)
	for _, k := range list {
		key := fmt.Sprintf("%s", k)
		m := meta(t, r, strings.TrimPrefix(key, "celery-task-meta-"))
		res, _ := m["result"].(map[string]any)
		if args, ok := res["args"].([]any); ok && len(args) == 2 && args[0] == bodyID && args[1] == "errback" {
			return true
		}
	}
	return false
}

// groupOf reads the group id from a part's stored result.
func groupOf(t *testing.T, r *testenv.Redis, partID string) string {
	m := meta(t, r, partID)
	g, _ := m["group_id"].(string)
	return g
}

// TestChordSurvivesSIGKILLedGoWorker kills the Go worker while it runs a
// header part; the part is redelivered, rerun and the chord completes once.
func TestChordSurvivesSIGKILLedGoWorker(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	testenv.StartCeleryWorker(t, r.URL(), "diagapp", "-Q", "py", "-c", "1", "-n", "py-chordkill@%h")
	args := []string{"-queues", "gokill", "-visibility-timeout", "3s", "-hostname", "go-chordkill@%h"}
	first := startWorker(t, r.URL(), args...)

	done := make(chan chordRun, 1)
	go func() {
		done <- runChord(t, r.URL(), "chord", [][]any{{"diag.echo", []any{0}, "py"}, {"diag.sleep", []any{3}, "gokill"}}, "py", "")
	}()
	// Wait until the Go worker is inside the sleeping part, then kill it.
	if !first.WaitOutput(`"message":"task started"`, 60*time.Second) {
		t.Fatalf("the Go worker never started its header part")
	}
	first.Signal(syscall.SIGKILL)
	first.Wait(10 * time.Second)
	second := startWorker(t, r.URL(), args...)

	var cr chordRun
	select {
	case cr = <-done:
	case <-time.After(120 * time.Second):
		t.Fatal("chord did not finish after the Go worker was killed")
	}
	if cr.State != "SUCCESS" {
		t.Fatalf("chord body state %s (%s: %s); want SUCCESS", cr.State, cr.ExcType, cr.Exc)
	}
	args0, _ := cr.Result["args"].([]any)
	results, _ := args0[0].([]any)
	if len(results) != 2 || results[1] != float64(3) {
		t.Errorf("body got %v; want [echo(0), 3]", cr.Result["args"])
	}
	if n := second.WaitLogLines("task succeeded", cr.Parts[1], 1, 10*time.Second); n != 1 {
		t.Errorf("restarted Go worker finished the killed part %d times; want 1", n)
	}
	if n := redisInt(t, r, "GET", "diag:runs:"+cr.ID); n != 1 {
		t.Errorf("the Python body ran %d times; want 1", n)
	}
}
