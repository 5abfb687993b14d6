package runner

// In-process tests of the Server against a real redis-server, with the Go
// protocol client as producer: the outcome paths Python fixtures cannot
// provoke (panics, hard limits, Forward, ignore_result, max retries,
// prefetch, forced shutdown).

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

type harness struct {
	t      *testing.T
	redis  *testenv.Redis
	srv    *Server
	client *protocol.Client
	cancel context.CancelFunc
	done   chan error
}

// startServer runs a Server on a private Redis until the test ends.
func startServer(t *testing.T, cfg Config, mux *Mux) *harness {
	t.Helper()
	r := testenv.StartRedis(t)
	cfg.RedisURL = r.URL()
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	srv, err := NewServer(cfg, mux)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := protocol.NewPool(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	h := &harness{
		t: t, redis: r, srv: srv,
		client: protocol.NewClient(protocol.NewBroker(pool, protocol.BrokerOptions{}), protocol.NewBackend(pool, protocol.BackendOptions{})),
		done:   make(chan error, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- srv.Run(ctx) }()
	t.Cleanup(h.stop)
	h.waitFor("server ready", 10*time.Second, func() bool {
		return h.redisInt("SISMEMBER", "_kombu.binding."+srv.cfg.Queues[0], srv.cfg.Queues[0]+"\x06\x16\x06\x16"+srv.cfg.Queues[0]) == 1
	})
	return h
}

// stop shuts the server down and waits for Run to return.
func (h *harness) stop() {
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run returned %v", err)
		}
		h.done <- nil // later calls return at once
	case <-time.After(60 * time.Second):
		h.t.Errorf("Run did not return within 60s of the shutdown")
	}
}

func (h *harness) send(name string, opts protocol.SendOptions, args ...any) string {
	h.t.Helper()
	if opts.Queue == "" {
		opts.Queue = h.srv.cfg.Queues[0]
	}
	res, err := h.client.Send(context.Background(), name, args, nil, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	return res.ID
}

func (h *harness) wait(id string) *protocol.ResultMeta {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := h.client.Result(id).Wait(ctx)
	if err != nil {
		h.t.Fatalf("waiting for %s: %v", id, err)
	}
	return m
}

func (h *harness) redisInt(cmd string, args ...any) int {
	c := h.redis.Conn()
	defer c.Close()
	n, _ := redis.Int(c.Do(cmd, args...))
	return n
}

func (h *harness) waitFor(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func excOf(t *testing.T, m *protocol.ResultMeta) map[string]any {
	t.Helper()
	var exc map[string]any
	if err := json.Unmarshal(m.Result, &exc); err != nil {
		t.Fatalf("result %s is not an exception: %v", m.Result, err)
	}
	return exc
}

func TestServerOutcomes(t *testing.T) {
	t.Parallel()
	mux := NewMux()
	mux.HandleFunc("t.panic", func(context.Context, *Task) (any, error) { panic("kaboom") })
	mux.HandleFunc("t.hang", func(context.Context, *Task) (any, error) {
		time.Sleep(20 * time.Second) // ignores its context on purpose
		return "late", nil
	})
	mux.HandleFunc("t.forward", func(context.Context, *Task) (any, error) { return nil, Forward("elsewhere", "needs a GPU") })
	mux.HandleFunc("t.forwardself", func(_ context.Context, t *Task) (any, error) { return nil, Forward(t.Queue, "loop") })
	mux.HandleFunc("t.value", func(ctx context.Context, t *Task) (any, error) {
		if err := t.SetState(ctx, "DOWNLOADING", map[string]any{"stage": "downloading_file"}); err != nil {
			return nil, err
		}
		return map[string]any{"ok": true}, nil
	})
	mux.HandleFunc("t.maxretry", func(context.Context, *Task) (any, error) { return nil, Retry(nil, 0, 1) })
	mux.HandleFunc("t.badresult", func(context.Context, *Task) (any, error) { return func() {}, nil })
	h := startServer(t, Config{Queues: []string{"out"}, Concurrency: 2, Events: true}, mux)

	m := h.wait(h.send("t.panic", protocol.SendOptions{}))
	if exc := excOf(t, m); m.Status != protocol.StateFailure || exc["exc_type"] != "RuntimeError" || !strings.Contains(string(m.Result), "kaboom") {
		t.Errorf("panic: %s %s", m.Status, m.Result)
	}
	// The goroutine's stack as Python frames, most recent call last, the
	// panicking handler (in this file) last, then Python's exception line.
	if m.Traceback == nil || !strings.HasPrefix(*m.Traceback, "Traceback (most recent call last):\n  File \"") ||
		!strings.Contains(*m.Traceback, "server_test.go\", line ") ||
		!strings.HasSuffix(*m.Traceback, "in morag-gpu/worker/runner.TestServerOutcomes.func1\nRuntimeError: panic: kaboom\n") {
		t.Errorf("panic traceback should carry the Go stack as Python frames: %v", *m.Traceback)
	}

	start := time.Now()
	m = h.wait(h.send("t.hang", protocol.SendOptions{TimeLimit: time.Second}))
	exc := excOf(t, m)
	if m.Status != protocol.StateFailure || exc["exc_type"] != "TimeLimitExceeded" || !strings.Contains(string(m.Result), `"exc_message":[1]`) ||
		m.Traceback != nil {
		t.Errorf("hard limit: %s %s", m.Status, m.Result)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("the hard time limit did not free the task: took %s", time.Since(start))
	}

	id := h.send("t.forward", protocol.SendOptions{})
	h.waitFor("forwarded copy", 10*time.Second, func() bool { return h.redisInt("LLEN", "elsewhere") == 1 })
	c := h.redis.Conn()
	raw, _ := redis.Bytes(c.Do("LINDEX", "elsewhere", 0))
	c.Close()
	fwd, err := protocol.Decode(raw)
	if err != nil || fwd.ID != id || fwd.Task != "t.forward" {
		t.Errorf("forwarded message: %v %+v", err, fwd)
	}
	if st, _ := h.client.Result(id).State(context.Background()); st != protocol.StatePending && st != protocol.StateStarted {
		t.Errorf("a forwarded task must not get a final state here, got %s", st)
	}

	m = h.wait(h.send("t.forwardself", protocol.SendOptions{}))
	if m.Status != protocol.StateFailure || !strings.Contains(string(m.Result), "loop") {
		t.Errorf("forward to own queue: %s %s", m.Status, m.Result)
	}

	m = h.wait(h.send("t.value", protocol.SendOptions{}))
	if m.Status != protocol.StateSuccess || string(m.Result) != `{"ok":true}` {
		t.Errorf("value: %s %s", m.Status, m.Result)
	}

	id = h.send("t.value", protocol.SendOptions{IgnoreResult: true})
	h.waitFor("ignored task acked", 10*time.Second, func() bool { return h.redisInt("ZCARD", "unacked_index") == 0 && h.redisInt("LLEN", "out") == 0 })
	time.Sleep(200 * time.Millisecond)
	if n := h.redisInt("EXISTS", "celery-task-meta-"+id); n != 0 {
		t.Errorf("ignore_result task stored a result")
	}

	m = h.wait(h.send("t.maxretry", protocol.SendOptions{}))
	if exc := excOf(t, m); m.Status != protocol.StateFailure || exc["exc_type"] != "MaxRetriesExceededError" || exc["exc_module"] != "celery.exceptions" {
		t.Errorf("max retries: %s %s", m.Status, m.Result)
	}

	m = h.wait(h.send("t.badresult", protocol.SendOptions{}))
	if exc := excOf(t, m); m.Status != protocol.StateFailure || exc["exc_type"] != "EncodeError" {
		t.Errorf("unencodable result: %s %s", m.Status, m.Result)
	}

	m = h.wait(h.send("t.unknown", protocol.SendOptions{}))
	if exc := excOf(t, m); m.Status != protocol.StateFailure || exc["exc_type"] != "NotRegistered" || exc["exc_module"] != "celery.exceptions" {
		t.Errorf("unknown task without forwarding: %s %s", m.Status, m.Result)
	}
	if n := h.redisInt("ZCARD", "unacked_index"); n != 0 {
		t.Errorf("%d messages still unacked", n)
	}
}

func TestServerForwardsUnknownTasks(t *testing.T) {
	t.Parallel()
	h := startServer(t, Config{Queues: []string{"gpu"}, ForwardUnknown: "celery"}, NewMux())
	id := h.send("python.only", protocol.SendOptions{}, 1)
	h.waitFor("forwarded unknown task", 10*time.Second, func() bool { return h.redisInt("LLEN", "celery") == 1 })
	c := h.redis.Conn()
	raw, _ := redis.Bytes(c.Do("LINDEX", "celery", 0))
	c.Close()
	m, err := protocol.Decode(raw)
	if err != nil || m.ID != id || m.Task != "python.only" || len(m.Args) != 1 {
		t.Fatalf("forwarded message: %v %+v", err, m)
	}
	h.waitFor("original acked", 10*time.Second, func() bool { return h.redisInt("ZCARD", "unacked_index") == 0 })
}

func TestServerHonoursPrefetch(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	mux := NewMux()
	mux.HandleFunc("t.block", func(ctx context.Context, _ *Task) (any, error) {
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	})
	h := startServer(t, Config{Queues: []string{"pf"}, Concurrency: 1, Prefetch: 1}, mux)
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, h.send("t.block", protocol.SendOptions{}))
	}
	h.waitFor("two messages held", 10*time.Second, func() bool { return h.redisInt("ZCARD", "unacked_index") == 2 })
	time.Sleep(1500 * time.Millisecond) // a fetch loop that ignored the limit would take more by now
	if held, waiting := h.redisInt("ZCARD", "unacked_index"), h.redisInt("LLEN", "pf"); held != 2 || waiting != 3 {
		t.Errorf("held %d, waiting %d; want 1 running + 1 prefetched held and 3 left in the queue", held, waiting)
	}
	close(release)
	for _, id := range ids {
		if m := h.wait(id); m.Status != protocol.StateSuccess {
			t.Errorf("task %s: %s", id, m.Status)
		}
	}
}

func TestServerForcedShutdownRequeues(t *testing.T) {
	t.Parallel()
	mux := NewMux()
	mux.HandleFunc("t.stubborn", func(context.Context, *Task) (any, error) {
		time.Sleep(30 * time.Second)
		return nil, errors.New("should have been abandoned")
	})
	h := startServer(t, Config{Queues: []string{"sd"}, ShutdownGrace: 500 * time.Millisecond}, mux)
	running := h.send("t.stubborn", protocol.SendOptions{})
	h.send("t.stubborn", protocol.SendOptions{Countdown: time.Hour})
	h.waitFor("task started", 10*time.Second, func() bool {
		st, _ := h.client.Result(running).State(context.Background())
		return st == protocol.StateStarted
	})
	h.waitFor("ETA task held", 10*time.Second, func() bool { return h.redisInt("ZCARD", "unacked_index") == 2 })
	start := time.Now()
	h.stop()
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("shutdown took %s with a 500ms grace", d)
	}
	if held, queued := h.redisInt("ZCARD", "unacked_index"), h.redisInt("LLEN", "sd"); held != 0 || queued != 2 {
		t.Errorf("after shutdown: %d held, %d queued; want both tasks back in the queue", held, queued)
	}
	if st, _ := h.client.Result(running).State(context.Background()); st == protocol.StateFailure {
		t.Errorf("an abandoned task must not be failed: it is requeued")
	}
}

// A retry republishes and acks in one step: when the original is no longer
// held (another consumer restored it, so that copy will run), no second
// live copy is published.
func TestServerRetryOfUnheldMessagePublishesNothing(t *testing.T) {
	t.Parallel()
	mux := NewMux()
	var h *harness
	tags := make(chan string, 1)
	mux.HandleFunc("t.lostretry", func(_ context.Context, t *Task) (any, error) {
		c := h.redis.Conn()
		defer c.Close()
		_, _ = c.Do("ZREM", "unacked_index", t.Message.DeliveryTag)
		_, _ = c.Do("HDEL", "unacked", t.Message.DeliveryTag)
		tags <- t.Message.DeliveryTag
		return nil, Retry(errors.New("again"), time.Hour, 5)
	})
	h = startServer(t, Config{Queues: []string{"rq"}}, mux)
	id := h.send("t.lostretry", protocol.SendOptions{})
	tag := <-tags
	h.waitFor("RETRY stored and the original forgotten", 10*time.Second, func() bool {
		st, _ := h.client.Result(id).State(context.Background())
		h.srv.mu.Lock()
		_, held := h.srv.held[tag]
		h.srv.mu.Unlock()
		return st == protocol.StateRetry && !held
	})
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n := h.redisInt("LLEN", "rq") + h.redisInt("ZCARD", "unacked_index"); n != 0 {
			t.Fatalf("%d copies of the retried task were published although the original was no longer held", n)
		}
	}
}
