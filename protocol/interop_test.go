package protocol_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// Go client -> Python Celery 5.2 worker (test/python/wireapp.py).
func TestInteropGoClientPythonWorker(t *testing.T) {
	testenv.RequireCelery(t)
	s := clNewStack(t)
	testenv.StartCeleryWorker(t, s.r.URL(), "wireapp", "-Q", "celery", "-c", "1")
	ctx := bkCtx(t, 80*time.Second)
	c := s.client

	send := func(name string, args []any, kwargs map[string]any, opts protocol.SendOptions) *protocol.AsyncResult {
		t.Helper()
		r, err := c.Send(ctx, name, args, kwargs, opts)
		if err != nil {
			t.Fatalf("send %s: %v", name, err)
		}
		return r
	}

	t.Run("ArgsRoundTrip", func(t *testing.T) {
		big := json.Number("1180591620717411303424") // 2**70
		args := []any{"héllo ✓ 日本", map[string]any{"nested": []any{json.Number("1"), map[string]any{"x": []any{true, nil}}}}, big}
		kwargs := map[string]any{"big": big, "list": []any{"a", json.Number("2.5")}, "uni": "日本"}
		raw, err := send("wire.echo", args, kwargs, protocol.SendOptions{}).Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Args   []any
			Kwargs map[string]any
		}
		meta := &protocol.ResultMeta{Result: raw}
		if err := meta.DecodeResult(&got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Args, args) || !reflect.DeepEqual(got.Kwargs, kwargs) {
			t.Fatalf("echo returned\n args %#v\n kwargs %#v\nwant\n args %#v\n kwargs %#v", got.Args, got.Kwargs, args, kwargs)
		}
	})

	t.Run("OneMebibyteArgument", func(t *testing.T) {
		raw, err := send("wire.len", []any{strings.Repeat("x", 1<<20)}, nil, protocol.SendOptions{}).Get(ctx)
		if err != nil || string(raw) != "1048576" {
			t.Fatalf("wire.len = %s, %v; want 1048576", raw, err)
		}
	})

	t.Run("Failure", func(t *testing.T) {
		_, err := send("wire.fail", []any{"nope ✗"}, nil, protocol.SendOptions{}).Get(ctx)
		var te *protocol.TaskError
		if !errors.As(err, &te) {
			t.Fatalf("wire.fail: %v, want *TaskError", err)
		}
		if te.ExcType != "ValueError" || te.ExcModule != "builtins" || fmt.Sprint(te.ExcMessage) != "[nope ✗]" ||
			!strings.Contains(te.Traceback, "ValueError") {
			t.Fatalf("wire.fail error %+v", te)
		}
	})

	t.Run("LinkCallback", func(t *testing.T) {
		cbID := "cb-" + protocol.NewID()
		link := []protocol.Signature{{Task: "wire.add", Args: []any{10}, Options: map[string]any{"task_id": cbID}}}
		raw, err := send("wire.add", []any{2, 3}, nil, protocol.SendOptions{Link: link}).Get(ctx)
		if err != nil || string(raw) != "5" {
			t.Fatalf("wire.add = %s, %v", raw, err)
		}
		raw, err = c.Result(cbID).Get(ctx)
		if err != nil || string(raw) != "15" {
			t.Fatalf("link callback wire.add(5, 10) = %s, %v", raw, err)
		}
	})

	t.Run("ExpiredIsRevoked", func(t *testing.T) {
		_, err := send("wire.add", []any{1, 1}, nil, protocol.SendOptions{Expires: time.Now().Add(-time.Minute)}).Get(ctx)
		var te *protocol.TaskError
		if !errors.As(err, &te) || te.ExcType != "TaskRevokedError" || fmt.Sprint(te.ExcMessage) != "[expired]" {
			t.Fatalf("expired task: %v, want TaskRevokedError(expired)", err)
		}
	})

	t.Run("CountdownDelays", func(t *testing.T) {
		start := time.Now()
		raw, err := send("wire.add", []any{4, 4}, nil, protocol.SendOptions{Countdown: 2 * time.Second}).Get(ctx)
		if err != nil || string(raw) != "8" {
			t.Fatalf("countdown task = %s, %v", raw, err)
		}
		// Not a speed check: the worker must not run it before its eta.
		if el := time.Since(start); el < 1900*time.Millisecond {
			t.Fatalf("countdown task finished after %v, before its 2s eta", el)
		}
	})

	t.Run("HardTimeLimitFirst", func(t *testing.T) {
		// timelimit is [hard, soft]: a 1s hard limit kills the task with
		// TimeLimitExceeded (a swapped header would raise the soft limit's
		// SoftTimeLimitExceeded instead).
		_, err := send("wire.sleep", []any{10}, nil, protocol.SendOptions{TimeLimit: time.Second}).Get(ctx)
		var te *protocol.TaskError
		if !errors.As(err, &te) || te.ExcType != "TimeLimitExceeded" {
			t.Fatalf("hard time limit: %v, want TimeLimitExceeded", err)
		}
	})

	t.Run("WatchSeesStarted", func(t *testing.T) {
		var mu sync.Mutex
		var seen []*protocol.ResultMeta
		meta, err := send("wire.sleep", []any{1.5}, nil, protocol.SendOptions{}).Watch(ctx, func(m *protocol.ResultMeta) {
			mu.Lock()
			seen = append(seen, m)
			mu.Unlock()
		})
		if err != nil || meta.Status != protocol.StateSuccess {
			t.Fatalf("wire.sleep: %+v, %v", meta, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 || seen[0].Status != protocol.StateStarted {
			t.Fatalf("Watch saw %d intermediate states, want STARTED first", len(seen))
		}
		var started struct {
			PID      json.Number
			Hostname string
		}
		if err := seen[0].DecodeResult(&started); err != nil || started.PID == "" || !strings.Contains(started.Hostname, "@") {
			t.Fatalf("STARTED result %s: %v", seen[0].Result, err)
		}
	})

	t.Run("IgnoreResult", func(t *testing.T) {
		ignored := send("wire.add", []any{1, 2}, nil, protocol.SendOptions{IgnoreResult: true})
		// One worker process runs tasks in order: once the next one is done
		// the ignored one has finished too.
		if _, err := send("wire.add", []any{0, 0}, nil, protocol.SendOptions{}).Get(ctx); err != nil {
			t.Fatal(err)
		}
		if runs, _ := redis.Int(s.r.Do("GET", "wire:runs:"+ignored.ID), nil); runs != 1 {
			t.Fatalf("ignore_result task ran %d times, want 1", runs)
		}
		// Celery 5.2 still records STARTED (track_started looks at the
		// task's ignore_result, not the header's), but no final state.
		meta, err := s.backend.Get(ctx, ignored.ID)
		if err != nil || meta.Status.Ready() {
			t.Fatalf("worker stored a final result for an ignore_result task: %+v, %v", meta, err)
		}
	})
}

// Python apply_async -> Go consumer: Python's AsyncResult.get() reads what
// the Go side stored.
func TestInteropPythonClientGoWorker(t *testing.T) {
	testenv.RequireCelery(t)
	s := clNewStack(t)
	const script = `
import json
from wireapp import app
r1 = app.send_task("wire.add", args=(2, 3), queue="goq")
r2 = app.send_task("wire.fail", args=("go says no ✗",), queue="goq")
r3 = app.send_task("wire.fail", args=("custom",), queue="goq")
print("sent", flush=True)
print("add", json.dumps(r1.get(timeout=30)), flush=True)
for r in (r2, r3):
    try:
        r.get(timeout=30)
        print("no exception", flush=True)
    except Exception as e:
        print("fail", type(e).__name__, json.dumps(list(e.args)), flush=True)
`
	py := testenv.Start(t, "", testenv.PythonEnv(t, s.r.URL()), testenv.PythonBin, "-c", script)

	ctx := bkCtx(t, 60*time.Second)
	consumer := s.broker.NewConsumer("goq")
	handled := 0
	for handled < 3 {
		d, err := consumer.Fetch(ctx, time.Second)
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		if d == nil {
			select {
			case <-py.Done():
				t.Fatalf("python client exited before the Go worker ran its tasks:\n%s", py.Output())
			default:
			}
			continue
		}
		if d.Err != nil {
			t.Fatalf("undecodable Python message: %v\n%s", d.Err, d.Raw)
		}
		m := d.Message
		req := protocol.StoreRequest{TaskID: m.ID, Message: m, Worker: "celery@gotest"}
		switch {
		case m.Task == "wire.add":
			x, _ := m.Args[0].(json.Number).Int64()
			y, _ := m.Args[1].(json.Number).Int64()
			req.State, req.Result = protocol.StateSuccess, x+y
		case m.Task == "wire.fail" && m.Args[0] == "custom":
			// A class Python cannot import: it synthesizes one of that name.
			req.State, req.Result = protocol.StateFailure, protocol.NewTaskError("GoTaskError", "morag.go.errors", "custom")
		case m.Task == "wire.fail":
			req.State = protocol.StateFailure
			req.Result = protocol.NewTaskError("RuntimeError", "builtins", m.Args[0].(string))
			req.Traceback = "Traceback (most recent call last):\n  (Go)\nRuntimeError: " + m.Args[0].(string) + "\n"
		default:
			t.Fatalf("unexpected task %s", m.Task)
		}
		if err := s.backend.Store(ctx, req); err != nil {
			t.Fatal(err)
		}
		if held, err := s.broker.Ack(ctx, d.Tag); err != nil || !held {
			t.Fatalf("ack: held=%v err=%v", held, err)
		}
		handled++
	}
	if code, ok := py.Wait(45 * time.Second); !ok || code != 0 {
		t.Fatalf("python client exit %d (exited=%v):\n%s", code, ok, py.Output())
	}
	out := py.Output()
	for _, want := range []string{
		"add 5\n",
		`fail RuntimeError ["go says no \u2717"]` + "\n",
		`fail GoTaskError ["custom"]` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("python output lacks %q:\n%s", want, out)
		}
	}
}

// Python's AsyncResult.get() subscribes, reads the key once, then waits for
// a PUBLISH: a Go result stored after that read must wake it.
func TestInteropPythonGetWakesOnGoStore(t *testing.T) {
	testenv.RequireCelery(t)
	r, b := bkBackend(t, protocol.BackendOptions{})
	id := protocol.NewID()
	key := b.TaskKey(id)

	mon := bkMonitor(t, r)
	const script = `
import sys, json
from celery.result import AsyncResult
from wireapp import app
print("result", json.dumps(AsyncResult(sys.argv[1], app=app).get(timeout=30)), flush=True)
`
	py := testenv.Start(t, "", testenv.PythonEnv(t, r.URL()), testenv.PythonBin, "-c", script, id)
	// Wait until Python has subscribed and then read the (missing) key.
	mon.waitFor(t, fmt.Sprintf(`"SUBSCRIBE" %q`, key))
	mon.waitFor(t, fmt.Sprintf(`"GET" %q`, key))

	ctx := bkCtx(t, 30*time.Second)
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: id, State: protocol.StateSuccess, Result: map[string]any{"ok": "✓"}}); err != nil {
		t.Fatal(err)
	}
	if code, ok := py.Wait(40 * time.Second); !ok || code != 0 {
		t.Fatalf("python get() did not return (exit %d, exited=%v):\n%s", code, ok, py.Output())
	}
	if out := py.Output(); !strings.Contains(out, `result {"ok": "\u2713"}`) {
		t.Fatalf("python got:\n%s", out)
	}
}

// bkMonitorConn collects MONITOR lines.
type bkMonitorConn struct {
	mu    sync.Mutex
	lines []string
}

func bkMonitor(t testing.TB, r *testenv.Redis) *bkMonitorConn {
	t.Helper()
	c := r.Conn()
	if err := c.Send("MONITOR"); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if ok, err := redis.String(c.Receive()); err != nil || ok != "OK" {
		t.Fatalf("MONITOR: %q %v", ok, err)
	}
	m := &bkMonitorConn{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			line, err := redis.String(c.Receive())
			if err != nil {
				return
			}
			m.mu.Lock()
			m.lines = append(m.lines, line)
			m.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return m
}

// waitFor waits until a monitored command line contains substr.
func (m *bkMonitorConn) waitFor(t testing.TB, substr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		for _, l := range m.lines {
			if strings.Contains(l, substr) {
				m.mu.Unlock()
				return
			}
		}
		m.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("redis never saw %s", substr)
}
