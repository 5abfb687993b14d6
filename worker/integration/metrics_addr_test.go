package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

// TestMetricsAddr: the worker binary with -metrics-addr serves the task it
// ran from a Python client, and its GPU and transcriber status.
func TestMetricsAddr(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	startWorker(t, r.URL(), "-queues", "mq", "-metrics-addr", addr)
	sendAndWait := python(t, r.URL(), `
from diagapp import app, emit
emit({"result": app.send_task("diag.echo", args=[1], queue="mq").get(timeout=30)})
`)
	if len(sendAndWait) != 1 {
		t.Fatalf("python output: %v", sendAndWait)
	}
	// The counters move just after the result is stored, which is what
	// woke the client: scrape until they show it.
	want := []string{
		`morag_worker_tasks_total{state="SUCCESS",task="diag.echo"} 1`,
		`morag_worker_task_duration_seconds_bucket{state="SUCCESS",task="diag.echo",le="+Inf"} 1`,
		`morag_worker_transcriber_available 0`,
		`morag_worker_gpu_capability{capability="nvdec"}`,
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		missing := ""
		for _, w := range want {
			if !strings.Contains(string(body), w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q:\n%s", missing, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
