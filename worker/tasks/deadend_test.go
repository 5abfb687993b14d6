package tasks

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/contract"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// TestNoTranscriberNeverForwardsIntoADeadQueue: a worker without a
// transcriber fails audio, saying what to start, while no live worker
// consumes the forward queue; once a Python MoRAG worker does, the same
// task is handed to it and finished there.
func TestNoTranscriberNeverForwardsIntoADeadQueue(t *testing.T) {
	rd, client := startRunnerWith(t, MediaConfig{ForwardQueue: "celery", TranscriberReason: "built without whisper tag"},
		func(c *runner.Config) {
			consumers, stop, err := StartLiveFleet(c.RedisURL, c.KeyPrefix, contract.WorkerSWIdent, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			c.LiveConsumers = consumers
		})
	file := filepath.Join(t.TempDir(), "talk.mp3")
	if err := os.WriteFile(file, []byte("spoken words"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func() *protocol.ResultMeta {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := client.Send(ctx, ProcessFile, []any{file, "audio", nil}, nil, protocol.SendOptions{Queue: "gpu-tasks-alice"})
		if err != nil {
			t.Fatal(err)
		}
		m, err := res.Wait(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", res.ID, err)
		}
		return m
	}

	m := run()
	var exc struct {
		Message []string `json:"exc_message"`
	}
	_ = json.Unmarshal(m.Result, &exc)
	msg := strings.Join(exc.Message, " ")
	for _, want := range []string{"the audio needs a transcript and this worker has no transcriber (built without whisper tag)",
		`no live worker consumes queue "celery"`, "make worker-whisper", `on "gpu-tasks-alice"`, "celery -A morag.worker worker --queues=celery"} {
		if m.Status != protocol.StateFailure || !strings.Contains(msg, want) {
			t.Errorf("dead forward queue: %s %s, want FAILURE saying %q", m.Status, m.Result, want)
		}
	}

	testenv.RequireCelery(t)
	testenv.StartCeleryWorker(t, rd.URL(), "morag.worker", "-Q", "celery", "-c", "1", "-n", "py@%h")
	// Until the worker's directory has seen the Python worker, the task may
	// still fail; the condition is a forwarded success.
	deadline := time.Now().Add(60 * time.Second)
	for m = run(); m.Status != protocol.StateSuccess && time.Now().Before(deadline); m = run() {
		time.Sleep(200 * time.Millisecond)
	}
	if m.Status != protocol.StateSuccess || !strings.Contains(string(m.Result), "python-standin") {
		t.Fatalf("with a live Python worker on celery: %s %s", m.Status, m.Result)
	}
}

// TestForwardSkipsAGoWorkerWithoutTranscriber: another Go worker on the
// forward queue that has no transcriber would only hand the task back, so
// it does not count as a live consumer: the task fails naming it and what
// it lacks, read from its inspect stats by the real fleet directory.
func TestForwardSkipsAGoWorkerWithoutTranscriber(t *testing.T) {
	var redisURL string
	rd, client := startRunnerWith(t, MediaConfig{ForwardQueue: "celery", TranscriberReason: "built without whisper tag"},
		func(c *runner.Config) {
			redisURL = c.RedisURL
			consumers, stop, err := StartLiveFleet(c.RedisURL, c.KeyPrefix, contract.WorkerSWIdent, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			c.LiveConsumers = consumers
		})
	other, err := runner.NewServer(runner.Config{Queues: []string{"celery"}, Hostname: "other@test", RedisURL: redisURL,
		SWIdent: contract.WorkerSWIdent,
		Info:    map[string]any{"transcriber": map[string]any{"available": false, "reason": "built without whisper tag"}},
		Logger:  zerolog.Nop()}, runner.NewMux())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = other.Run(ctx) }() // owner: this test
	defer func() { cancel(); <-done }()

	file := filepath.Join(t.TempDir(), "talk.mp3")
	if err := os.WriteFile(file, []byte("spoken words"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Until the directory has the other worker's stats, the failure names
	// no worker; the condition is the failure that names it.
	want := `(other@test: no transcriber: built without whisper tag)`
	deadline := time.Now().Add(60 * time.Second)
	for {
		wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
		res, err := client.Send(wctx, ProcessFile, []any{file, "audio", nil}, nil, protocol.SendOptions{Queue: "gpu-tasks-alice"})
		if err != nil {
			t.Fatal(err)
		}
		m, err := res.Wait(wctx)
		wcancel()
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != protocol.StateFailure {
			t.Fatalf("audio with only a transcriber-less Go worker on celery: %s %s, want FAILURE", m.Status, m.Result)
		}
		if strings.Contains(string(m.Result), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failure never named the other worker: %s", m.Result)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n, _ := redis.Int(rd.Do("LLEN", "celery"), nil); n != 0 {
		t.Errorf("%d tasks forwarded to a worker that cannot transcribe", n)
	}
}
