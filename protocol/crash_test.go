package protocol_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/clock"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// TestCrashHelperProcess is not a test: crash tests re-execute the test
// binary with PROTOCOL_CRASH_HELPER=1 to get a real Go consumer process they
// can SIGKILL. It counts runs (INCR go:runs:<id>) and completions.
func TestCrashHelperProcess(t *testing.T) {
	if os.Getenv("PROTOCOL_CRASH_HELPER") != "1" {
		t.Skip("helper process for the crash tests; runs only when re-executed by them")
	}
	ctx := context.Background()
	vt, _ := strconv.ParseFloat(os.Getenv("HELPER_VT"), 64)
	sleep, _ := strconv.ParseFloat(os.Getenv("HELPER_SLEEP"), 64)
	pool, err := protocol.NewPool(os.Getenv("REDIS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	b := protocol.NewBroker(pool, protocol.BrokerOptions{VisibilityTimeout: time.Duration(vt * float64(time.Second))})
	c := b.NewConsumer(os.Getenv("HELPER_QUEUE"))
	conn := pool.Get()
	defer conn.Close()
	fmt.Println("helper: consuming")
	lastRestore := time.Time{}
	for {
		if time.Since(lastRestore) > 500*time.Millisecond {
			if _, err := b.RestoreExpired(ctx); err != nil {
				t.Fatal(err)
			}
			lastRestore = time.Now()
		}
		d, err := c.Fetch(ctx, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if d == nil || d.Err != nil {
			continue
		}
		_, _ = conn.Do("INCR", "go:runs:"+d.Message.ID)
		time.Sleep(time.Duration(sleep * float64(time.Second)))
		_, _ = conn.Do("INCR", "go:done:"+d.Message.ID)
		if _, err := b.Ack(ctx, d.Tag); err != nil {
			t.Fatal(err)
		}
	}
}

func startHelper(t *testing.T, r *testenv.Redis, queue string, vt, sleep float64) *testenv.Process {
	t.Helper()
	p := testenv.Start(t, "", []string{
		"PROTOCOL_CRASH_HELPER=1", "REDIS_URL=" + r.URL(), "HELPER_QUEUE=" + queue,
		"HELPER_VT=" + strconv.FormatFloat(vt, 'f', -1, 64), "HELPER_SLEEP=" + strconv.FormatFloat(sleep, 'f', -1, 64),
	}, os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.v")
	if !p.WaitOutput("helper: consuming", 20*time.Second) {
		t.Fatalf("helper did not start:\n%s", p.Output())
	}
	return p
}

func waitInt(t *testing.T, r *testenv.Redis, key string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, _ := redis.Int(r.Conn().Do("GET", key))
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d, want %d", key, n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killMidTask publishes wire.sleep to queue, lets a Go consumer process take
// it and SIGKILLs the process while the task runs.
func killMidTask(t *testing.T, r *testenv.Redis, queue string) *protocol.Message {
	t.Helper()
	pool, _ := protocol.NewPool(r.URL())
	defer pool.Close()
	m := &protocol.Message{Task: "wire.sleep", RoutingKey: queue, Args: []any{0.1}}
	if err := protocol.NewBroker(pool, protocol.BrokerOptions{}).PublishMessage(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	p := startHelper(t, r, queue, 3600, 3600)
	waitInt(t, r, "go:runs:"+m.ID, 1, 20*time.Second)
	p.Kill()
	if n := r.Do("HLEN", "unacked").(int64); n != 1 {
		t.Fatalf("after SIGKILL unacked holds %d messages, want 1", n)
	}
	return m
}

func TestCrashedGoConsumerTaskRestoredByGo(t *testing.T) {
	r := testenv.StartRedis(t)
	m := killMidTask(t, r, "crashq")
	// A restarting consumer with a 2 s visibility timeout restores and runs it.
	startHelper(t, r, "crashq", 2, 0)
	waitInt(t, r, "go:done:"+m.ID, 1, 30*time.Second)
	time.Sleep(1500 * time.Millisecond) // would expose a second restore
	waitInt(t, r, "go:runs:"+m.ID, 2, time.Second)
	waitInt(t, r, "go:done:"+m.ID, 1, time.Second)
	if n := r.Do("HLEN", "unacked").(int64); n != 0 {
		t.Fatalf("unacked holds %d messages after the rerun, want 0", n)
	}
}

func TestCrashedGoConsumerTaskRestoredByPython(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	m := killMidTask(t, r, "crashq")
	time.Sleep(2100 * time.Millisecond) // older than the Python side's visibility timeout
	w := testenv.Start(t, "", testenv.PythonEnv(t, r.URL(), "VISIBILITY_TIMEOUT=2"), testenv.PythonBin,
		"-m", "celery", "-A", "wireapp", "worker", "-Q", "crashq", "-c", "1", "--without-mingle", "--without-gossip", "--loglevel=INFO")
	waitInt(t, r, "wire:runs:"+m.ID, 1, 60*time.Second)
	waitInt(t, r, "wire:done:"+m.ID, 1, 30*time.Second)
	_ = w
	if n, _ := redis.Int(r.Conn().Do("GET", "go:done:"+m.ID)); n != 0 {
		t.Fatal("the killed Go consumer completed the task")
	}
}

// TestLeaseOutlivesVisibilityTimeout holds a message for 10 s while a Python
// worker with a 3 s visibility timeout runs on the same queue and both
// kombu's and a second Go broker's restores run every second: the touched
// message is never restored, the untouched control message is.
func TestLeaseOutlivesVisibilityTimeout(t *testing.T) {
	testenv.RequireCelery(t)
	ctx := context.Background()
	s := newBrStack(t, protocol.BrokerOptions{VisibilityTimeout: 3 * time.Second})
	s.publish(t, "leaseq", "wire.sleep", 0)
	control := &protocol.Message{Task: "wire.sleep", RoutingKey: "leaseq", Args: []any{0}}
	c := s.broker.NewConsumer("leaseq")
	dl := fetch(t, c)
	if err := s.broker.PublishMessage(ctx, control); err != nil {
		t.Fatal(err)
	}
	fetch(t, c) // held and never touched: the negative control
	w := testenv.Start(t, "", testenv.PythonEnv(t, s.r.URL(), "VISIBILITY_TIMEOUT=3"), testenv.PythonBin,
		"-m", "celery", "-A", "wireapp", "worker", "-Q", "leaseq", "-c", "1", "--without-mingle", "--without-gossip", "--loglevel=INFO")
	restorer := testenv.Start(t, "", testenv.PythonEnv(t, s.r.URL(), "VISIBILITY_TIMEOUT=3"), testenv.PythonBin, "-c", `
import time
from wireapp import app
for _ in range(12):
    with app.connection() as conn:
        conn.default_channel.qos.restore_visible()
    time.sleep(1)
print("restorer done")
`)
	// A second Go process's restorer, with the same 3 s timeout, sweeps too.
	pool2, err := protocol.NewPool(s.r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool2.Close()
	other := protocol.NewBroker(pool2, protocol.BrokerOptions{VisibilityTimeout: 3 * time.Second})
	// A ticker, not a sleep after the work, keeps the touches 250 ms apart
	// (the runner touches every third of the timeout; here a stall of up to
	// 2.75 s on a loaded machine still leaves the lease fresh): the sweep's
	// own latency never adds to the gap the 3 s visibility timeout covers. (Python reads its own wall
	// clock, so this test keeps real time; the exact, clock-driven version
	// of the Go side is TestLeaseOutlivesVisibilityTimeoutExact.)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := s.broker.Touch(ctx, dl.Tag); err != nil {
			t.Fatal(err)
		}
		if _, err := other.RestoreExpired(ctx); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	if !restorer.WaitOutput("restorer done", 30*time.Second) {
		t.Fatalf("python restorer did not finish:\n%s", restorer.Output())
	}
	waitInt(t, s.r, "wire:runs:"+control.ID, 1, 30*time.Second)
	if n, _ := redis.Int(s.r.Conn().Do("GET", "wire:runs:"+dl.Message.ID)); n != 0 {
		t.Fatalf("the leased message ran %d times on the Python worker", n)
	}
	if held, _ := s.broker.Held(ctx, dl.Tag); !held {
		t.Fatal("the leased message is no longer held")
	}
	_ = w
}

// TestLeaseOutlivesVisibilityTimeoutExact is the Go side of the test above
// on a fake clock shared by two brokers (lease scores and restore ceilings
// both come from it): a message touched every visibility timeout / 3 is
// never restored over 10 s, while an untouched one is restored exactly
// when its age reaches the timeout and not a microsecond before.
func TestLeaseOutlivesVisibilityTimeoutExact(t *testing.T) {
	ctx := context.Background()
	const vt = 3 * time.Second
	clk := clock.NewFake(time.Now())
	s := newBrStack(t, protocol.BrokerOptions{VisibilityTimeout: vt, Clock: clk})
	other := protocol.NewBroker(s.pool, protocol.BrokerOptions{VisibilityTimeout: vt, Clock: clk})
	leased := s.publish(t, "leaseq", "wire.sleep", 0)
	control := s.publish(t, "leaseq", "wire.sleep", 0)
	c := s.broker.NewConsumer("leaseq")
	dl, dc := fetch(t, c), fetch(t, c)
	if dl.Message.ID != leased.ID || dc.Message.ID != control.ID {
		t.Fatalf("fetched %s, %s; want %s, %s", dl.Message.ID, dc.Message.ID, leased.ID, control.ID)
	}
	for elapsed := time.Duration(0); elapsed < 10*time.Second; elapsed += time.Second {
		// The control's age reaches vt on the sweep at 3 s, exactly; one
		// microsecond (the score's resolution) earlier it is still held.
		wantRestored := 0
		if elapsed == vt {
			wantRestored = 1
			clk.Advance(-time.Microsecond)
			if n, err := other.RestoreExpired(ctx); err != nil || n != 0 {
				t.Fatalf("1 µs before the timeout RestoreExpired = %d, %v; want 0", n, err)
			}
			clk.Advance(time.Microsecond)
		}
		if n, err := other.RestoreExpired(ctx); err != nil || n != wantRestored {
			t.Fatalf("at %v RestoreExpired = %d, %v; want %d", elapsed, n, err, wantRestored)
		}
		if err := s.broker.Touch(ctx, dl.Tag); err != nil { // every vt/3, as the runner does
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	if held, _ := s.broker.Held(ctx, dl.Tag); !held {
		t.Fatal("the leased message is no longer held")
	}
	if held, _ := s.broker.Held(ctx, dc.Tag); held {
		t.Fatal("the untouched control message is still held")
	}
	if got := fetch(t, c); got.Message.ID != control.ID || !got.Message.Redelivered {
		t.Fatalf("requeued %s redelivered=%v; want the control %s, redelivered", got.Message.ID, got.Message.Redelivered, control.ID)
	}
}
