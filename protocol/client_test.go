package protocol_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

func TestNewTaskMessageOptions(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	expires := now.Add(time.Hour)
	opts := protocol.SendOptions{
		TaskID:        "id1",
		Queue:         "gpu",
		Priority:      7,
		Countdown:     10 * time.Second,
		ETA:           now.Add(time.Minute), // Countdown wins, as in Celery
		Expires:       expires,
		TimeLimit:     30 * time.Second,
		SoftTimeLimit: 20 * time.Second,
		Headers:       map[string]any{"tenant": "acme"},
		Link:          []protocol.Signature{{Task: "cb", Options: map[string]any{"task_id": "cb1"}}},
		LinkError:     []protocol.Signature{{Task: "eb", Args: []any{1}}},
		ParentID:      "p1",
		IgnoreResult:  true,
		Shadow:        "nice-name",
	}
	m, err := protocol.NewTaskMessage("x.add", []any{1, 2}, map[string]any{"k": "v"}, opts, now)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "id1" || m.CorrelationID != "id1" || m.Task != "x.add" || m.RootID != "id1" || m.ParentID != "p1" ||
		m.Shadow != "nice-name" || !m.IgnoreResult || m.Priority != 7 || m.RoutingKey != "gpu" || m.Exchange != "" {
		t.Fatalf("message fields: %+v", m)
	}
	if m.ETA == nil || !m.ETA.Equal(now.Add(10*time.Second)) || m.ETA.Location() != time.UTC {
		t.Fatalf("ETA %v, want now+countdown in UTC", m.ETA)
	}
	if m.Expires == nil || !m.Expires.Equal(expires) {
		t.Fatalf("Expires %v", m.Expires)
	}
	if m.TimeLimit.Hard != 30*time.Second || m.TimeLimit.Soft != 20*time.Second {
		t.Fatalf("TimeLimit %+v, want hard 30s soft 20s", m.TimeLimit)
	}
	if m.Headers["tenant"] != "acme" {
		t.Fatalf("custom headers %v", m.Headers)
	}
	opts.Headers["tenant"] = "changed"
	if m.Headers["tenant"] != "acme" {
		t.Fatal("message shares the caller's headers map")
	}
	cb := m.Embed.Callbacks
	if len(cb) != 1 || cb[0].Task != "cb" || cb[0].Args == nil || cb[0].Kwargs == nil || cb[0].Options["task_id"] != "cb1" {
		t.Fatalf("callbacks %+v (args/kwargs must not be null for Python)", cb)
	}
	if eb := m.Embed.Errbacks; len(eb) != 1 || eb[0].Task != "eb" || eb[0].Options == nil || len(eb[0].Args) != 1 {
		t.Fatalf("errbacks %+v", eb)
	}
	if !reflect.DeepEqual(m.Args, []any{1, 2}) || m.Kwargs["k"] != "v" {
		t.Fatalf("args %v kwargs %v", m.Args, m.Kwargs)
	}

	// Defaults.
	m, err = protocol.NewTaskMessage("x.noop", nil, nil, protocol.SendOptions{TaskID: "id2", RootID: "r0", ETA: now}, now)
	if err != nil {
		t.Fatal(err)
	}
	if m.RoutingKey != "celery" || m.RootID != "r0" || m.Args == nil || m.Kwargs == nil || m.Expires != nil ||
		m.ETA == nil || !m.ETA.Equal(now) || m.TimeLimit != (protocol.TimeLimit{}) {
		t.Fatalf("defaults: %+v", m)
	}
}

func TestNewTaskMessageRejectsBadInput(t *testing.T) {
	if _, err := protocol.NewTaskMessage("", nil, nil, protocol.SendOptions{TaskID: "x"}, time.Now()); err == nil {
		t.Error("empty task name accepted")
	}
	_, err := protocol.NewTaskMessage("x", nil, nil, protocol.SendOptions{TaskID: "x", Headers: map[string]any{"retries": 3}}, time.Now())
	if err == nil || !strings.Contains(err.Error(), "retries") {
		t.Errorf("protocol header in custom headers: %v", err)
	}
	if _, err := protocol.NewTaskMessage("x", nil, nil, protocol.SendOptions{TaskID: "x", TimeLimit: -time.Second}, time.Now()); err == nil {
		t.Error("negative time limit accepted")
	}
}

// clStack is a Go client on a private Redis.
type clStack struct {
	r       *testenv.Redis
	pool    *redis.Pool
	broker  *protocol.Broker
	backend *protocol.Backend
	client  *protocol.Client
}

func clNewStack(t testing.TB) *clStack {
	t.Helper()
	r := testenv.StartRedis(t)
	pool, err := protocol.NewPool(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	s := &clStack{r: r, pool: pool, broker: protocol.NewBroker(pool, protocol.BrokerOptions{})}
	s.backend = protocol.NewBackend(pool, protocol.BackendOptions{})
	s.client = protocol.NewClient(s.broker, s.backend)
	return s
}

func TestClientSendPublishesV2(t *testing.T) {
	s := clNewStack(t)
	ctx := bkCtx(t, 20*time.Second)
	res, err := s.client.Send(ctx, "x.add", []any{2, 3}, nil, protocol.SendOptions{
		Queue: "q1", TimeLimit: 10 * time.Second, Headers: map[string]any{"tenant": "acme"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ID == "" {
		t.Fatal("no task id")
	}
	raw, err := redis.Bytes(s.r.Do("RPOP", "q1"), nil)
	if err != nil {
		t.Fatalf("nothing LPUSHed on q1: %v", err)
	}
	m, err := protocol.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.Protocol != 2 || m.ID != res.ID || m.Task != "x.add" || m.RootID != res.ID || m.TimeLimit.Hard != 10*time.Second ||
		m.Headers["tenant"] != "acme" || fmt.Sprint(m.Args) != "[2 3]" {
		t.Fatalf("decoded %+v", m)
	}
	var env struct {
		Headers struct {
			TimeLimit []any `json:"timelimit"`
		}
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(env.Headers.TimeLimit) != "[10 <nil>]" {
		t.Fatalf("timelimit header %v, want [10 null] (hard first)", env.Headers.TimeLimit)
	}
}

// clServe runs n Go consumer goroutines on queue until ctx ends; each task
// "go.noop" succeeds with null and "go.add" returns the sum of its args.
func clServe(ctx context.Context, t testing.TB, s *clStack, queue string, n int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := s.broker.NewConsumer(queue)
			for ctx.Err() == nil {
				d, err := c.Fetch(ctx, 200*time.Millisecond)
				if err != nil || d == nil {
					continue
				}
				if d.Err != nil {
					t.Errorf("undecodable message: %v", d.Err)
					_ = s.broker.DeadLetter(ctx, d, "bad")
					continue
				}
				req := protocol.StoreRequest{TaskID: d.Message.ID, State: protocol.StateSuccess, Message: d.Message}
				if d.Message.Task == "go.add" {
					sum := 0
					for _, a := range d.Message.Args {
						v, _ := a.(json.Number).Int64()
						sum += int(v)
					}
					req.Result = sum
				}
				if err := s.backend.Store(ctx, req); err != nil && ctx.Err() == nil {
					t.Errorf("store: %v", err)
				}
				if _, err := s.broker.Ack(ctx, d.Tag); err != nil && ctx.Err() == nil {
					t.Errorf("ack: %v", err)
				}
			}
		}()
	}
	return &wg
}

func TestClientGetThroughListener(t *testing.T) {
	s := clNewStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wg := clServe(ctx, t, s, "goq", 2)
	defer wg.Wait()
	defer cancel()
	client := s.client.WithListener(bkListener(t, s.backend))
	var results []*protocol.AsyncResult
	for i := range 20 {
		r, err := client.Send(ctx, "go.add", []any{i, 1}, nil, protocol.SendOptions{Queue: "goq"})
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, r)
	}
	for i, r := range results {
		raw, err := r.Get(ctx)
		if err != nil || string(raw) != fmt.Sprint(i+1) {
			t.Fatalf("result %d: %s, %v", i, raw, err)
		}
		if st, err := r.State(ctx); err != nil || st != protocol.StateSuccess {
			t.Fatalf("state %s, %v", st, err)
		}
	}
	ignored, err := client.Send(ctx, "go.noop", nil, nil, protocol.SendOptions{Queue: "goq", IgnoreResult: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ignored.Get(ctx); !errors.Is(err, protocol.ErrNoResult) {
		t.Fatalf("Get of an ignore_result task: %v, want ErrNoResult", err)
	}
}

func BenchmarkSend(b *testing.B) {
	s := clNewStack(b)
	ctx := context.Background()
	args := []any{"some text", 42}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.client.Send(ctx, "bench.noop", args, nil, protocol.SendOptions{Queue: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkEndToEndNoop sends no-op tasks to a pool of Go consumers that
// store their results, and waits for every result through one listener.
func BenchmarkEndToEndNoop(b *testing.B) {
	s := clNewStack(b)
	ctx, cancel := context.WithCancel(context.Background())
	wg := clServe(ctx, b, s, "bench", 8)
	defer wg.Wait()
	defer cancel()
	client := s.client.WithListener(bkListener(b, s.backend))

	b.ResetTimer()
	var failed atomic.Int64
	var waits sync.WaitGroup
	sem := make(chan struct{}, 512) // tasks in flight
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		r, err := client.Send(ctx, "go.noop", nil, nil, protocol.SendOptions{Queue: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		waits.Add(1)
		go func() {
			defer waits.Done()
			defer func() { <-sem }()
			wctx, wcancel := context.WithTimeout(ctx, time.Minute)
			defer wcancel()
			if _, err := r.Get(wctx); err != nil {
				failed.Add(1)
			}
		}()
	}
	waits.Wait()
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d results not received", n)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
