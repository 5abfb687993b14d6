package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/internal/testenv"
	"morag-gpu/media"
	"morag-gpu/protocol"
	"morag-gpu/worker/metrics"
	"morag-gpu/worker/runner"
)

// TestWorkerMetrics runs a runner.Server with the metrics as its Observer
// and both global_keyprefix settings, against a real Redis, and scrapes the
// endpoint.
func TestWorkerMetrics(t *testing.T) {
	r := testenv.StartRedis(t)
	const prefix = "pfx:"
	m := metrics.New()
	m.SetMedia(media.Capabilities{NVDEC: true}, false)
	mux := runner.NewMux()
	mux.HandleFunc("t.ok", func(context.Context, *runner.Task) (any, error) { return 1, nil })
	mux.HandleFunc("t.fail", func(context.Context, *runner.Task) (any, error) { return nil, errors.New("boom") })
	srv, err := runner.NewServer(runner.Config{
		Queues: []string{"q"}, RedisURL: r.URL(), KeyPrefix: prefix, ResultKeyPrefix: prefix, ForwardUnknown: "elsewhere",
		Logger: zerolog.Nop(), Observer: m,
	}, mux)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	pool, err := protocol.NewPool(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	client := protocol.NewClient(
		protocol.NewBroker(pool, protocol.BrokerOptions{KeyPrefix: prefix}),
		protocol.NewBackend(pool, protocol.BackendOptions{KeyPrefix: prefix}))
	wctx, wcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer wcancel()
	var ids []string
	for _, name := range []string{"t.ok", "t.ok", "t.fail"} {
		res, err := client.Send(wctx, name, nil, nil, protocol.SendOptions{Queue: "q"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := res.Wait(wctx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ids = append(ids, res.ID)
	}
	if _, err := client.Send(wctx, "t.unknown", nil, nil, protocol.SendOptions{Queue: "q"}); err != nil {
		t.Fatal(err)
	}
	r.Do("LPUSH", prefix+"q", "not json")

	// The key prefix reached the backend: the result key carries it.
	if n, _ := redis.Int(r.Do("EXISTS", prefix+"celery-task-meta-"+ids[0]), nil); n != 1 {
		t.Errorf("no %scelery-task-meta-%s in Redis", prefix, ids[0])
	}

	ms, err := metrics.Listen("127.0.0.1:0", m, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- ms.Serve(sctx) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	want := []string{
		`morag_worker_tasks_total{state="SUCCESS",task="t.ok"} 2`,
		`morag_worker_tasks_total{state="FAILURE",task="t.fail"} 1`,
		`morag_worker_tasks_total{state="FORWARDED",task="t.unknown"} 1`,
		`morag_worker_tasks_forwarded_total{queue="elsewhere",task="t.unknown"} 1`,
		`morag_worker_task_duration_seconds_count{state="SUCCESS",task="t.ok"} 2`,
		`morag_worker_tasks_received_total{task="t.ok"} 2`,
		`morag_worker_dead_lettered_total{reason=`,
		`morag_worker_held_messages 0`,
		`morag_worker_gpu_capability{capability="nvdec"} 1`,
		`morag_worker_transcriber_available 0`,
	}
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + ms.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q:\n%s", missing, body)
		}
		time.Sleep(50 * time.Millisecond) // the forward and dead letter finish after their results
	}
}

// TestTaskNameLabelBounded: names come from messages; past the bound they
// share one label.
func TestTaskNameLabelBounded(t *testing.T) {
	m := metrics.New()
	for i := 0; i < 300; i++ {
		m.TaskReceived(strings.Repeat("x", i+1))
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "morag_worker_tasks_received_total" && len(mf.GetMetric()) != 257 {
			t.Fatalf("%d label sets, want 256 names and other", len(mf.GetMetric()))
		}
	}
}
