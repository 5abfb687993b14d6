package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// TestGatewayWithPythonWorkers runs the gateway against real Redis and two
// real Python Celery workers (stand-in morag package): one consuming
// gpu-tasks-alice, one consuming celery. bob has a key but no GPU worker.
func TestGatewayWithPythonWorkers(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	alice, bob := e.createKey("alice"), e.createKey("bob")
	testenv.StartCeleryWorker(t, r.URL(), "morag.worker", "-Q", "gpu-tasks-alice", "-c", "1", "-n", "alicegpu@%h")
	testenv.StartCeleryWorker(t, r.URL(), "morag.worker", "-Q", "celery", "-c", "1", "-n", "cpu@%h")

	t.Run("status/workers lists the Python workers", func(t *testing.T) {
		var last []byte
		defer func() {
			if t.Failed() {
				t.Logf("last /api/v1/status/workers: %s", last)
			}
		}()
		eventually(t, 30*time.Second, "both workers with their queues in /api/v1/status/workers", func() bool {
			res := e.do("GET", "/api/v1/status/workers", nil)
			last = res.Body
			m := res.json(t)
			d, _ := path(m, "workers", "details").(map[string]any)
			var gpuOK, cpuOK bool
			for host, v := range d {
				qs, _ := path(v, "queues").([]any)
				impl := path(v, "implementation")
				if strings.HasPrefix(host, "alicegpu@") && contains(qs, "gpu-tasks-alice") && !contains(qs, "celery") && path(v, "type") == "gpu" && impl == "python" {
					gpuOK = true
				}
				if strings.HasPrefix(host, "cpu@") && contains(qs, "celery") && path(v, "type") == "cpu" && impl == "python" {
					cpuOK = true
				}
			}
			return gpuOK && cpuOK && m["gpu_available"] == true
		})
	})

	t.Run("routing table", func(t *testing.T) {
		rows := []struct {
			name        string
			key         string
			gpu         bool
			queue, why  string
			remoteShape bool
		}{
			{"no key, gpu=false", "", false, "celery", "gpu-not-requested", false},
			{"no key, gpu=true", "", true, "celery", "anonymous", false},
			{"valid key, gpu=false", alice, false, "celery", "gpu-not-requested", false},
			{"valid key, gpu=true", alice, true, "gpu-tasks-alice", "gpu-worker-available", true},
			{"valid key, gpu=true, no live GPU worker", bob, true, "celery", "no-live-gpu-worker", false},
		}
		for _, row := range rows {
			var h []string
			if row.key != "" {
				h = bearer(row.key)
			}
			res := e.postJSON("/process/url", map[string]any{"url": "https://example.com/" + row.queue, "gpu": row.gpu}, h...)
			if res.Code != 200 {
				t.Fatalf("%s: %d %s", row.name, res.Code, res.Body)
			}
			m := res.json(t)
			if q, why := path(m, "metadata", "routing", "queue"), path(m, "metadata", "routing", "reason"); q != row.queue || why != row.why {
				t.Errorf("%s: routed to %v (%v), want %s (%s)", row.name, q, why, row.queue, row.why)
			}
			// The stand-in's *_url_task_remote calls another task's body
			// with update_state outside a request and fails; the routing is
			// what this row checks.
			if !row.remoteShape && m["success"] != true || !strings.Contains(string(res.Body), row.queue) {
				t.Errorf("%s: result %s", row.name, res.Body)
			}
			if m["success"] == false && m["error_message"] == nil {
				t.Errorf("%s: a failed task must say why: %s", row.name, res.Body)
			}
			if false && !strings.Contains(m["content"].(string), "https://example.com/"+row.queue) {
				t.Errorf("%s: result %s", row.name, res.Body)
			}
		}
	})

	t.Run("web, youtube and batch", func(t *testing.T) {
		for _, ep := range []string{"/process/web", "/process/youtube"} {
			res := e.postJSON(ep, map[string]any{"url": "https://example.com/v"})
			if m := res.json(t); res.Code != 200 || m["success"] != true || !strings.Contains(m["content"].(string), "https://example.com/v") {
				t.Fatalf("%s: %d %s", ep, res.Code, res.Body)
			}
		}
		res := e.postJSON("/process/batch", map[string]any{"items": []any{map[string]any{"content": "a"}, map[string]any{"content": "b"}}})
		var list []ProcessingResult
		if err := json.Unmarshal(res.Body, &list); err != nil || len(list) != 2 || list[1].Content != "b" || !list[0].Success {
			t.Fatalf("batch: %d %s", res.Code, res.Body)
		}
	})

	t.Run("gpu upload reaches alice's worker through the signed file_url", func(t *testing.T) {
		data := bytes.Repeat([]byte("audio bytes "), 50000)
		sum := sha256.Sum256(data)
		res := e.postForm("/process/file", map[string]string{"gpu": "true", "content_type": "audio",
			"options": `{"language": "de"}`}, "talk.mp3", data, bearer(alice)...)
		if res.Code != 200 {
			t.Fatalf("%d %s", res.Code, res.Body)
		}
		m := res.json(t)
		if path(m, "metadata", "routing", "queue") != "gpu-tasks-alice" {
			t.Fatalf("not routed to the GPU queue: %s", res.Body)
		}
		if path(m, "metadata", "sha256") != hex.EncodeToString(sum[:]) || path(m, "metadata", "upload", "sha256") != hex.EncodeToString(sum[:]) {
			t.Fatalf("worker saw other bytes: %s", res.Body)
		}
		if path(m, "metadata", "options", "language") != "de" || path(m, "metadata", "content_type") != "audio" || m["success"] != true {
			t.Fatalf("options/content_type not passed: %s", res.Body)
		}
		if files := uploadDirFiles(t, e.gw.files.Dir()); len(files) != 0 {
			t.Fatalf("upload left behind after its result: %v", files)
		}
	})

	t.Run("no live GPU worker falls back to celery and says why", func(t *testing.T) {
		data := []byte("bob's document")
		sum := sha256.Sum256(data)
		res := e.postForm("/process/file", map[string]string{"gpu": "true"}, "doc.pdf", data, bearer(bob)...)
		m := res.json(t)
		if res.Code != 200 || path(m, "metadata", "routing", "queue") != "celery" ||
			path(m, "metadata", "routing", "reason") != "no-live-gpu-worker" || path(m, "metadata", "sha256") != hex.EncodeToString(sum[:]) {
			t.Fatalf("%d %s", res.Code, res.Body)
		}
	})

	t.Run("async answers 202 and the status comes from the real task", func(t *testing.T) {
		res := e.postForm("/process/file?async=true", nil, "a.txt", []byte("async"), bearer(alice)...)
		if res.Code != 202 {
			t.Fatalf("%d %s", res.Code, res.Body)
		}
		m := res.json(t)
		id := m["task_id"].(string)
		if m["status_url"] != "/api/v1/status/"+id {
			t.Fatalf("%s", res.Body)
		}
		eventually(t, 30*time.Second, "SUCCESS", func() bool {
			st := e.do("GET", "/api/v1/status/"+id, nil, bearer(alice)...).json(t)
			return st["status"] == "SUCCESS" && st["progress"] == 1.0 && path(st, "result", "metadata", "size") == 5.0
		})
	})

	t.Run("ingest status and PROGRESS from a real task", func(t *testing.T) {
		// Catch every stored state on its pub/sub channel: the stand-in
		// reports PROGRESS and finishes right after.
		conn := r.Conn()
		defer conn.Close()
		psc := redis.PubSubConn{Conn: conn}
		if err := psc.PSubscribe("celery-task-meta-*"); err != nil {
			t.Fatal(err)
		}
		msgs := make(chan redis.Message, 64)
		go func() {
			for {
				switch v := psc.ReceiveWithTimeout(40 * time.Second).(type) {
				case redis.Message:
					msgs <- v
				case error:
					close(msgs)
					return
				}
			}
		}()
		res := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://example.com/doc", "metadata": map[string]any{"k": "v"}})
		m := res.json(t)
		if res.Code != 200 || m["status"] != "pending" || m["estimated_time"] != 120.0 {
			t.Fatalf("%d %s", res.Code, res.Body)
		}
		id := m["task_id"].(string)
		var progress *TaskStatus
		timeout := time.After(30 * time.Second)
		for progress == nil {
			select {
			case msg, ok := <-msgs:
				if !ok {
					t.Fatal("pub/sub ended before PROGRESS")
				}
				if msg.Channel != "celery-task-meta-"+id {
					continue
				}
				var meta protocol.ResultMeta
				json.Unmarshal(msg.Data, &meta)
				if meta.Status == protocol.StateProgress {
					st := taskStatus(&meta)
					progress = &st
				}
			case <-timeout:
				t.Fatal("no PROGRESS state published")
			}
		}
		if progress.Status != "PROGRESS" || progress.Progress != 0.5 || progress.Message == nil || *progress.Message != "ingesting" {
			t.Fatalf("PROGRESS mapped to %+v", progress)
		}
		eventually(t, 30*time.Second, "ingest SUCCESS", func() bool {
			st := e.do("GET", "/api/v1/status/"+id, nil).json(t)
			return st["status"] == "SUCCESS" && path(st, "result", "options", "store_in_vector_db") == true &&
				path(st, "result", "options", "metadata", "k") == "v"
		})
		// An id nobody issued is not found (not PENDING as in Celery): the
		// answer must match the one for another user's task.
		if unknown := e.do("GET", "/api/v1/status/"+protocol.NewID(), nil); unknown.Code != 404 {
			t.Fatalf("unknown task: %d %s", unknown.Code, unknown.Body)
		}
	})

	t.Run("ingest file honours gpu and the key", func(t *testing.T) {
		res := e.postForm("/api/v1/ingest/file", map[string]string{"gpu": "true", "source_type": "document",
			"document_id": "doc_1", "chunk_size": "1000"}, "x.txt", []byte("ingest me"), bearer(alice)...)
		m := res.json(t)
		if res.Code != 200 || res.Header.Get("X-Morag-Queue") != "gpu-tasks-alice" || m["message"] != "File ingestion started for x.txt" {
			t.Fatalf("%d %v %s", res.Code, res.Header, res.Body)
		}
		id := m["task_id"].(string)
		eventually(t, 30*time.Second, "ingest file SUCCESS", func() bool {
			st := e.do("GET", "/api/v1/status/"+id, nil, bearer(alice)...).json(t)
			return st["status"] == "SUCCESS" && path(st, "result", "options", "document_id") == "doc_1" &&
				path(st, "result", "options", "chunk_size") == 1000.0
		})
		bad := e.postForm("/api/v1/ingest/file", map[string]string{"document_id": "../x"}, "x.txt", []byte("x"))
		if bad.Code != 400 {
			t.Fatalf("bad document_id: %d %s", bad.Code, bad.Body)
		}
	})

	t.Run("queue stats and queue-info", func(t *testing.T) {
		m := e.do("GET", "/api/v1/status/stats/queues", nil).json(t)
		qs, _ := m["queues"].(map[string]any)
		if _, ok := qs["gpu-tasks-alice"]; !ok || m["completed"] != 0.0 {
			t.Fatalf("stats: %v", m)
		}
		qi := e.do("GET", "/api/v1/auth/queue-info", nil, bearer(alice)...).json(t)
		if qi["authenticated"] != true || qi["gpu_queue"] != "gpu-tasks-alice" || qi["cpu_queue"] != "cpu-tasks-alice" ||
			qi["gpu_available"] != true || qi["message"] != "User-specific queues available" {
			t.Fatalf("queue-info alice: %v", qi)
		}
		anon := e.do("GET", "/api/v1/auth/queue-info", nil).json(t)
		if anon["authenticated"] != false || anon["default_queue"] != "celery" || anon["error"] != nil {
			t.Fatalf("queue-info anonymous: %v", anon)
		}
		bad := e.do("GET", "/api/v1/auth/queue-info", nil, "X-API-Key", "not-a-key").json(t)
		if bad["authenticated"] != false || bad["error"] != "Invalid API key" {
			t.Fatalf("queue-info invalid key: %v", bad)
		}
	})
}

// TestSecurity: ownership, path escapes, signed URLs, size limit, garbage
// options, admin token. No worker consumes anything here, so any queue entry
// a refused request left behind would stay visible.
func TestSecurity(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, func(c *Config) { c.MaxUpload = 64 << 10 })
	alice, bob := e.createKey("alice"), e.createKey("bob")
	ctx := context.Background()
	data := []byte("hello alice's secret file")
	up, err := e.gw.files.Save(ctx, "alice", "secret.txt", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	filePath := e.gw.files.Path(up)

	check := func(name string, res resp, code int) {
		t.Helper()
		if res.Code != code {
			t.Errorf("%s: %d %s, want %d", name, res.Code, res.Body, code)
		}
	}
	// By transfer id.
	got := e.do("GET", "/api/v1/files/"+up.ID, nil, bearer(alice)...)
	if got.Code != 200 || !bytes.Equal(got.Body, data) || got.Header.Get("X-Content-SHA256") != up.SHA256 {
		t.Fatalf("owner download: %d %v %s", got.Code, got.Header, got.Body)
	}
	rng := e.do("GET", "/api/v1/files/"+up.ID, nil, append(bearer(alice), "Range", "bytes=0-4")...)
	if rng.Code != 206 || string(rng.Body) != "hello" {
		t.Fatalf("range: %d %q", rng.Code, rng.Body)
	}
	check("bob by id", e.do("GET", "/api/v1/files/"+up.ID, nil, bearer(bob)...), 404)
	check("anonymous by id", e.do("GET", "/api/v1/files/"+up.ID, nil), 401)
	check("bad id", e.do("GET", "/api/v1/files/..%2f..%2fetc%2fpasswd", nil, bearer(alice)...), 404)

	// Legacy path.
	legacy := func(p string, key string) resp {
		var h []string
		if key != "" {
			h = bearer(key)
		}
		return e.postJSON("/api/v1/files/download", map[string]string{"file_path": p}, h...)
	}
	if res := legacy(filePath, alice); res.Code != 200 || !bytes.Equal(res.Body, data) {
		t.Fatalf("owner legacy download: %d %s", res.Code, res.Body)
	}
	check("bob by legacy path", legacy(filePath, bob), 404)
	check("legacy without key", legacy(filePath, ""), 401)
	check("../ escape", legacy(e.gw.files.Dir()+"/../../../../etc/passwd", alice), 403)
	check("/tmp/../etc/passwd", legacy("/tmp/../etc/passwd", alice), 403)
	check("absolute outside", legacy("/etc/passwd", alice), 403)
	link := filepath.Join(e.gw.files.Dir(), strings.Repeat("e", 32)+".txt")
	if err := os.Symlink("/etc/passwd", link); err != nil {
		t.Fatal(err)
	}
	check("symlink escape", legacy(link, alice), 403)
	os.Remove(link)

	// Signed URLs.
	signed, _ := url.Parse(e.gw.files.SignedURL(e.url, up.ID, time.Hour))
	if res := e.do("GET", signed.RequestURI(), nil); res.Code != 200 || !bytes.Equal(res.Body, data) {
		t.Fatalf("signed URL: %d %s", res.Code, res.Body)
	}
	parts := strings.Split(signed.Path, "/") // "", api, v1, files, s, expires, token, id
	tok := []byte(parts[6])
	tok[0] ^= 2
	parts[6] = string(tok)
	check("tampered token", e.do("GET", strings.Join(parts, "/"), nil), 403)
	// URLs signed before the signature moved into the path still work.
	exp := time.Now().Add(time.Hour).Unix()
	legacyURL := "/api/v1/files/" + up.ID + "?expires=" + strconv.FormatInt(exp, 10) + "&token=" + e.gw.files.Token(up.ID, exp)
	if res := e.do("GET", legacyURL, nil); res.Code != 200 || !bytes.Equal(res.Body, data) {
		t.Fatalf("query-signed URL: %d %s", res.Code, res.Body)
	}
	expired, _ := url.Parse(e.gw.files.SignedURL(e.url, up.ID, -time.Second))
	check("expired URL", e.do("GET", expired.RequestURI(), nil), 403)

	// Refused uploads leave nothing behind.
	big := make([]byte, 65<<10)
	check("over-size upload", e.postForm("/process/file", nil, "big.bin", big, bearer(alice)...), 413)
	check("over-size ingest", e.postForm("/api/v1/ingest/file", nil, "big.bin", big), 413)
	res := e.postForm("/process/file", map[string]string{"options": "{not json"}, "doc.txt", []byte("x"), bearer(alice)...)
	if res.Code != 400 || !strings.Contains(string(res.Body), "Invalid JSON in options") {
		t.Fatalf("garbage options: %d %s", res.Code, res.Body)
	}
	check("options not an object", e.postForm("/process/file", map[string]string{"options": "[1]"}, "doc.txt", []byte("x")), 400)
	check("bad gpu flag", e.postForm("/process/file", map[string]string{"gpu": "maybe"}, "doc.txt", []byte("x")), 422)
	check("garbage metadata", e.postForm("/api/v1/ingest/file", map[string]string{"metadata": "{"}, "doc.txt", []byte("x")), 400)
	check("no file", e.postForm("/process/file", map[string]string{"gpu": "true"}, "", nil), 422)
	if files := uploadDirFiles(t, e.gw.files.Dir()); len(files) != 1 || files[0] != up.ID {
		t.Fatalf("upload dir after refused requests: %v, want only %s", files, up.ID)
	}
	for _, q := range []string{"celery", "gpu-tasks-alice"} {
		if n, _ := e.gw.broker.QueueLength(ctx, q); n != 0 {
			t.Fatalf("queue %s has %d entries after refused requests", q, n)
		}
	}

	// Key management needs the admin token.
	form := func(body string, h ...string) resp {
		return e.do("POST", "/api/v1/auth/create-key", strings.NewReader(body),
			append([]string{"Content-Type", "application/x-www-form-urlencoded"}, h...)...)
	}
	check("create-key without admin token", form("user_id=mallory"), 403)
	check("create-key with an API key", form("user_id=mallory", bearer(alice)...), 403)
	check("create-key with a wrong token", form("user_id=mallory", "X-Admin-Token", "nope"), 403)
	check("create-key with a bad user_id", form("user_id=a/b", "X-Admin-Token", adminToken), 400)
	ck := form("user_id=carol&expires_days=7", "Authorization", "Bearer "+adminToken).json(t)
	if ck["message"] != "API key created successfully" || ck["expires_days"] != 7.0 || len(ck["api_key"].(string)) != 43 {
		t.Fatalf("create-key: %v", ck)
	}
	inv := e.do("POST", "/api/v1/auth/validate-key", strings.NewReader("api_key=garbage"), "Content-Type", "application/x-www-form-urlencoded")
	if inv.Code != 401 || string(bytes.TrimSpace(inv.Body)) != `{"detail":"Invalid API key"}` {
		t.Fatalf("validate invalid: %d %s", inv.Code, inv.Body)
	}
	val := e.do("POST", "/api/v1/auth/validate-key", strings.NewReader("api_key="+alice), "Content-Type", "application/x-www-form-urlencoded").json(t)
	if val["valid"] != true || path(val, "user_data", "user_id") != "alice" {
		t.Fatalf("validate: %v", val)
	}
	list := e.do("GET", "/api/v1/auth/keys?user_id=alice", nil, "X-Admin-Token", adminToken).json(t)
	if list["count"] != 1.0 {
		t.Fatalf("list: %v", list)
	}
	check("list without admin", e.do("GET", "/api/v1/auth/keys?user_id=alice", nil, bearer(alice)...), 403)
	rv := e.do("POST", "/api/v1/auth/revoke-key", strings.NewReader("api_key="+bob), "Content-Type", "application/x-www-form-urlencoded", "X-Admin-Token", adminToken)
	check("revoke", rv, 200)
	check("revoked key is anonymous", e.do("GET", "/api/v1/files/"+up.ID, nil, bearer(bob)...), 401)

	// Cancel: only the submitter; the state becomes REVOKED.
	acc := e.postJSON("/process/url?async=true", map[string]any{"url": "https://x"}, bearer(alice)...).json(t)
	id := acc["task_id"].(string)
	check("bob cancels alice's task", e.do("DELETE", "/api/v1/ingest/"+id, nil, "X-API-Key", e.createKey("bob2")), 404)
	cancel := e.do("DELETE", "/api/v1/ingest/"+id, nil, bearer(alice)...)
	if cancel.Code != 200 || cancel.json(t)["message"] != "Task "+id+" cancelled successfully" {
		t.Fatalf("cancel: %d %s", cancel.Code, cancel.Body)
	}
	if st := e.do("GET", "/api/v1/status/"+id, nil, bearer(alice)...).json(t); st["status"] != "REVOKED" {
		t.Fatalf("after cancel: %v", st)
	}
}

func TestOperationsEndpoints(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	root := e.do("GET", "/", nil)
	if string(bytes.TrimSpace(root.Body)) != `{"message":"MoRAG API","version":"0.1.0"}` {
		t.Fatalf("root: %s", root.Body)
	}
	h := e.do("GET", "/health", nil).json(t)
	if h["overall_status"] != "degraded" || path(h, "services", "redis", "status") != "healthy" || path(h, "services", "workers", "total") != 0.0 {
		t.Fatalf("health: %v", h)
	}
	e.postJSON("/process/url?async=true", map[string]any{"url": "https://x", "gpu": true})
	m := e.do("GET", "/metrics", nil)
	for _, want := range []string{
		// Label pairs in client_golang's order (sorted by name).
		`morag_gateway_routing_decisions_total{reason="anonymous",target="default"} 1`,
		`morag_queue_length{queue="celery"} 1`,
		`morag_gateway_requests_total{code="202",method="POST",route="/process/url"} 1`,
	} {
		if !strings.Contains(string(m.Body), want) {
			t.Errorf("metrics lack %q:\n%s", want, m.Body)
		}
	}
	var spec map[string]any
	if err := json.Unmarshal(e.do("GET", "/openapi.json", nil).Body, &spec); err != nil || path(spec, "paths", "/api/v1/status/workers") == nil {
		t.Fatalf("openapi: %v", err)
	}
	if d := e.do("GET", "/docs", nil); d.Code != 200 || !strings.Contains(string(d.Body), "/openapi.json") {
		t.Fatalf("docs: %d", d.Code)
	}
	if nf := e.do("GET", "/nope", nil); nf.Code != 404 || string(bytes.TrimSpace(nf.Body)) != `{"detail":"Not Found"}` {
		t.Fatalf("404: %s", nf.Body)
	}
}

func contains(list []any, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestHTTPFileTransferMode: with -file-transfer http even the default route
// sends the _remote task with a signed URL, which a Python worker on celery
// downloads.
func TestHTTPFileTransferMode(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	e := startGateway(t, r, func(c *Config) { c.FileTransfer = TransferHTTP })
	testenv.StartCeleryWorker(t, r.URL(), "morag.worker", "-Q", "celery", "-c", "1")
	data := []byte("over http")
	sum := sha256.Sum256(data)
	res := e.postForm("/process/file", nil, "n.txt", data)
	m := res.json(t)
	if res.Code != 200 || path(m, "metadata", "sha256") != hex.EncodeToString(sum[:]) ||
		path(m, "metadata", "routing", "queue") != "celery" || m["success"] != true {
		t.Fatalf("%d %s", res.Code, res.Body)
	}
	if files := uploadDirFiles(t, e.gw.files.Dir()); len(files) != 0 {
		t.Fatalf("upload left behind: %v", files)
	}
}
