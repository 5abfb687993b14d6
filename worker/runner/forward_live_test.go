package runner

import (
	"context"
	"sync"
	"testing"
	"time"

	"morag-gpu/protocol"
)

// stubLive is Config.LiveConsumers with a list the test sets: the runner
// needs only the function (the MoRAG worker wires the fleet directory in,
// tested with real workers in worker/tasks).
type stubLive struct {
	mu   sync.Mutex
	list map[string][]WorkerInfo
}

func (l *stubLive) set(queue string, ws ...WorkerInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.list == nil {
		l.list = map[string][]WorkerInfo{}
	}
	l.list[queue] = ws
}

func (l *stubLive) consumers(_ context.Context, queue string) ([]WorkerInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.list[queue], nil
}

// TestForwardOnlyToLive: a worker never forwards into a queue no live
// worker consumes; it fails the task saying what to start. Once a live
// worker consumes the queue, forwarding works again.
func TestForwardOnlyToLive(t *testing.T) {
	mux := NewMux()
	mux.HandleFunc("t.needs_python", func(context.Context, *Task) (any, error) {
		return nil, &ForwardError{Queue: "celery", Reason: "this worker cannot do it", Remedy: "start a Python worker on \"celery\""}
	})
	live := new(stubLive)
	h := startServer(t, Config{Queues: []string{"gpu"}, ForwardUnknown: "celery", LiveConsumers: live.consumers}, mux)

	for _, c := range []struct{ task, want string }{
		{"diag.echo", `diag.echo: no handler registered for this task name on this worker, and no live worker consumes queue "celery" to hand it to; start a worker that registers diag.echo on "celery"`},
		{"t.needs_python", `t.needs_python: this worker cannot do it, and no live worker consumes queue "celery" to hand it to; start a Python worker on "celery"`},
	} {
		m := h.wait(h.send(c.task, protocol.SendOptions{}, "x"))
		exc := excOf(t, m)
		msg, _ := exc["exc_message"].([]any)
		if m.Status != protocol.StateFailure || exc["exc_type"] != "RuntimeError" || len(msg) != 1 || msg[0] != c.want {
			t.Errorf("%s into a dead queue: %s %s, want FAILURE RuntimeError(%q)", c.task, m.Status, m.Result, c.want)
		}
	}
	if n := h.redisInt("LLEN", "celery"); n != 0 {
		t.Errorf("%d messages forwarded into the dead queue celery", n)
	}
	if n := h.redisInt("ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d failed messages still unacked", n)
	}

	// A live consumer appears: the same task is handed over, with no
	// result of its own here.
	live.set("celery", WorkerInfo{Hostname: "py@host"})
	id := h.send("diag.echo", protocol.SendOptions{}, "hello")
	h.waitFor("the task forwarded to the live consumer's queue", 10*time.Second, func() bool { return h.redisInt("LLEN", "celery") == 1 })
	if n := h.redisInt("EXISTS", "celery-task-meta-"+id); n != 0 {
		t.Errorf("a forwarded task got a result on this worker")
	}
	if n := h.redisInt("ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d forwarded messages still unacked", n)
	}
}

// TestForwardNeedsAnAcceptingConsumer: with ForwardError.Accept, a live
// consumer that cannot finish the task does not count; the task fails
// naming it and what it lacks.
func TestForwardNeedsAnAcceptingConsumer(t *testing.T) {
	mux := NewMux()
	mux.HandleFunc("t.needs_transcript", func(context.Context, *Task) (any, error) {
		return nil, &ForwardError{Queue: "celery", Reason: "no transcriber here", Remedy: "start whisper",
			Accept: func(w WorkerInfo) (bool, string) { return false, "no transcriber: " + w.Detail.(string) }}
	})
	live := new(stubLive)
	live.set("celery", WorkerInfo{Hostname: "other@test", Detail: "built without whisper tag"})
	h := startServer(t, Config{Queues: []string{"gpu"}, LiveConsumers: live.consumers}, mux)

	m := h.wait(h.send("t.needs_transcript", protocol.SendOptions{}))
	exc := excOf(t, m)
	msg, _ := exc["exc_message"].([]any)
	want := `t.needs_transcript: no transcriber here, and no live worker on queue "celery" can take it (other@test: no transcriber: built without whisper tag); start whisper`
	if m.Status != protocol.StateFailure || len(msg) != 1 || msg[0] != want {
		t.Fatalf("%s %s, want FAILURE %q", m.Status, m.Result, want)
	}
	if n := h.redisInt("LLEN", "celery"); n != 0 {
		t.Errorf("%d messages forwarded to a consumer that cannot take them", n)
	}
}
