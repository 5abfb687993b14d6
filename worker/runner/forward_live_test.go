package runner

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/fleet"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// TestForwardOnlyToLive: a worker never forwards into a queue no live
// worker consumes; it fails the task saying what to start. Once a live
// Python worker consumes the queue, forwarding works again and the Python
// worker finishes the task (the mixed fleet keeps working).
func TestForwardOnlyToLive(t *testing.T) {
	mux := NewMux()
	mux.HandleFunc("t.needs_python", func(context.Context, *Task) (any, error) {
		return nil, &ForwardError{Queue: "celery", Reason: "this worker cannot do it", Remedy: "start a Python worker on \"celery\""}
	})
	live := new(liveFleet)
	h := startServer(t, Config{Queues: []string{"gpu"}, ForwardUnknown: "celery", LiveConsumers: live.consumers}, mux)
	live.start(h)

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

	testenv.RequireCelery(t)
	testenv.StartCeleryWorker(t, h.redis.URL(), "diagapp", "-Q", "celery", "-c", "1", "-n", "py@%h")
	h.waitFor("the Python worker on celery in the worker's fleet view", 60*time.Second, func() bool {
		list, _ := live.dir.Load().Consumers(context.Background(), "celery", false)
		return len(list) == 1 && strings.HasPrefix(list[0].Hostname, "py@")
	})
	m := h.wait(h.send("diag.echo", protocol.SendOptions{}, "hello"))
	if m.Status != protocol.StateSuccess || !strings.Contains(string(m.Result), `"hello"`) || !strings.Contains(string(m.Result), "py@") {
		t.Fatalf("forwarded to a live Python worker: %s %s", m.Status, m.Result)
	}
}

// TestForwardNeedsAnAcceptingConsumer: with ForwardError.Accept, a live
// consumer that cannot finish the task (here: another Go worker without a
// transcriber) does not count; the task fails naming it and what it lacks.
func TestForwardNeedsAnAcceptingConsumer(t *testing.T) {
	mux := NewMux()
	mux.HandleFunc("t.needs_transcript", func(context.Context, *Task) (any, error) {
		return nil, &ForwardError{Queue: "celery", Reason: "no transcriber here", Remedy: "start whisper", Accept: acceptFleetWorker(fleet.Worker.CanTranscribe)}
	})
	live := new(liveFleet)
	h := startServer(t, Config{Queues: []string{"gpu"}, LiveConsumers: live.consumers}, mux)
	live.start(h)
	other, err := NewServer(Config{Queues: []string{"celery"}, Hostname: "other@test", RedisURL: h.redis.URL(),
		Info:   map[string]any{"transcriber": map[string]any{"available": false, "reason": "built without whisper tag"}},
		Logger: zerolog.Nop()}, NewMux())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = other.Run(ctx) }()
	defer func() { cancel(); <-done }()
	h.waitFor("the other Go worker and its capabilities in the fleet view", 30*time.Second, func() bool {
		list, _ := live.dir.Load().Consumers(context.Background(), "celery", false)
		return len(list) == 1 && list[0].Capabilities != nil
	})

	m := h.wait(h.send("t.needs_transcript", protocol.SendOptions{}))
	exc := excOf(t, m)
	msg, _ := exc["exc_message"].([]any)
	want := `t.needs_transcript: no transcriber here, and no live worker on queue "celery" can take it (other@test: no transcriber: built without whisper tag); start whisper`
	if m.Status != protocol.StateFailure || len(msg) != 1 || msg[0] != want {
		t.Fatalf("%s %s, want FAILURE %q", m.Status, m.Result, want)
	}
}

// liveFleet gives a test server the fleet directory the MoRAG worker wires
// into Config.LiveConsumers (worker/tasks.StartLiveFleet), on the harness's
// Redis: the server is made before that Redis is known, so the directory
// comes after it.
type liveFleet struct {
	dir atomic.Pointer[fleet.Directory]
}

func (l *liveFleet) start(h *harness) {
	h.t.Helper()
	pool, err := protocol.NewPool(h.redis.URL())
	if err != nil {
		h.t.Fatal(err)
	}
	dir := fleet.New(pool, fleet.Options{Refresh: 15 * time.Second, Logger: zerolog.Nop(), GoSWIdents: []string{h.srv.cfg.SWIdent}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = dir.Run(ctx) }()
	h.t.Cleanup(func() { cancel(); <-done; pool.Close() })
	l.dir.Store(dir)
}

func (l *liveFleet) consumers(ctx context.Context, queue string) ([]WorkerInfo, error) {
	dir := l.dir.Load()
	if dir == nil {
		return nil, errors.New("the test's fleet directory has not started")
	}
	list, err := dir.Consumers(ctx, queue, true)
	out := make([]WorkerInfo, len(list))
	for i, w := range list {
		out[i] = WorkerInfo{Hostname: w.Hostname, Detail: w}
	}
	return out, err
}

func acceptFleetWorker(accept func(fleet.Worker) (bool, string)) func(WorkerInfo) (bool, string) {
	return func(w WorkerInfo) (bool, string) {
		fw, _ := w.Detail.(fleet.Worker)
		return accept(fw)
	}
}
