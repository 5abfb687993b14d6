package redisnet

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// startRedisServer runs redis-server with args (persistence off, loopback
// only unless args say otherwise) and waits until it accepts connections.
func startRedisServer(t *testing.T, args ...string) *testenv.Process {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("SKIP: redis-server not installed (%v); run scripts/setup or `make test`", err)
	}
	base := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--loglevel", "notice"}
	p := testenv.Start(t, "", nil, "redis-server", append(base, args...)...)
	if !p.WaitOutput("Ready to accept connections", 10*time.Second) {
		t.Fatalf("redis-server %v did not start:\n%s", args, p.Output())
	}
	return p
}

// runs counts handler executions per task id, in-process.
type runs struct {
	mu       sync.Mutex
	started  map[string]int
	finished map[string]int
	causes   map[string]error // why a run's context ended early
}

func newRuns() *runs {
	return &runs{started: map[string]int{}, finished: map[string]int{}, causes: map[string]error{}}
}

func (r *runs) get(m map[string]int, id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m[id]
}

func (r *runs) cause(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.causes[id]
}

func (r *runs) count(m map[string]int, id string) {
	r.mu.Lock()
	m[id]++
	r.mu.Unlock()
}

// maxPer returns the largest per-task count of m and the number of tasks.
func (r *runs) maxPer(m map[string]int) (most, tasks int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range m {
		most = max(most, n)
	}
	return most, len(m)
}

// logBuf keeps a worker's log for assertions; a failed test prints it.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuf) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

// waitLog waits until the log contains s.
func (l *logBuf) waitLog(s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !l.contains(s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// startWorker runs a Go worker in this process on redisURL, consuming
// queue with "netsafe.echo" (returns its first argument after delay, or
// after its second argument in seconds), until the test ends. cfg supplies
// the other settings.
func startWorker(t *testing.T, redisURL, queue string, delay time.Duration, rs *runs, cfg runner.Config) *logBuf {
	t.Helper()
	return startWorkerMux(t, redisURL, queue, delay, rs, cfg, nil)
}

// startWorkerMux is startWorker with more tasks: register adds them to the
// worker's mux (nil: none). With cfg.NewTransport set (a gateway-mediated
// worker), redisURL only labels the worker.
func startWorkerMux(t *testing.T, redisURL, queue string, delay time.Duration, rs *runs, cfg runner.Config, register func(*runner.Mux)) *logBuf {
	t.Helper()
	mux := runner.NewMux()
	if register != nil {
		register(mux)
	}
	mux.HandleFunc("netsafe.echo", func(ctx context.Context, task *runner.Task) (any, error) {
		rs.count(rs.started, task.ID)
		d := delay
		if len(task.Args) > 1 {
			if secs, ok := task.Args[1].(json.Number); ok {
				f, _ := secs.Float64()
				d = time.Duration(f * float64(time.Second))
			}
		}
		if d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				rs.mu.Lock()
				rs.causes[task.ID] = context.Cause(ctx)
				rs.mu.Unlock()
				return nil, context.Cause(ctx)
			}
		}
		rs.count(rs.finished, task.ID)
		return task.Args[0], nil
	})
	cfg.Queues = []string{queue}
	cfg.RedisURL = redisURL
	logs := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- worker log ---\n%s", logs)
		}
	})
	cfg.Logger = zerolog.New(logs).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	if cfg.Hostname == "" {
		cfg.Hostname = "netsafe-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "@%h"
	}
	srv, err := runner.NewServer(cfg, mux)
	if err != nil {
		t.Fatalf("NewServer(%s): %v", protocol.RedactURL(redisURL), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }() // owner: this test; stopped by the cleanup below
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(40 * time.Second):
			t.Errorf("worker did not stop within 40s")
		}
	})
	if !logs.waitLog(`"ready."`, 30*time.Second) {
		t.Fatalf("worker did not become ready")
	}
	return logs
}

// client is a Go Celery client on redisURL.
func client(t *testing.T, redisURL string) *protocol.Client {
	t.Helper()
	pool, err := protocol.NewPool(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	return protocol.NewClient(protocol.NewBroker(pool, protocol.BrokerOptions{}), protocol.NewBackend(pool, protocol.BackendOptions{}))
}

// echoRoundTrips sends n netsafe.echo tasks to queue and checks that each
// comes back with its own argument.
func echoRoundTrips(t *testing.T, c *protocol.Client, queue string, n int, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	results := make([]*protocol.AsyncResult, n)
	for i := range results {
		r, err := c.Send(ctx, "netsafe.echo", []any{i}, nil, protocol.SendOptions{Queue: queue})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		results[i] = r
	}
	for i, r := range results {
		raw, err := r.Get(ctx)
		if err != nil {
			t.Fatalf("result %d: %v", i, err)
		}
		var got int
		if err := json.Unmarshal(raw, &got); err != nil || got != i {
			t.Fatalf("result %d = %s, want %d", i, raw, i)
		}
	}
}

// finishedOnce checks that each task finished once across two workers'
// counts, with one SUCCESS and no FAILURE or REVOKED stored: the run that
// lost its lease stored nothing.
func finishedOnce(t *testing.T, ids []string, doneA, doneB map[string]int, states *stateLog) {
	t.Helper()
	for _, id := range ids {
		if doneA[id]+doneB[id] != 1 {
			t.Errorf("task %s finished %d times (first worker %d, second %d), want once", id, doneA[id]+doneB[id], doneA[id], doneB[id])
		}
		if n := states.count(id, "SUCCESS"); n != 1 {
			t.Errorf("task %s: SUCCESS published %d times, want 1 (states %v)", id, n, states.of(id))
		}
		for _, st := range states.of(id) {
			if st == "FAILURE" || st == "REVOKED" {
				t.Errorf("task %s: %s published; the abandoned run must store nothing (states %v)", id, st, states.of(id))
			}
		}
	}
}
