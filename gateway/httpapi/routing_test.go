package httpapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/internal/testenv"
	"morag-gpu/worker/runner"
)

// startGoWorker runs an in-process Go worker on queue that reports info in
// `inspect stats`, as the worker binary does with its transcriber findings.
// The returned func stops it (and waits); it also stops with the test.
func startGoWorker(t *testing.T, r *testenv.Redis, queue, hostname string, info map[string]any, mux *runner.Mux) func() {
	t.Helper()
	if mux == nil {
		mux = runner.NewMux()
	}
	srv, err := runner.NewServer(runner.Config{Queues: []string{queue}, Hostname: hostname, RedisURL: r.URL(), Info: info,
		Prefetch: -1, ShutdownGrace: time.Second, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}, mux)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// waitCapabilities waits until the gateway knows who consumes queue and,
// for a Go worker, what it can do.
func (e *env) waitCapabilities(queue string) {
	e.t.Helper()
	eventually(e.t, 30*time.Second, "the gateway to know the workers on "+queue, func() bool {
		list, _ := e.gw.fleet.Consumers(context.Background(), queue, false)
		return len(list) == 1 && (list[0].Implementation == "python" || list[0].Capabilities != nil)
	})
}

// TestRoutingByCapability: gpu=true audio goes to the user's GPU queue
// only when a live worker there can transcribe; otherwise to celery, with
// the reason. With no live worker on celery either, a synchronous call is
// refused at once (503, saying what to start) and an asynchronous one is
// queued with a warning; once a Python worker consumes celery, the same
// synchronous call succeeds.
func TestRoutingByCapability(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	// A wait of -wait-timeout would show up as a test timeout, not a pass.
	e := startGateway(t, r, func(c *Config) { c.WaitTimeout = 30 * time.Minute })
	alice, carol, dave := e.createKey("alice"), e.createKey("carol"), e.createKey("dave")
	startGoWorker(t, r, "gpu-tasks-alice", "alice-gpu@%h", map[string]any{
		"transcriber": map[string]any{"available": false, "reason": "built without whisper tag"}}, nil)
	startGoWorker(t, r, "gpu-tasks-carol", "carol-gpu@%h", map[string]any{
		"transcriber": map[string]any{"available": true, "backend": "whisper.cpp", "model": "ggml-base.en.bin"}}, nil)
	testenv.StartCeleryWorker(t, r.URL(), "morag.worker", "-Q", "gpu-tasks-dave", "-c", "1", "-n", "dave-gpu@%h")
	for _, q := range []string{"gpu-tasks-alice", "gpu-tasks-carol", "gpu-tasks-dave"} {
		e.waitCapabilities(q)
	}
	audio := []byte("spoken words, as far as the gateway can tell from the content type")

	t.Run("routing rows with capability", func(t *testing.T) {
		rows := []struct {
			name, key, file, contentType string
			queue, reason                string
		}{
			{"Go GPU worker without transcriber, audio", alice, "talk.mp3", "audio", "celery", "gpu-worker-cannot-transcribe"},
			{"Go GPU worker without transcriber, document", alice, "notes.txt", "", "gpu-tasks-alice", "gpu-worker-available"},
			{"Go GPU worker with transcriber, audio", carol, "talk.mp3", "audio", "gpu-tasks-carol", "gpu-worker-available"},
			{"Python worker on the GPU queue, audio", dave, "talk.mp3", "audio/mpeg", "gpu-tasks-dave", "gpu-worker-available"},
		}
		for _, row := range rows {
			res := e.postForm("/process/file?async=true", map[string]string{"gpu": "true", "content_type": row.contentType}, row.file, audio, bearer(row.key)...)
			m := res.json(t)
			if res.Code != 202 || m["queue"] != row.queue || m["reason"] != row.reason {
				t.Errorf("%s: %d %s, want %s (%s)", row.name, res.Code, res.Body, row.queue, row.reason)
			}
		}
	})

	t.Run("no live worker anywhere: sync 503, async queued with a warning", func(t *testing.T) {
		before := len(uploadDirFiles(t, e.gw.files.Dir())) // the async rows' uploads wait for their tasks
		res := e.postForm("/process/file", map[string]string{"gpu": "true", "content_type": "audio"}, "talk.mp3", audio, bearer(alice)...)
		d, _ := res.json(t)["detail"].(string)
		for _, want := range []string{`no live worker consumes queue "celery"`, "the audio needs a transcript and no live worker on queue gpu-tasks-alice has a transcriber",
			"make worker-whisper", "gpu-tasks-alice", "celery -A morag.worker worker --queues=celery", "async=true"} {
			if res.Code != 503 || !strings.Contains(d, want) {
				t.Errorf("sync: %d %s: want 503 with a detail saying %q", res.Code, res.Body, want)
			}
		}
		if res.Header.Get("X-Morag-Routing-Reason") != "gpu-worker-cannot-transcribe" {
			t.Errorf("sync 503 headers %v", res.Header)
		}
		if files := uploadDirFiles(t, e.gw.files.Dir()); len(files) != before {
			t.Errorf("refused upload left behind: %v", files)
		}
		url := e.postJSON("/process/url", map[string]any{"url": "https://example.com/doc"})
		if d, _ := url.json(t)["detail"].(string); url.Code != 503 || !strings.Contains(d, `no live worker consumes queue "celery"`) || strings.Contains(d, "whisper") {
			t.Errorf("sync /process/url: %d %s", url.Code, url.Body)
		}
		n, _ := e.gw.broker.QueueLength(context.Background(), "celery")

		async := e.postForm("/process/file?async=true", map[string]string{"gpu": "true", "content_type": "audio"}, "talk.mp3", audio, bearer(alice)...)
		if async.Code != 202 || !strings.Contains(async.Header.Get("X-Morag-Warning"), `no live worker consumes queue "celery"`) {
			t.Errorf("async: %d %v %s", async.Code, async.Header, async.Body)
		}
		ing := e.postForm("/api/v1/ingest/file", map[string]string{"gpu": "true", "source_type": "audio"}, "talk.mp3", audio, bearer(alice)...)
		if ing.Code != 200 || ing.Header.Get("X-Morag-Routing-Reason") != "gpu-worker-cannot-transcribe" ||
			!strings.Contains(ing.Header.Get("X-Morag-Warning"), `no live worker consumes queue "celery"`) {
			t.Errorf("ingest: %d %v %s", ing.Code, ing.Header, ing.Body)
		}
		if m, _ := e.gw.broker.QueueLength(context.Background(), "celery"); m != n+2 {
			t.Errorf("celery holds %d tasks after the async call and the ingest, want %d", m, n+2)
		}
	})

	t.Run("with a live Python worker on celery the same call succeeds", func(t *testing.T) {
		testenv.StartCeleryWorker(t, r.URL(), "morag.worker", "-Q", "celery", "-c", "1", "-n", "cpu@%h")
		e.waitCapabilities("celery")
		res := e.postForm("/process/file", map[string]string{"gpu": "true", "content_type": "audio"}, "talk.mp3", audio, bearer(alice)...)
		m := res.json(t)
		if res.Code != 200 || m["success"] != true || path(m, "metadata", "processed_by") != "python-standin" ||
			path(m, "metadata", "routing", "queue") != "celery" || path(m, "metadata", "routing", "reason") != "gpu-worker-cannot-transcribe" ||
			!strings.Contains(path(m, "metadata", "routing", "detail").(string), "needs a transcript") {
			t.Fatalf("%d %s", res.Code, res.Body)
		}
		if res.Header.Get("X-Morag-Warning") != "" {
			t.Errorf("warning on a reachable queue: %v", res.Header)
		}
	})
}

// TestSyncWaitEndsWhenItsWorkerGoes: a synchronous call whose task is still
// queued when the only worker on its queue stops is answered 503 (the task
// stays queued) instead of waiting out -wait-timeout.
func TestSyncWaitEndsWhenItsWorkerGoes(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, func(c *Config) { c.WaitTimeout = 30 * time.Minute })
	mux := runner.NewMux()
	mux.HandleFunc("morag.worker.process_url_task", func(ctx context.Context, _ *runner.Task) (any, error) {
		<-ctx.Done() // busy until the worker stops
		return nil, ctx.Err()
	})
	stop := startGoWorker(t, r, "celery", "busy@%h", nil, mux)
	e.waitCapabilities("celery")

	busy := e.postJSON("/process/url?async=true", map[string]any{"url": "https://example.com/busy"})
	id, _ := busy.json(t)["task_id"].(string)
	eventually(t, 30*time.Second, "the worker busy with the first task", func() bool {
		return e.do("GET", "/api/v1/status/"+id, nil).json(t)["status"] == "PROGRESS" // MoRAG reports STARTED as PROGRESS
	})
	answer := make(chan resp, 1)
	go func() { answer <- e.postJSON("/process/url", map[string]any{"url": "https://example.com/waiting"}) }()
	eventually(t, 30*time.Second, "the second task queued", func() bool {
		n, _ := e.gw.broker.QueueLength(context.Background(), "celery")
		return n == 1
	})
	stop()
	res := <-answer
	m := res.json(t)
	d, _ := m["detail"].(string)
	if res.Code != 503 || !strings.Contains(d, `no live worker consumes queue "celery"`) || !strings.Contains(d, "stays queued") || m["task_id"] == nil {
		t.Fatalf("%d %s: want 503 naming the dead queue, with the task id", res.Code, res.Body)
	}
}
