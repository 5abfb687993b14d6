package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// startRunner serves the media tasks from gpu-tasks-alice on a private
// redis-server, through the real runner, and returns a client for it.
func startRunner(t *testing.T, cfg MediaConfig) (*testenv.Redis, *protocol.Client) {
	t.Helper()
	return startRunnerWith(t, cfg, nil)
}

// startRunnerWith is startRunner with the runner's Config adjusted by mod.
func startRunnerWith(t testing.TB, cfg MediaConfig, mod func(*runner.Config)) (*testenv.Redis, *protocol.Client) {
	t.Helper()
	rd := testenv.StartRedis(t)
	level := zerolog.InfoLevel
	if _, bench := t.(*testing.B); bench { // per-task lines would swamp the numbers
		level = zerolog.WarnLevel
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(level)
	cfg.Logger = log
	mux := runner.NewMux()
	if err := RegisterMedia(mux, cfg); err != nil {
		t.Fatal(err)
	}
	rcfg := runner.Config{
		Queues: []string{"gpu-tasks-alice"}, RedisURL: rd.URL(), Hostname: "gpu@tasks-test",
		ForwardUnknown: cfg.ForwardQueue, ShutdownGrace: 5 * time.Second, Logger: log,
	}
	if mod != nil {
		mod(&rcfg)
	}
	srv, err := runner.NewServer(rcfg, mux)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("runner did not stop")
		}
	})
	pool, err := protocol.NewPool(rd.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	return rd, protocol.NewClient(protocol.NewBroker(pool, protocol.BrokerOptions{}), protocol.NewBackend(pool, protocol.BackendOptions{}))
}

// watchStates subscribes to a task's result channel before the task is
// sent and returns the states published on it, up to a ready one.
func watchStates(t *testing.T, rd *testenv.Redis, taskID string) func() []string {
	t.Helper()
	return watchMeta(t, rd, taskID, func(status, _ string) string { return status })
}

// watchMeta is watchStates with each published state written by line
// from its status and its PROGRESS message ("" for other states).
func watchMeta(t *testing.T, rd *testenv.Redis, taskID string, line func(status, message string) string) func() []string {
	t.Helper()
	conn := rd.Conn()
	psc := redis.PubSubConn{Conn: conn}
	if err := psc.Subscribe("celery-task-meta-" + taskID); err != nil {
		t.Fatal(err)
	}
	if _, ok := psc.Receive().(redis.Subscription); !ok {
		t.Fatal("no subscription confirmation")
	}
	states := make(chan []string, 1)
	go func() { // owner: this test; ends at a ready state or when conn closes
		var seen []string
		for {
			switch m := psc.Receive().(type) {
			case redis.Message:
				var meta struct {
					Status string
					Result struct{ Message string }
				}
				json.Unmarshal(m.Data, &meta)
				seen = append(seen, line(meta.Status, meta.Result.Message))
				if meta.Status == "SUCCESS" || meta.Status == "FAILURE" {
					states <- seen
					return
				}
			case error:
				states <- seen
				return
			}
		}
	}()
	return func() []string {
		defer conn.Close()
		select {
		case s := <-states:
			return s
		case <-time.After(2 * time.Minute):
			t.Fatal("no ready state published")
			return nil
		}
	}
}

func TestRunnerStoresMoRAGStates(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	rd, client := startRunner(t, MediaConfig{ForwardQueue: "celery", TranscriberReason: "test build"})
	srv := newFileServer(t, fixtures.silent, "silent.mp4")
	id := protocol.NewID()
	states := watchStates(t, rd, id)
	ctx := testCtx(t)
	ar, err := client.Send(ctx, ProcessFileRemote, []any{srv.URL + "/api/v1/files/x?token=t", "alice", "video/mp4",
		map[string]any{"include_thumbnails": true}}, nil, protocol.SendOptions{TaskID: id, Queue: "gpu-tasks-alice"})
	if err != nil {
		t.Fatal(err)
	}
	seen := states()
	t.Logf("states published: %v", seen)
	order := strings.Join(seen, " ")
	// STARTED, DOWNLOADING (0 and progress), PROCESSING, PROGRESS..., SUCCESS.
	for _, want := range []string{"STARTED", "DOWNLOADING", "PROCESSING", "PROGRESS", "SUCCESS"} {
		i := strings.Index(order, want)
		if i < 0 {
			t.Fatalf("states %v lack %s", seen, want)
		}
		order = order[i:]
	}
	raw, err := ar.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	if res["success"] != true || res["user_id"] != "alice" || len(res["thumbnails"].([]any)) != 5 {
		t.Errorf("result success %v user_id %v", res["success"], res["user_id"])
	}
	done()
}

func TestRunnerForwardsAudioUnchanged(t *testing.T) {
	rd, client := startRunner(t, MediaConfig{ForwardQueue: "celery", TranscriberReason: "test build"})
	ctx := testCtx(t)
	args := []any{"http://gateway.invalid/api/v1/files/a?token=t", "alice", "audio/mpeg", map[string]any{"language": "de"}}
	ar, err := client.Send(ctx, ProcessFileRemote, args, nil, protocol.SendOptions{Queue: "gpu-tasks-alice"})
	if err != nil {
		t.Fatal(err)
	}
	var raw []byte
	deadline := time.Now().Add(60 * time.Second)
	for raw == nil && time.Now().Before(deadline) {
		if v, _ := redis.Bytes(rd.Do("LINDEX", "celery", 0), nil); v != nil {
			raw = v
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if raw == nil {
		t.Fatal("the audio task never reached the celery queue")
	}
	msg, err := protocol.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if msg.ID != ar.ID || msg.Task != ProcessFileRemote || fmt.Sprint(msg.Args) != fmt.Sprint(args) {
		t.Errorf("forwarded %s %s %v, want the original %s %v", msg.ID, msg.Task, msg.Args, ar.ID, args)
	}
	if from := fmt.Sprint(msg.Headers["forwarded_from"]); !strings.Contains(from, "gpu-tasks-alice") {
		t.Errorf("forwarded_from = %s", from)
	}
	if n, _ := redis.Int(rd.Do("LLEN", "gpu-tasks-alice"), nil); n != 0 {
		t.Errorf("%d messages left on gpu-tasks-alice", n)
	}
	if st, _ := ar.State(ctx); st == protocol.StateSuccess || st == protocol.StateFailure {
		t.Errorf("the Go worker stored %s for a task it forwarded", st)
	}
}
