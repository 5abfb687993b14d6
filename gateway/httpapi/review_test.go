package httpapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"morag-gpu/contract"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// TestTaskOwnershipGuards: a result upload and a cancel cannot touch
// another user's task, a cancel never erases a finished task's result,
// and a refused result upload leaves no file behind.
func TestTaskOwnershipGuards(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	alice, bob := e.createKey("alice"), e.createKey("bob")

	// alice's task (enqueued through the API, so its owner is recorded).
	res := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://example.com/a"}, bearer(alice)...)
	if res.Code != 200 {
		t.Fatalf("ingest: %d %s", res.Code, res.Body)
	}
	taskID := res.json(t)["task_id"].(string)

	// bob cannot store a result for it, with or without a file.
	rd, _ := json.Marshal(map[string]any{"task_id": taskID, "content": "forged"})
	got := e.postForm("/api/v1/files/upload-result", map[string]string{"result_data": string(rd)}, "x.txt", []byte("forged"), bearer(bob)...)
	if got.Code != 404 {
		t.Fatalf("bob's result for alice's task: %d %s, want 404", got.Code, got.Body)
	}
	if left := uploadDirFiles(t, e.gw.files.Dir()); len(left) != 0 {
		t.Fatalf("refused result upload left files: %v", left)
	}
	if n := r.Do("EXISTS", contract.ResultKey(taskID)); n != int64(0) {
		t.Fatalf("refused result was stored")
	}
	// alice can.
	if got := e.postForm("/api/v1/files/upload-result", map[string]string{"result_data": string(rd)}, "", nil, bearer(alice)...); got.Code != 200 {
		t.Fatalf("alice's result: %d %s", got.Code, got.Body)
	}
	// An unowned task id, once claimed by alice's result, is hers too.
	rd2, _ := json.Marshal(map[string]any{"task_id": "free-task", "content": "a"})
	if got := e.postForm("/api/v1/files/upload-result", map[string]string{"result_data": string(rd2)}, "", nil, bearer(alice)...); got.Code != 200 {
		t.Fatalf("alice's unowned result: %d %s", got.Code, got.Body)
	}
	if got := e.postForm("/api/v1/files/upload-result", map[string]string{"result_data": string(rd2)}, "", nil, bearer(bob)...); got.Code != 404 {
		t.Fatalf("bob overwrote alice's stored result: %d %s", got.Code, got.Body)
	}

	// bob cannot cancel alice's task.
	if got := e.do("DELETE", "/api/v1/ingest/"+taskID, nil, bearer(bob)...); got.Code != 404 {
		t.Fatalf("bob cancels alice's task: %d %s", got.Code, got.Body)
	}

	// Cancelling a finished task keeps its result.
	ctx := context.Background()
	if err := e.gw.backend.Store(ctx, protocol.StoreRequest{TaskID: taskID, State: protocol.StateFailure,
		Result: protocol.NewTaskError("ValueError", "builtins", "boom")}); err != nil {
		t.Fatal(err)
	}
	if got := e.do("DELETE", "/api/v1/ingest/"+taskID, nil, bearer(alice)...); got.Code != 200 {
		t.Fatalf("alice cancels her finished task: %d %s", got.Code, got.Body)
	}
	st := e.do("GET", "/api/v1/status/"+taskID, nil, bearer(alice)...).json(t)
	if st["status"] != "FAILURE" {
		t.Fatalf("cancel overwrote a finished result: %v", st)
	}
}

// TestMetricsMethodLabelBounded: client-chosen methods must not grow the
// request counter's label set.
func TestMetricsMethodLabelBounded(t *testing.T) {
	m := newMetrics()
	for i := 0; i < 100; i++ {
		m.request("X"+strings.Repeat("A", i), "unmatched", 405)
	}
	m.request("GET", "/health", 200)
	if n := testutil.CollectAndCount(m.requests); n != 2 {
		t.Fatalf("request counters: %d label sets, want 2", n)
	}
}

// TestKeyRoutesBoundBody: the anonymous validate-key route must not accept
// an unbounded multipart body (it would spill to temp files on disk).
func TestKeyRoutesBoundBody(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	big := make([]byte, 4<<20)
	got := e.postForm("/api/v1/auth/validate-key", map[string]string{"api_key": "x"}, "big.bin", big)
	if got.Code != 413 {
		t.Fatalf("4 MiB validate-key body: %d %s, want 413", got.Code, got.Body)
	}
	// Ordinary forms still work.
	key := e.createKey("carol")
	got = e.postForm("/api/v1/auth/validate-key", map[string]string{"api_key": key}, "", nil)
	if got.Code != 200 {
		t.Fatalf("multipart validate-key: %d %s", got.Code, got.Body)
	}
	got = e.do("POST", "/api/v1/auth/validate-key", strings.NewReader("api_key="+key), "Content-Type", "application/x-www-form-urlencoded")
	if got.Code != 200 {
		t.Fatalf("urlencoded validate-key: %d %s", got.Code, got.Body)
	}
	// The size limit leaves JSON bodies for the handler (revoke-key).
	got = e.postJSON("/api/v1/auth/revoke-key", map[string]string{"api_key": key}, "X-Admin-Token", adminToken)
	if got.Code != 200 {
		t.Fatalf("JSON revoke-key: %d %s", got.Code, got.Body)
	}
}
