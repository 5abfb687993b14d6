package runner

// Waits on the worker's clock (Config.Clock), each shown exact with a
// clock.Fake: armed for its moment, still waiting a nanosecond before it,
// over at it.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/clock"
	"morag-gpu/protocol"
)

func TestServerRunsETATaskAtItsETA(t *testing.T) {
	t.Parallel()
	mux := NewMux()
	mux.HandleFunc("t.eta", func(context.Context, *Task) (any, error) { return "ran", nil })
	clk := fakeClock()
	h := startServer(t, Config{Queues: []string{"eta"}, Clock: clk}, mux)
	eta := clk.Now().Add(10 * time.Minute)
	id := h.send("t.eta", protocol.SendOptions{ETA: eta})
	armed(t, clk, eta, "the task's ETA")
	clk.Advance(10*time.Minute - time.Nanosecond)
	if !stillArmed(clk, eta) {
		t.Fatal("the ETA wait ended early")
	}
	if st, _ := h.client.Result(id).State(context.Background()); st != protocol.StatePending {
		t.Fatalf("a task before its ETA is %s; want PENDING", st)
	}
	clk.Advance(time.Nanosecond)
	if m := h.wait(id); m.Status != protocol.StateSuccess || string(m.Result) != `"ran"` {
		t.Errorf("ETA task at its ETA: %s %s", m.Status, m.Result)
	}
}

func TestServerSoftTimeLimitOnTheWorkersClock(t *testing.T) {
	t.Parallel()
	quit := make(chan struct{})
	mux := NewMux()
	mux.HandleFunc("t.soft", func(ctx context.Context, _ *Task) (any, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-quit:
			return nil, errors.New("the test ended first")
		}
	})
	clk := fakeClock()
	h := startServer(t, Config{Queues: []string{"soft"}, Clock: clk}, mux)
	// Run waits for the task through a grace period that only the test's
	// clock can end: a test that fails early ends the task instead.
	t.Cleanup(func() { close(quit) })
	soft, hard := clk.Now().Add(2*time.Second), clk.Now().Add(5*time.Second)
	id := h.send("t.soft", protocol.SendOptions{SoftTimeLimit: 2 * time.Second, TimeLimit: 5 * time.Second})
	armed(t, clk, soft, "the soft time limit")
	armed(t, clk, hard, "the hard time limit")
	clk.Advance(2*time.Second - time.Nanosecond)
	if !stillArmed(clk, soft) {
		t.Fatal("the soft time limit fired early")
	}
	// STARTED follows the start in the next group commit.
	h.waitFor("a task within its soft time limit to be STARTED", 10*time.Second, func() bool {
		st, _ := h.client.Result(id).State(context.Background())
		return st == protocol.StateStarted
	})
	clk.Advance(time.Nanosecond)
	m := h.wait(id)
	if exc := excOf(t, m); m.Status != protocol.StateFailure || exc["exc_type"] != "SoftTimeLimitExceeded" {
		t.Errorf("soft limit: %s %s", m.Status, m.Result)
	}
}

// leaseObserver reports every lease refresh.
type leaseObserver struct {
	NopObserver
	refreshed chan error
}

func (o *leaseObserver) LeaseRefreshed(_ int, err error) {
	select {
	case o.refreshed <- err:
	default: // nobody is counting: the test has moved on
	}
}

// A task running for longer than the visibility timeout keeps its lease:
// every VisibilityTimeout/3 of the worker's clock its score moves to that
// moment, so no restore takes it, and it runs once.
func TestServerLeaseRefreshedOnTheWorkersClock(t *testing.T) {
	t.Parallel()
	const vt = 9 * time.Second
	var runs atomic.Int32
	release := make(chan struct{})
	mux := NewMux()
	mux.HandleFunc("t.long", func(ctx context.Context, _ *Task) (any, error) {
		runs.Add(1)
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	})
	var releaseOnce sync.Once
	releaseTask := func() { releaseOnce.Do(func() { close(release) }) }
	h, clk, obs, id := runLongTask(t, "lease", vt, mux, releaseTask)
	t0 := clk.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var tag string
	for tg := range h.srv.snapshotTags() {
		tag = tg
	}
	score := func() float64 {
		c := h.redis.Conn()
		defer c.Close()
		f, err := redis.Float64(c.Do("ZSCORE", "unacked_index", tag))
		if err != nil {
			t.Fatalf("the message is no longer held: %v", err)
		}
		return f
	}
	if got, want := score(), float64(t0.Unix()); got != want {
		t.Fatalf("lease score at fetch %f; want the worker's clock, %f", got, want)
	}
	for i := 1; i <= 4; i++ { // to 12 s, past the visibility timeout
		clk.Advance(vt / 3)
		select {
		case err := <-obs.refreshed:
			if err != nil {
				t.Fatalf("refresh %d: %v", i, err)
			}
		case <-ctx.Done():
			t.Fatalf("no lease refresh %d at %s", i, vt/3*time.Duration(i))
		}
		if got, want := score(), float64(t0.Add(vt/3*time.Duration(i)).Unix()); got != want {
			t.Fatalf("lease score after refresh %d: %f; want %f", i, got, want)
		}
	}
	if n := h.redisInt("LLEN", "lease"); n != 0 {
		t.Fatalf("the task was restored to its queue while its lease was kept")
	}
	releaseTask()
	if m := h.wait(id); m.Status != protocol.StateSuccess {
		t.Errorf("long task: %s %s", m.Status, m.Result)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the long task ran %d times; want 1", n)
	}
}

// snapshotTags is the set of delivery tags held.
func (s *Server) snapshotTags() map[string]struct{} {
	out := map[string]struct{}{}
	for _, r := range s.snapshot() {
		out[r.d.Tag] = struct{}{}
	}
	return out
}

// A worker that cannot refresh a running task's lease for longer than the
// visibility timeout of its clock abandons the task: the handler's
// context ends with ErrLeaseLost, and neither a result nor an ack is
// written, leaving the message to the restore. (TestLeaseLapsedExactly
// decides the boundary itself to the nanosecond.)
func TestServerLeaseLostOnTheWorkersClock(t *testing.T) {
	t.Parallel()
	const vt = 9 * time.Second
	causes := make(chan error, 1)
	quit := make(chan struct{})
	mux := NewMux()
	mux.HandleFunc("t.long", func(ctx context.Context, _ *Task) (any, error) {
		select {
		case <-ctx.Done():
			causes <- context.Cause(ctx)
			return "abandoned", nil
		case <-quit:
			return nil, errors.New("the test ended first")
		}
	})
	h, clk, obs, id := runLongTask(t, "lost", vt, mux, func() { close(quit) })
	// The worker's own restore sweep is kept out (it skips while another
	// restorer holds the mutex), so that the message stays where the
	// abandoning worker left it. (The clock has not moved: nothing could
	// be restored yet.)
	h.do("SET", "unacked_mutex", "the-test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if clk.BlockUntilTicker(ctx, checkInterval(vt)) != nil {
		t.Fatal("the lease watcher is not ticking")
	}
	// Refreshes fail from now on: ZADD is refused.
	h.do("ACL", "SETUSER", "default", "-zadd")
	t.Cleanup(func() { h.do("ACL", "SETUSER", "default", "+@all") })
	for i := 1; i <= 3; i++ { // to exactly the visibility timeout
		clk.Advance(vt / 3)
		select {
		case err := <-obs.refreshed:
			if err == nil {
				t.Fatalf("refresh %d succeeded with ZADD refused", i)
			}
		case <-ctx.Done():
			t.Fatalf("no lease refresh %d", i)
		}
	}
	// The first check past the visibility timeout loses the lease.
	clk.Advance(checkInterval(vt))
	select {
	case cause := <-causes:
		if !errors.Is(cause, ErrLeaseLost) {
			t.Fatalf("handler context ended with %v; want ErrLeaseLost", cause)
		}
	case <-ctx.Done():
		t.Fatal("the lease was not declared lost past the visibility timeout")
	}
	// Once the slot is free and nothing is on its way to Redis, whatever
	// the worker meant to write about the task is written.
	h.waitFor("the slot to let go of the task", 10*time.Second, func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		return h.srv.active == 0 && h.srv.committing == 0 && len(h.srv.held) == 0
	})
	if st, _ := h.client.Result(id).State(context.Background()); st != protocol.StateStarted {
		t.Errorf("the abandoned task's state is %s; want STARTED (no result written)", st)
	}
	if n := h.redisInt("ZCARD", "unacked_index"); n != 1 {
		t.Errorf("%d messages in unacked_index; want the abandoned one, not acked", n)
	}
}

// A failed lease refresh is retried soon, not a third of the visibility
// timeout later: a blip at the moment of a refresh costs a fraction of a
// second of the lease, not a third of it.
func TestServerLeaseRetriedSoonAfterAFailure(t *testing.T) {
	t.Parallel()
	const vt = 9 * time.Second
	quit := make(chan struct{})
	mux := NewMux()
	mux.HandleFunc("t.long", func(ctx context.Context, _ *Task) (any, error) {
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-quit:
			return "done", nil
		}
	})
	h, clk, obs, _ := runLongTask(t, "retry", vt, mux, func() { close(quit) })
	t0 := clk.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.do("ACL", "SETUSER", "default", "-zadd")
	t.Cleanup(func() { h.do("ACL", "SETUSER", "default", "+@all") })
	clk.Advance(vt / 3)
	select {
	case err := <-obs.refreshed:
		if err == nil {
			t.Fatal("the refresh succeeded with ZADD refused")
		}
	case <-ctx.Done():
		t.Fatal("no lease refresh at VisibilityTimeout/3")
	}
	h.do("ACL", "SETUSER", "default", "+@all")
	retryAt := t0.Add(vt/3 + 100*time.Millisecond)
	armed(t, clk, retryAt, "the retry of the failed refresh")
	clk.Advance(100 * time.Millisecond)
	select {
	case err := <-obs.refreshed:
		if err != nil {
			t.Fatalf("the retried refresh failed: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the failed refresh was not retried 100 ms later")
	}
	var tag string
	for tg := range h.srv.snapshotTags() {
		tag = tg
	}
	c := h.redis.Conn()
	defer c.Close()
	if got, err := redis.Float64(c.Do("ZSCORE", "unacked_index", tag)); err != nil || got != float64(retryAt.UnixMicro())/1e6 {
		t.Errorf("lease score after the retry %f (%v); want the retry's time %f", got, err, float64(retryAt.UnixMicro())/1e6)
	}
}

// runLongTask starts a server on a fake clock with a lease observer, sends
// it one t.long task and waits until the task runs (STARTED) and the lease
// loop ticks every VisibilityTimeout/3. The clock has not moved since the
// fetch. release ends the task; it runs before the server stops (see the
// soft time limit test), should the test end first.
func runLongTask(t *testing.T, queue string, vt time.Duration, mux *Mux, release func()) (*harness, *clock.Fake, *leaseObserver, string) {
	t.Helper()
	clk := fakeClock()
	obs := &leaseObserver{refreshed: make(chan error, 16)}
	h := startServer(t, Config{Queues: []string{queue}, VisibilityTimeout: vt, Observer: obs, Clock: clk}, mux)
	t.Cleanup(release)
	id := h.send("t.long", protocol.SendOptions{})
	h.waitFor("the task to start", 10*time.Second, func() bool {
		st, _ := h.client.Result(id).State(context.Background())
		return st == protocol.StateStarted
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilTicker(ctx, vt/3); err != nil {
		t.Fatal("the lease loop is not ticking every VisibilityTimeout/3")
	}
	return h, clk, obs, id
}
