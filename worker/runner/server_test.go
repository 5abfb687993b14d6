package runner

// In-process tests of the Server against a real redis-server, with the Go
// protocol client as producer: the outcome paths Python fixtures cannot
// provoke (panics, hard limits, Forward, ignore_result, max retries,
// prefetch, forced shutdown).

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/internal/clock"
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
	return startServerOn(t, testenv.StartRedis(t), cfg, mux)
}

// startServerOn is startServer on a Redis the test started (for a
// transport of its own that must talk to the same one).
func startServerOn(t *testing.T, r *testenv.Redis, cfg Config, mux *Mux) *harness {
	t.Helper()
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

// do runs a Redis command the test needs to succeed.
func (h *harness) do(cmd string, args ...any) {
	h.t.Helper()
	c := h.redis.Conn()
	defer c.Close()
	if _, err := c.Do(cmd, args...); err != nil {
		h.t.Fatalf("redis %s %v: %v", cmd, args, err)
	}
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

// fetchersParked reports whether every fetch loop is parked in waitFor,
// waiting for room to fetch, and how many messages are held at that
// moment. While they are parked no fetch can start until a task finishes
// or the pool changes, so a test reads a count that cannot grow instead of
// sleeping to give a wrong fetch time to show.
func (h *harness) fetchersParked() (parked bool, held int) {
	s := h.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parked[fetchWaiter] == s.fetchers(), len(s.held)
}

// waitParked waits until every fetch loop is parked and returns how many
// messages are held then.
func (h *harness) waitParked() int {
	h.t.Helper()
	var held int
	h.waitFor("the fetch loops to wait for room", 10*time.Second, func() bool {
		parked, n := h.fetchersParked()
		held = n
		return parked
	})
	return held
}

// encodedTask is a no-argument task message for queue and its envelope,
// for tests that put messages straight onto a list.
func encodedTask(tb testing.TB, task, queue string) (*protocol.Message, []byte) {
	tb.Helper()
	m, err := protocol.NewTaskMessage(task, nil, nil, protocol.SendOptions{Queue: queue}, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	env, err := protocol.Encode(m)
	if err != nil {
		tb.Fatal(err)
	}
	return m, env
}

// fakeClock is a clock.Fake for a server under test, started at a whole
// second so that ETAs survive their ISO format exactly.
func fakeClock() *clock.Fake { return clock.NewFake(time.Now().Truncate(time.Second)) }

// armed waits until the worker has a timer armed for at, i.e. waits for
// that moment.
func armed(t *testing.T, clk *clock.Fake, at time.Time, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilTimer(ctx, at); err != nil {
		t.Fatalf("no timer armed for %s at %s; armed: %v", what, at, clk.Timers())
	}
}

// stillArmed reports whether a timer for at has not fired yet.
func stillArmed(clk *clock.Fake, at time.Time) bool {
	return slices.ContainsFunc(clk.Timers(), at.Equal)
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
	hung := make(chan struct{})
	mux.HandleFunc("t.hang", func(context.Context, *Task) (any, error) {
		<-hung // ignores its context on purpose
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
	clk := fakeClock()
	h := startServer(t, Config{Queues: []string{"out"}, Concurrency: 2, Events: true, Clock: clk}, mux)
	t.Cleanup(func() { close(hung) }) // before the server stops, should the limit not have freed it

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

	// The hard limit fires one second of the worker's clock after the
	// handler starts (the clock has not moved: at its start), not a
	// nanosecond sooner.
	start := time.Now()
	limit := clk.Now().Add(time.Second)
	id := h.send("t.hang", protocol.SendOptions{TimeLimit: time.Second})
	armed(t, clk, limit, "the hard time limit")
	clk.Advance(time.Second - time.Nanosecond)
	if !stillArmed(clk, limit) {
		t.Fatal("the hard time limit fired before it was due")
	}
	// STARTED follows the start in the next group commit.
	h.waitFor("a task within its hard time limit to be STARTED", 10*time.Second, func() bool {
		st, _ := h.client.Result(id).State(context.Background())
		return st == protocol.StateStarted
	})
	clk.Advance(time.Nanosecond)
	m = h.wait(id)
	exc := excOf(t, m)
	if m.Status != protocol.StateFailure || exc["exc_type"] != "TimeLimitExceeded" || !strings.Contains(string(m.Result), `"exc_message":[1]`) ||
		m.Traceback != nil {
		t.Errorf("hard limit: %s %s", m.Status, m.Result)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("the hard time limit did not free the task: took %s", time.Since(start))
	}

	id = h.send("t.forward", protocol.SendOptions{})
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
	// No need to wait longer: every write a task makes (STARTED, custom
	// states, the result) precedes its ack or lands in the same Lua call,
	// so a result stored despite ignore_result would be there already.
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
	// Once the fetch loop waits for room, it takes nothing more until the
	// running task ends: what is held then is all it will hold.
	if n := h.waitParked(); n != 2 {
		t.Errorf("the fetch loop stopped with %d messages held; want 2", n)
	}
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

// finishGate is the Redis transport with every commit that settles a
// task (CommitFinish) held until release is closed: finished tasks pile
// up waiting for their result and ack, as they would behind a slow Redis.
type finishGate struct {
	Transport
	release chan struct{}
}

func (g *finishGate) Commit(ctx context.Context, ops []protocol.CommitOp) ([]protocol.CommitStatus, error) {
	if slices.ContainsFunc(ops, func(op protocol.CommitOp) bool { return op.Kind == protocol.CommitFinish }) {
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Transport.Commit(ctx, ops)
}

// Finished tasks whose commit is still in flight do not hold back the next
// fetch (they hoard no work), but only up to an allowance as large as the
// prefetch limit, so a stalled commit cannot make the worker take the
// whole queue.
func TestServerFinishingTasksHaveTheirOwnAllowance(t *testing.T) {
	t.Parallel()
	gate := &finishGate{release: make(chan struct{})}
	r := testenv.StartRedis(t)
	mux := NewMux()
	mux.HandleFunc("t.noop", func(context.Context, *Task) (any, error) { return "done", nil })
	cfg := Config{Queues: []string{"allow"}, Concurrency: 1, Prefetch: -1}
	cfg.NewTransport = func(tc TransportConfig) (Transport, error) {
		pool, err := protocol.NewPool(r.URL())
		if err != nil {
			return nil, err
		}
		inner := Config{Hostname: tc.Hostname, Queues: tc.Queues, VisibilityTimeout: tc.VisibilityTimeout,
			ResultExpires: tc.ResultExpires, Logger: tc.Logger}
		gate.Transport = newRedisTransport(inner, pool, 0)
		return gate, nil
	}
	h := startServerOn(t, r, cfg, mux)
	var ids []string
	for range 5 {
		ids = append(ids, h.send("t.noop", protocol.SendOptions{}))
	}
	// The limit is 1 (one slot, no prefetch). The first task finishes and
	// waits for its commit; a second is fetched and runs meanwhile; once it
	// too waits, two finishing tasks are over the allowance of one, and
	// the fetch loop waits.
	var held int
	h.waitFor("two finished tasks awaiting their commit, and the fetch loop waiting for room", 10*time.Second, func() bool {
		parked, n := h.fetchersParked()
		h.srv.mu.Lock()
		finishing := h.srv.committing
		h.srv.mu.Unlock()
		held = n
		return parked && finishing == 2
	})
	if held != 2 {
		t.Errorf("the fetch loop stopped with %d messages held; want 2 (two finished, awaiting their commit)", held)
	}
	if held, waiting := h.redisInt("ZCARD", "unacked_index"), h.redisInt("LLEN", "allow"); held != 2 || waiting != 3 {
		t.Errorf("held %d, waiting %d; want 2 held and 3 left in the queue", held, waiting)
	}
	close(gate.release)
	for _, id := range ids {
		if m := h.wait(id); m.Status != protocol.StateSuccess {
			t.Errorf("task %s: %s", id, m.Status)
		}
	}
}

func TestServerForcedShutdownRequeues(t *testing.T) {
	t.Parallel()
	mux := NewMux()
	stubborn := make(chan struct{})
	mux.HandleFunc("t.stubborn", func(context.Context, *Task) (any, error) {
		<-stubborn // ignores its context on purpose
		return nil, errors.New("should have been abandoned")
	})
	const grace = 500 * time.Millisecond
	clk := fakeClock()
	h := startServer(t, Config{Queues: []string{"sd"}, ShutdownGrace: grace, Clock: clk}, mux)
	t.Cleanup(func() { close(stubborn) }) // before the server stops, should the test end early
	running := h.send("t.stubborn", protocol.SendOptions{})
	h.send("t.stubborn", protocol.SendOptions{Countdown: time.Hour})
	h.waitFor("task started", 10*time.Second, func() bool {
		st, _ := h.client.Result(running).State(context.Background())
		return st == protocol.StateStarted
	})
	h.waitFor("ETA task held", 10*time.Second, func() bool { return h.redisInt("ZCARD", "unacked_index") == 2 })
	// The grace period runs on the worker's clock from the shutdown: the
	// worker keeps waiting for the running task until it is over, not a
	// nanosecond less.
	start := time.Now()
	graceOver := clk.Now().Add(grace)
	h.cancel()
	armed(t, clk, graceOver, "the end of the shutdown grace period")
	clk.Advance(grace - time.Nanosecond)
	if !stillArmed(clk, graceOver) {
		t.Fatal("the grace period ended early")
	}
	select {
	case <-h.done:
		t.Fatal("Run returned within the grace period, with a task still running")
	default:
	}
	clk.Advance(time.Nanosecond)
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
	// No need to watch for longer: the republish and the ack are one step
	// (Broker.Forward), done before the worker forgets the message, so a
	// copy published anyway would be there already.
	if n := h.redisInt("LLEN", "rq") + h.redisInt("ZCARD", "unacked_index"); n != 0 {
		t.Fatalf("%d copies of the retried task were published although the original was no longer held", n)
	}
}

// A first delivery's start (count and STARTED) goes out in a commit of
// its own while the handler runs, and a task that ends first withdraws
// it; one already on its way is written only while the message is held,
// so it never lands after the outcome. A STARTED written after a FAILURE
// would replace it (only a SUCCESS is kept over a later state), so failing
// tasks show a slip at once: each task's published states must be [final]
// or [STARTED, final], and the stored state the final one. A count written
// after the ack would stay behind until its TTL: none may be left.
func TestServerStartedNeverFollowsTheOutcome(t *testing.T) {
	t.Parallel()
	mux := NewMux()
	mux.HandleFunc("t.ok", func(context.Context, *Task) (any, error) { return "ok", nil })
	mux.HandleFunc("t.fail", func(context.Context, *Task) (any, error) { return nil, errors.New("failed at once") })
	h := startServer(t, Config{Queues: []string{"order"}, Concurrency: 8}, mux)

	c := h.redis.Conn()
	psc := redis.PubSubConn{Conn: c}
	if err := psc.PSubscribe("celery-task-meta-*"); err != nil {
		t.Fatal(err)
	}
	if _, ok := psc.Receive().(redis.Subscription); !ok {
		t.Fatal("no psubscribe confirmation")
	}
	seen := map[string][]protocol.State{}
	const n = 400
	final := map[string]protocol.State{}
	for i := range n {
		name, want := "t.ok", protocol.StateSuccess
		if i%2 == 1 {
			name, want = "t.fail", protocol.StateFailure
		}
		final[h.send(name, protocol.SendOptions{})] = want
	}
	for done := 0; done < n; {
		m, ok := psc.ReceiveWithTimeout(30 * time.Second).(redis.Message)
		if !ok {
			t.Fatalf("%d of %d tasks ended before the results stopped coming", done, n)
		}
		var meta struct {
			Status protocol.State
			TaskID string `json:"task_id"`
		}
		if err := json.Unmarshal(m.Data, &meta); err != nil {
			t.Fatal(err)
		}
		seen[meta.TaskID] = append(seen[meta.TaskID], meta.Status)
		if meta.Status != protocol.StateStarted {
			done++
		}
	}
	c.Close()
	withStarted := 0
	for id, want := range final {
		got := seen[id]
		switch {
		case slices.Equal(got, []protocol.State{want}):
		case slices.Equal(got, []protocol.State{protocol.StateStarted, want}):
			withStarted++
		default:
			t.Errorf("task %s published %v; want [%s] or [STARTED %s]", id, got, want, want)
		}
		if m := h.wait(id); m.Status != want {
			t.Errorf("task %s is stored as %s; want %s", id, m.Status, want)
		}
	}
	if left := h.redisInt("EVAL", "return #redis.call('KEYS', 'celery.deliveries.*')", 0); left != 0 {
		t.Errorf("%d delivery counts left behind by finished tasks", left)
	}
	t.Logf("%d of %d tasks published STARTED before their outcome; the rest ended before it went out", withStarted, n)
}

// commitRecorder is a Transport that records each commit's ops.
type commitRecorder struct {
	Transport
	mu  sync.Mutex
	ops []protocol.CommitOp
}

func (c *commitRecorder) Commit(_ context.Context, ops []protocol.CommitOp) ([]protocol.CommitStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops = append(c.ops, ops...)
	return make([]protocol.CommitStatus, len(ops)), nil
}

// A request withdrawn before a committer takes it is never committed nor
// answered; one taken cannot be withdrawn and is answered.
func TestCommitterSkipsWithdrawnRequests(t *testing.T) {
	rec := &commitRecorder{}
	c := newCommitter(&Server{tr: rec, log: zerolog.Nop()})
	ctx := context.Background()
	withdrawn := &commitReq{ops: []protocol.CommitOp{{Kind: protocol.CommitStart, Tag: "withdrawn"}}, done: make(chan commitReply, 1)}
	kept := &commitReq{ops: []protocol.CommitOp{{Kind: protocol.CommitStart, Tag: "kept"}}, done: make(chan commitReply, 1)}
	for _, r := range []*commitReq{withdrawn, kept} {
		if !c.submit(ctx, r) {
			t.Fatal("submit refused before stop")
		}
	}
	if !withdrawn.withdraw() {
		t.Fatal("a queued request could not be withdrawn")
	}
	c.start(ctx)
	if rep := <-kept.done; rep.err != nil {
		t.Fatal(rep.err)
	}
	if kept.withdraw() {
		t.Error("a committed request was withdrawn")
	}
	c.stop()
	if len(withdrawn.done) != 0 {
		t.Error("the withdrawn request was answered")
	}
	if len(rec.ops) != 1 || rec.ops[0].Tag != "kept" {
		t.Errorf("committed %v; want only the kept request's op", rec.ops)
	}
}
