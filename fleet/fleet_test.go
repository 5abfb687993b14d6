package fleet

import (
	"context"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"morag-gpu/contract"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPythonWorkerLiveness: a real Celery worker on gpu-tasks-alice makes
// that queue alive (and no other), and its shutdown makes it dead again.
func TestPythonWorkerLiveness(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	pool, err := protocol.NewPool(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	d := New(pool, Options{Refresh: time.Second, GPUQueue: contract.IsGPUQueue})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	if alive, _ := d.QueueAlive(ctx, "gpu-tasks-alice"); alive {
		t.Fatal("alive before any worker started")
	}
	w := testenv.StartCeleryWorker(t, r.URL(), "morag.worker", "-Q", "gpu-tasks-alice", "-c", "1", "-n", "alice@%h")
	eventually(t, 30*time.Second, "gpu-tasks-alice alive", func() bool {
		alive, _ := d.QueueAlive(ctx, "gpu-tasks-alice")
		return alive
	})
	if alive, _ := d.QueueAlive(ctx, "gpu-tasks-bob"); alive {
		t.Fatal("gpu-tasks-bob alive without a worker")
	}
	ws := d.Workers()
	if len(ws) != 1 || !strings.HasPrefix(ws[0].Hostname, "alice@") || !ws[0].GPU || ws[0].Implementation != "python" ||
		!slices.Contains(ws[0].Queues, "gpu-tasks-alice") || ws[0].MaxTasks != 1 {
		t.Fatalf("workers = %+v", ws)
	}
	w.Signal(syscall.SIGTERM)
	w.Wait(30 * time.Second)
	eventually(t, 20*time.Second, "gpu-tasks-alice dead after shutdown", func() bool {
		alive, _ := d.QueueAlive(ctx, "gpu-tasks-alice")
		return !alive && len(d.Workers()) == 0
	})
}
