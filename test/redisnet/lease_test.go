package redisnet

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// stateLog records every result state published for every task
// (celery-task-meta-* channels), as a Python AsyncResult would see them.
type stateLog struct {
	mu     sync.Mutex
	states map[string][]string
}

func (l *stateLog) of(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.states[id]...)
}

func (l *stateLog) count(id, state string) int {
	n := 0
	for _, s := range l.of(id) {
		if s == state {
			n++
		}
	}
	return n
}

// recordStates subscribes to every result channel through dial until the
// test ends.
func recordStates(t *testing.T, dial func() (redis.Conn, error)) *stateLog {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	psc := redis.PubSubConn{Conn: c}
	if err := psc.PSubscribe("celery-task-meta-*"); err != nil {
		t.Fatal(err)
	}
	l := &stateLog{states: map[string][]string{}}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() { // owner: this test; the cleanup closes the connection, which ends it
		defer close(done)
		for {
			switch m := psc.Receive().(type) {
			case redis.Subscription:
				select {
				case <-ready:
				default:
					close(ready)
				}
			case redis.Message:
				var v struct {
					Status string `json:"status"`
					TaskID string `json:"task_id"`
				}
				if json.Unmarshal(m.Data, &v) == nil {
					l.mu.Lock()
					l.states[v.TaskID] = append(l.states[v.TaskID], v.Status)
					l.mu.Unlock()
				}
			case error:
				return
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("could not subscribe to the result channels")
	}
	return l
}

// leaseSetup is a Redis, a proxy in front of it that the test can
// partition, worker A behind the proxy, and a publisher and a state
// recorder on Redis directly.
func leaseSetup(t *testing.T, vt time.Duration) (*testenv.Redis, *proxy, *logBuf, *runs, *protocol.Client, *stateLog) {
	r := testenv.StartRedis(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	px := startProxy(t, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", r.Addr()) }, 0, 0)
	rs := newRuns()
	logsA := startWorker(t, "redis://"+px.Addr()+"/0", "lease", 0, rs,
		runner.Config{Hostname: "behind-proxy@%h", VisibilityTimeout: vt})
	states := recordStates(t, func() (redis.Conn, error) { return redis.Dial("tcp", r.Addr()) })
	return r, px, logsA, rs, client(t, r.URL()), states
}

// TestLeaseLostPartitionLongerThanVisibility partitions the worker
// running a task for twice the visibility timeout. It must cancel its
// handler (ErrLeaseLost), store nothing, and leave the task to the
// restore; a second worker runs it; the task ends with exactly one
// SUCCESS and one finished run.
func TestLeaseLostPartitionLongerThanVisibility(t *testing.T) {
	const vt = 2 * time.Second
	r, px, logsA, rs, c, states := leaseSetup(t, vt)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.Send(ctx, "netsafe.echo", []any{"once", 3}, nil, protocol.SendOptions{Queue: "lease"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "worker A to start the task", func() bool { return rs.get(rs.started, res.ID) == 1 })
	px.Pause()
	if !logsA.waitLog("lease lost while the task ran", 3*vt) {
		t.Fatalf("worker A did not declare its lease lost within %s of the partition", 3*vt)
	}
	if cause := rs.cause(res.ID); !errors.Is(cause, runner.ErrLeaseLost) {
		t.Fatalf("handler context cause = %v, want ErrLeaseLost", cause)
	}
	// Worker B, on Redis directly, restores the message once its lease is
	// older than the visibility timeout and runs it.
	startWorker(t, r.URL(), "lease", 0, rs, runner.Config{Hostname: "direct@%h", VisibilityTimeout: vt})
	time.Sleep(vt) // the partition lasts longer than the visibility timeout
	px.Resume()
	raw, err := res.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != `"once"` {
		t.Fatalf("result %s", raw)
	}
	waitFor(t, 5*time.Second, "the recorder to see SUCCESS", func() bool { return states.count(res.ID, "SUCCESS") > 0 })
	// Give worker A time to write anything it still meant to, then count.
	waitFor(t, 10*time.Second, "unacked to empty", func() bool {
		n, _ := redis.Int(r.Do("HLEN", "unacked"), nil)
		return n == 0
	})
	time.Sleep(time.Second)
	if n := rs.get(rs.finished, res.ID); n != 1 {
		t.Errorf("the task finished %d times, want 1", n)
	}
	if n := states.count(res.ID, "SUCCESS"); n != 1 {
		t.Errorf("SUCCESS published %d times, want 1 (states: %v)", n, states.of(res.ID))
	}
	for _, st := range states.of(res.ID) {
		if st != "STARTED" && st != "SUCCESS" {
			t.Errorf("state %s published (all: %v); the abandoned run must store nothing", st, states.of(res.ID))
		}
	}
	if !strings.Contains(logsA.String(), "ErrLeaseLost") && !strings.Contains(logsA.String(), "lease lost") {
		t.Errorf("worker A's log does not say the lease was lost")
	}
	t.Logf("runs started %d, finished %d; states %v", rs.get(rs.started, res.ID), rs.get(rs.finished, res.ID), states.of(res.ID))
}

// TestPartitionShorterThanVisibilityRunsOnce partitions the worker for
// less than the visibility timeout mid-task: the lease survives, the task
// runs once and nothing is restored.
func TestPartitionShorterThanVisibilityRunsOnce(t *testing.T) {
	const vt = 3 * time.Second
	_, px, logsA, rs, c, states := leaseSetup(t, vt)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.Send(ctx, "netsafe.echo", []any{"short", 5}, nil, protocol.SendOptions{Queue: "lease"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "worker A to start the task", func() bool { return rs.get(rs.started, res.ID) == 1 })
	time.Sleep(500 * time.Millisecond)
	px.Pause()
	time.Sleep(vt / 2)
	px.Resume()
	if _, err := res.Get(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the recorder to see SUCCESS", func() bool { return states.count(res.ID, "SUCCESS") > 0 })
	if n := rs.get(rs.started, res.ID); n != 1 {
		t.Errorf("the task started %d times, want 1", n)
	}
	if n := states.count(res.ID, "SUCCESS"); n != 1 {
		t.Errorf("SUCCESS published %d times, want 1 (states %v)", n, states.of(res.ID))
	}
	if logsA.contains("lease lost") {
		t.Errorf("worker A declared its lease lost after a partition shorter than the visibility timeout")
	}
}
