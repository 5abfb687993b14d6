package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// Upstream's models (server.py @ bb0da91), fields in declaration order,
// which is the order FastAPI writes them in. Types as Python's json.loads
// sees them: a float is a JSON number with "." or an exponent.
var (
	modelProcessingResult = model{
		{"success", "bool"}, {"content", "str"}, {"metadata", "dict"}, {"processing_time", "float"},
		{"error_message", "str|null"}, {"thumbnails", "list|null"},
	}
	modelIngestResponse = model{{"task_id", "str"}, {"status", "str"}, {"message", "str"}, {"estimated_time", "int|null"}}
	modelBatchIngest    = model{{"batch_id", "str"}, {"task_ids", "list"}, {"total_items", "int"}, {"message", "str"}}
	modelTaskStatus     = model{
		{"task_id", "str"}, {"status", "str"}, {"progress", "float"}, {"message", "str|null"}, {"result", "dict|null"},
		{"error", "str|null"}, {"created_at", "str|null"}, {"started_at", "str|null"}, {"completed_at", "str|null"},
		{"estimated_time_remaining", "int|null"},
	}
)

type field struct{ name, typ string }

// model is a pydantic response model: exactly these fields, in this order.
type model []field

// shape is a plain dict response (upstream returns a dict literal): at least
// these fields with these types, in any order (extras are ours).
type shape map[string]string

// jsonType is the Python type json.loads gives a raw JSON value.
func jsonType(raw json.RawMessage) string {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 {
		return "missing"
	}
	switch s[0] {
	case '{':
		return "dict"
	case '[':
		return "list"
	case '"':
		return "str"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	if bytes.ContainsAny(s, ".eE") {
		return "float"
	}
	return "int"
}

func typeOK(raw json.RawMessage, want string) bool {
	got := jsonType(raw)
	for _, w := range strings.Split(want, "|") {
		if w == got {
			return true
		}
	}
	return false
}

// objectFields reads a JSON object's keys in order and their raw values.
func objectFields(t *testing.T, body []byte) ([]string, map[string]json.RawMessage) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", body)
	}
	var keys []string
	vals := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("bad JSON %s: %v", body, err)
		}
		k := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatalf("bad JSON %s: %v", body, err)
		}
		keys = append(keys, k)
		vals[k] = raw
	}
	return keys, vals
}

func checkModel(t *testing.T, what string, body []byte, m model) {
	t.Helper()
	keys, vals := objectFields(t, body)
	var want []string
	for _, f := range m {
		want = append(want, f.name)
		if !typeOK(vals[f.name], f.typ) {
			t.Errorf("%s: %s is %s (%s), want %s", what, f.name, jsonType(vals[f.name]), vals[f.name], f.typ)
		}
	}
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("%s: fields %v, want exactly %v in this order", what, keys, want)
	}
}

func checkShape(t *testing.T, what string, body []byte, s shape) {
	t.Helper()
	_, vals := objectFields(t, body)
	for name, typ := range s {
		if !typeOK(vals[name], typ) {
			t.Errorf("%s: %s is %s (%s), want %s", what, name, jsonType(vals[name]), vals[name], typ)
		}
	}
}

// queued is a message the stand-in worker below took from a queue.
type queued struct {
	queue string
	msg   *protocol.Message
}

// liveConsumer answers the fleet's broadcasts (active_queues, stats) as a
// Python worker consuming queues does, without taking any task, so the
// gateway sees those queues as live and routes and waits as it would with
// a real worker; the test plays the worker's part on the queue itself.
func liveConsumer(t *testing.T, gw *Gateway, name string, queues ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	mb := protocol.NewMailbox(gw.pool, gw.db, name, "")
	mb.Handle("active_queues", func(context.Context, *protocol.ControlRequest) (any, error) {
		list := make([]any, 0, len(queues))
		for _, q := range queues {
			list = append(list, map[string]any{"name": q})
		}
		return list, nil
	})
	mb.Handle("stats", func(context.Context, *protocol.ControlRequest) (any, error) {
		return map[string]any{"sw_ident": "py-celery", "pool": map[string]any{"max-concurrency": 1}}, nil
	})
	done := make(chan struct{})
	go func() { defer close(done); _ = mb.Run(ctx) }() // owner: the test; ends at its cleanup
	<-mb.Ready()
	t.Cleanup(func() { cancel(); <-done })
}

// pythonShapedWorker takes every message from the celery queue and stores
// the result a Python MoRAG worker returns for its task, byte-compatible
// with what Celery's JSON backend stores (processing_time as Python wrote
// it: here an int, which the gateway must turn into a float). It stops with
// the test. It answers active_queues and stats as a Python worker does, so
// that the gateway sees a live worker on its queues (a synchronous call to
// a queue nobody consumes is refused with 503).
func pythonShapedWorker(t *testing.T, e *env, queues ...string) <-chan queued {
	out := make(chan queued, 64)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	liveConsumer(t, e.gw, "pyshape@test", queues...)
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn := e.redis.Conn()
		defer conn.Close()
		args := []any{}
		for _, q := range queues {
			for _, p := range []int{0, 3, 6, 9} {
				args = append(args, e.gw.broker.QueueForPriority(q, p))
			}
		}
		args = append(args, 1)
		for ctx.Err() == nil {
			kv, err := redis.ByteSlices(conn.Do("BRPOP", args...))
			if errors.Is(err, redis.ErrNil) {
				continue
			}
			if err != nil {
				return
			}
			m, err := protocol.Decode(kv[1])
			if err != nil {
				t.Errorf("undecodable message on %s: %v", kv[0], err)
				continue
			}
			if raisesInPython(m) {
				// What a MoRAG task that raises stores: FAILURE with the
				// exception (update_state + re-raise).
				_ = e.gw.backend.Store(ctx, protocol.StoreRequest{TaskID: m.ID, State: protocol.StateFailure,
					Result: protocol.NewTaskError("ValueError", "builtins", "cannot decode /tmp/morag-worker-1/in.mp4: moov atom not found")})
			} else {
				_ = e.gw.backend.Store(ctx, protocol.StoreRequest{TaskID: m.ID, State: protocol.StateSuccess, Result: pythonResult(m)})
			}
			q := string(kv[0])
			if i := strings.Index(q, "\x06\x16"); i >= 0 {
				q = q[:i]
			}
			out <- queued{queue: q, msg: m}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return out
}

// raisesInPython marks the requests whose task raises in the Python-shaped
// worker: a URL containing "raise".
func raisesInPython(m *protocol.Message) bool {
	if len(m.Args) == 0 {
		return false
	}
	u, _ := m.Args[0].(string)
	return strings.Contains(u, "raise")
}

// pythonResult is what morag.worker / morag.ingest_tasks return (§2.3).
func pythonResult(m *protocol.Message) any {
	one := map[string]any{"success": true, "content": "# Stand-in\n", "metadata": map[string]any{"task": m.Task},
		"processing_time": 2, "error_message": nil}
	switch m.Task {
	case "morag.worker.process_batch_task", "morag.ingest_tasks.ingest_batch_task":
		return []any{one, one}
	case "morag.worker.search_task":
		return map[string]any{"results": []any{map[string]any{"id": "r1", "score": 0.5, "content": "hit"}}}
	}
	return one
}

// match is an expected argument that is not a literal.
type match struct {
	desc string
	ok   func(v any) bool
}

func endsWith(suffix string) match {
	return match{"a string ending in " + suffix, func(v any) bool { s, _ := v.(string); return strings.HasSuffix(s, suffix) }}
}

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestCompatUpstreamShapes sends one request per route in upstream's request
// shape and checks our status code, the response's field names, order and
// (Python) types against upstream's models, and the Celery message we queue
// (task name, args, kwargs, queue) against what upstream's server queues for
// the same request (for /process/*, which upstream runs in-process, against
// the task the request maps to: process_*_task(file_path|url, …, options)).
// A Python-shaped worker answers, so the synchronous routes show how a
// Python worker's result reaches the client.
func TestCompatUpstreamShapes(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	alice := e.createKey("alice")
	work := pythonShapedWorker(t, e, "celery")
	var sent []queued
	next := func(what string) queued {
		t.Helper()
		select {
		case q := <-work:
			sent = append(sent, q)
			return q
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: nothing was queued", what)
		}
		return queued{}
	}
	expectMsg := func(what string, q queued, task string, args ...any) {
		t.Helper()
		if q.msg.Task != task || q.queue != "celery" || len(q.msg.Kwargs) != 0 {
			t.Errorf("%s: queued %s on %s with kwargs %v; want %s on celery, no kwargs", what, q.msg.Task, q.queue, q.msg.Kwargs, task)
		}
		if len(q.msg.Args) != len(args) {
			t.Fatalf("%s: args %v, want %d of them", what, q.msg.Args, len(args))
		}
		for i, want := range args {
			got := q.msg.Args[i]
			if m, ok := want.(match); ok {
				if !m.ok(got) {
					t.Errorf("%s: arg %d = %v, want %s", what, i, got, m.desc)
				}
			} else if !sameJSON(got, want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				t.Errorf("%s: arg %d = %s, want %s", what, i, g, w)
			}
		}
	}
	status := func(what string, res resp, code int) {
		t.Helper()
		if res.Code != code {
			t.Fatalf("%s: %d %s, want %d", what, res.Code, res.Body, code)
		}
	}

	t.Run("GET /", func(t *testing.T) {
		res := e.do("GET", "/", nil)
		status("root", res, 200)
		checkModel(t, "root", res.Body, model{{"message", "str"}, {"version", "str"}})
	})

	t.Run("GET /health", func(t *testing.T) {
		res := e.do("GET", "/health", nil)
		status("health", res, 200)
		checkShape(t, "health", res.Body, shape{"overall_status": "str", "services": "dict"})
		var h struct {
			Services map[string]map[string]any `json:"services"`
		}
		json.Unmarshal(res.Body, &h)
		for _, s := range moragServices {
			if _, ok := h.Services[s]["status"].(string); !ok {
				t.Errorf("health: service %s has no status: %s", s, res.Body)
			}
		}
	})

	t.Run("POST /process/url", func(t *testing.T) {
		// pydantic accepts "false" for Optional[bool].
		res := e.postJSON("/process/url", map[string]any{"url": "https://example.com/a", "content_type": "web",
			"options": map[string]any{"k": 1}, "gpu": "false"})
		status("process/url", res, 200)
		checkModel(t, "process/url", res.Body, modelProcessingResult)
		expectMsg("process/url", next("process/url"), "morag.worker.process_url_task", "https://example.com/a", "web", map[string]any{"k": 1})
	})

	t.Run("POST /process/file", func(t *testing.T) {
		res := e.postForm("/process/file", map[string]string{"content_type": "video/mp4",
			"options": `{"include_thumbnails": false}`, "gpu": "false"}, "talk.mp4", []byte("not really a video"))
		status("process/file", res, 200)
		checkModel(t, "process/file", res.Body, modelProcessingResult)
		// The MIME type is normalized (normalize_content_type), the path
		// keeps the client's name and extension.
		expectMsg("process/file", next("process/file"), "morag.worker.process_file_task",
			endsWith("_talk.mp4"), "video", map[string]any{"include_thumbnails": false})
		// Without content_type none is sent: the worker detects it.
		res = e.postForm("/process/file", map[string]string{"content_type": ""}, "notes.md", []byte("# notes"))
		status("process/file without content_type", res, 200)
		expectMsg("process/file without content_type", next("process/file"), "morag.worker.process_file_task",
			endsWith("_notes.md"), nil, nil)
	})

	t.Run("POST /process/web", func(t *testing.T) {
		res := e.postJSON("/process/web", map[string]any{"url": "https://example.com/page"})
		status("process/web", res, 200)
		checkModel(t, "process/web", res.Body, modelProcessingResult)
		expectMsg("process/web", next("process/web"), "morag.worker.process_web_page_task", "https://example.com/page", nil)
	})

	t.Run("POST /process/youtube", func(t *testing.T) {
		res := e.postJSON("/process/youtube", map[string]any{"url": "https://youtu.be/x", "options": map[string]any{"q": "720p"}})
		status("process/youtube", res, 200)
		checkModel(t, "process/youtube", res.Body, modelProcessingResult)
		expectMsg("process/youtube", next("process/youtube"), "morag.worker.process_youtube_video_task", "https://youtu.be/x", map[string]any{"q": "720p"})
	})

	t.Run("POST /process/batch", func(t *testing.T) {
		items := []any{map[string]any{"content": "a", "content_type": "text"}}
		res := e.postJSON("/process/batch", map[string]any{"items": items})
		status("process/batch", res, 200)
		var list []json.RawMessage
		if err := json.Unmarshal(res.Body, &list); err != nil || len(list) != 2 {
			t.Fatalf("process/batch: want a bare list of 2: %s", res.Body)
		}
		for _, it := range list {
			checkModel(t, "process/batch item", it, modelProcessingResult)
		}
		expectMsg("process/batch", next("process/batch"), "morag.worker.process_batch_task", items, nil)
	})

	t.Run("POST /search", func(t *testing.T) {
		// limit as a string: pydantic coerces it to the int.
		res := e.postJSON("/search", map[string]any{"query": "what is morag", "limit": "5"})
		status("search", res, 200)
		checkModel(t, "search", res.Body, model{{"results", "list"}})
		expectMsg("search", next("search"), "morag.worker.search_task", "what is morag", 5, nil)
		res = e.postJSON("/search", map[string]any{"query": "q", "filters": map[string]any{"source_type": "audio"}})
		status("search with defaults", res, 200)
		expectMsg("search with defaults", next("search"), "morag.worker.search_task", "q", 10, map[string]any{"source_type": "audio"})
	})

	var ingestID string
	t.Run("POST /api/v1/ingest/file", func(t *testing.T) {
		res := e.postForm("/api/v1/ingest/file", map[string]string{"document_id": "doc-1", "replace_existing": "true",
			"metadata": `{"a": 1}`, "chunk_size": "1000", "use_docling": "0"}, "notes.md", []byte("# notes"))
		status("ingest/file", res, 200)
		checkModel(t, "ingest/file", res.Body, modelIngestResponse)
		m := res.json(t)
		if m["status"] != "pending" || m["message"] != "File ingestion started for notes.md" || m["estimated_time"] != 60.0 {
			t.Errorf("ingest/file: %s", res.Body)
		}
		ingestID, _ = m["task_id"].(string)
		// source_type detected from the file as upstream does.
		expectMsg("ingest/file", next("ingest/file"), "morag.ingest_tasks.ingest_file_task", endsWith("_notes.md"), "document",
			map[string]any{"document_id": "doc-1", "replace_existing": true, "webhook_url": "", "metadata": map[string]any{"a": 1},
				"use_docling": false, "chunk_size": 1000, "chunk_overlap": nil, "chunking_strategy": nil, "store_in_vector_db": true})
		for name, want := range map[string]string{"talk.MP4": "video", "voice.ogg": "audio", "page.html": "web", "pic.jpeg": "image", "data.bin": "document"} {
			res := e.postForm("/api/v1/ingest/file", nil, name, []byte("x"))
			status("ingest/file "+name, res, 200)
			q := next("ingest/file " + name)
			if len(q.msg.Args) != 3 || q.msg.Args[1] != want {
				t.Errorf("ingest/file %s: source_type %v, want %s", name, q.msg.Args, want)
			}
		}
	})

	t.Run("POST /api/v1/ingest/url", func(t *testing.T) {
		for url, want := range map[string]string{
			"https://www.youtube.com/watch?v=x": "youtube", "https://example.com/doc": "web", "/data/talk.mp3": "audio",
		} {
			res := e.postJSON("/api/v1/ingest/url", map[string]any{"url": url, "metadata": map[string]any{"m": 1}})
			status("ingest/url", res, 200)
			checkModel(t, "ingest/url", res.Body, modelIngestResponse)
			if m := res.json(t); m["message"] != "URL ingestion started for "+url || m["estimated_time"] != 120.0 {
				t.Errorf("ingest/url: %s", res.Body)
			}
			expectMsg("ingest/url "+url, next("ingest/url"), "morag.ingest_tasks.ingest_url_task", url, want,
				map[string]any{"webhook_url": "", "metadata": map[string]any{"m": 1}, "store_in_vector_db": true})
		}
		res := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://example.com/x", "source_type": "document"})
		status("ingest/url with source_type", res, 200)
		expectMsg("ingest/url with source_type", next("ingest/url"), "morag.ingest_tasks.ingest_url_task", "https://example.com/x", "document",
			map[string]any{"webhook_url": "", "metadata": map[string]any{}, "store_in_vector_db": true})
	})

	t.Run("POST /api/v1/ingest/batch", func(t *testing.T) {
		items := []any{map[string]any{"url": "https://a"}, map[string]any{"file_path": "/x.pdf", "source_type": "document"}}
		res := e.postJSON("/api/v1/ingest/batch", map[string]any{"items": items, "webhook_url": "https://hook"})
		status("ingest/batch", res, 200)
		checkModel(t, "ingest/batch", res.Body, modelBatchIngest)
		m := res.json(t)
		if !regexp.MustCompile(`^batch-[0-9a-f]{8}$`).MatchString(fmt.Sprint(m["batch_id"])) || m["message"] != "Batch ingestion started with 2 items" || m["total_items"] != 2.0 {
			t.Errorf("ingest/batch: %s", res.Body)
		}
		expectMsg("ingest/batch", next("ingest/batch"), "morag.ingest_tasks.ingest_batch_task", items,
			map[string]any{"webhook_url": "https://hook", "store_in_vector_db": true})
	})

	t.Run("GET /api/v1/status/{task_id}", func(t *testing.T) {
		eventually(t, 10*time.Second, "ingest result", func() bool {
			return e.do("GET", "/api/v1/status/"+ingestID, nil).json(t)["status"] == "SUCCESS"
		})
		res := e.do("GET", "/api/v1/status/"+ingestID, nil)
		checkModel(t, "status", res.Body, modelTaskStatus)
		if !bytes.Contains(res.Body, []byte(`"progress":1.0`)) {
			t.Errorf("status: progress must be written 1.0: %s", res.Body)
		}
		// Deliberate deviation (issue 9): upstream answers PENDING for any
		// id; here an unknown id is 404, the same answer another user's
		// task gets, so that ids do not leak (see SECURITY.md).
		res = e.do("GET", "/api/v1/status/"+protocol.NewID(), nil)
		status("status of an unknown task", res, 404)
		checkModel(t, "status of an unknown task", res.Body, model{{"detail", "str"}})
	})

	t.Run("GET /api/v1/status/ and /api/v1/status", func(t *testing.T) {
		res := e.do("GET", "/api/v1/status/", nil)
		status("status/", res, 200)
		checkModel(t, "status/", res.Body, model{{"active_tasks", "list"}, {"count", "int"}})
		// FastAPI's redirect_slashes: 307 to the registered form.
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Get(e.url + "/api/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 307 || resp.Header.Get("Location") != e.url+"/api/v1/status/" {
			t.Errorf("GET /api/v1/status: %d Location %q, want 307 to %s/api/v1/status/", resp.StatusCode, resp.Header.Get("Location"), e.url)
		}
		req, _ := http.NewRequest("POST", e.url+"/process/file/", nil)
		if resp, err := noFollow.Do(req); err != nil || resp.StatusCode != 307 || resp.Header.Get("Location") != e.url+"/process/file" {
			t.Errorf("POST /process/file/: %v %v, want 307 to /process/file", resp, err)
		} else {
			resp.Body.Close()
		}
		if nf := e.do("GET", "/api/v1/nothing/", nil); nf.Code != 404 {
			t.Errorf("unknown path with a slash: %d", nf.Code)
		}
	})

	t.Run("GET /api/v1/status/stats/queues", func(t *testing.T) {
		res := e.do("GET", "/api/v1/status/stats/queues", nil)
		status("stats/queues", res, 200)
		checkShape(t, "stats/queues", res.Body, shape{"pending": "int", "active": "int", "completed": "int", "failed": "int"})
	})

	t.Run("DELETE /api/v1/ingest/{task_id}", func(t *testing.T) {
		// Deliberate deviation (issue 9): only ids this gateway issued can
		// be cancelled; upstream stores REVOKED for any id.
		status("cancel of an id never issued", e.do("DELETE", "/api/v1/ingest/"+protocol.NewID(), nil), 404)
		id := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://cancel.me"}).json(t)["task_id"].(string)
		res := e.do("DELETE", "/api/v1/ingest/"+id, nil)
		status("cancel", res, 200)
		if m := res.json(t); m["message"] != "Task "+id+" cancelled successfully" {
			t.Errorf("cancel: %s", res.Body)
		}
	})

	t.Run("POST /api/v1/admin/cleanup", func(t *testing.T) {
		status("cleanup without admin token", e.do("POST", "/api/v1/admin/cleanup", nil), 403)
		res := e.do("POST", "/api/v1/admin/cleanup", nil, "X-Admin-Token", adminToken)
		status("cleanup", res, 200)
		checkModel(t, "cleanup", res.Body, model{{"message", "str"}, {"files_deleted", "int"}})
		if m := res.json(t); m["message"] != "Cleanup completed successfully" {
			t.Errorf("cleanup: %s", res.Body)
		}
	})

	t.Run("auth routes", func(t *testing.T) {
		form := func(path, body string, h ...string) resp {
			return e.do("POST", path, strings.NewReader(body), append([]string{"Content-Type", "application/x-www-form-urlencoded"}, h...)...)
		}
		res := form("/api/v1/auth/create-key", "user_id=carol&description=d&expires_days=7", "X-Admin-Token", adminToken)
		status("create-key", res, 200)
		checkShape(t, "create-key", res.Body, shape{"api_key": "str", "user_id": "str", "description": "str", "expires_days": "int", "message": "str"})
		res = form("/api/v1/auth/validate-key", "api_key="+alice)
		status("validate-key", res, 200)
		checkShape(t, "validate-key", res.Body, shape{"valid": "bool", "user_data": "dict", "message": "str"})
		res = e.do("GET", "/api/v1/auth/queue-info", nil)
		status("queue-info", res, 200)
		checkShape(t, "queue-info", res.Body, shape{"authenticated": "bool", "default_queue": "str", "message": "str"})
	})

	t.Run("file transfer routes", func(t *testing.T) {
		up, err := e.gw.files.Save(context.Background(), "alice", "a.txt", strings.NewReader("abc"))
		if err != nil {
			t.Fatal(err)
		}
		res := e.postJSON("/api/v1/files/download", map[string]any{"file_path": e.gw.files.Path(up)}, bearer(alice)...)
		if res.Code != 200 || string(res.Body) != "abc" || res.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("download: %d %v %s", res.Code, res.Header, res.Body)
		}
		res = e.postForm("/api/v1/files/upload-result", map[string]string{"result_data": `{"ok": true}`}, "", nil, bearer(alice)...)
		status("upload-result", res, 200)
		checkShape(t, "upload-result", res.Body, shape{"status": "str", "message": "str"})
	})

	t.Run("GET /api/v1/status/workers", func(t *testing.T) {
		res := e.do("GET", "/api/v1/status/workers", nil)
		status("status/workers", res, 200)
		checkShape(t, "status/workers", res.Body, shape{"workers": "dict", "queues": "dict", "gpu_available": "bool"})
	})

	t.Run("422 in FastAPI's shape", func(t *testing.T) {
		for _, c := range []struct {
			name     string
			res      resp
			loc, typ string
		}{
			{"url missing", e.postJSON("/process/url", map[string]any{"gpu": true}), `["body","url"]`, "missing"},
			{"url not a string", e.postJSON("/api/v1/ingest/url", map[string]any{"url": 5}), `["body","url"]`, "string_type"},
			{"limit not an int", e.postJSON("/search", map[string]any{"query": "q", "limit": "many"}), `["body","limit"]`, "int_parsing"},
			{"gpu not a bool", e.postForm("/process/file", map[string]string{"gpu": "maybe"}, "a.txt", []byte("a")), `["body","gpu"]`, "bool_parsing"},
			{"file missing", e.postForm("/api/v1/ingest/file", map[string]string{"source_type": "document"}, "", nil), `["body","file"]`, "missing"},
			{"chunk_size not an int", e.postForm("/api/v1/ingest/file", map[string]string{"chunk_size": "big"}, "a.txt", []byte("a")), `["body","chunk_size"]`, "int_parsing"},
			{"items not a list", e.postJSON("/api/v1/ingest/batch", map[string]any{"items": "x"}), `["body","items"]`, "list_type"},
			{"bad JSON", e.do("POST", "/process/url", strings.NewReader(`{"url": `), "Content-Type", "application/json"), `["body",8]`, "json_invalid"},
			{"body not an object", e.postJSON("/search", []any{1}), `["body"]`, "model_attributes_type"},
			{"user_id missing", e.do("POST", "/api/v1/auth/create-key", strings.NewReader("description=x"),
				"Content-Type", "application/x-www-form-urlencoded", "X-Admin-Token", adminToken), `["body","user_id"]`, "missing"},
			{"expires_days not an int", e.do("POST", "/api/v1/auth/create-key", strings.NewReader("user_id=dave&expires_days=soon"),
				"Content-Type", "application/x-www-form-urlencoded", "X-Admin-Token", adminToken), `["body","expires_days"]`, "int_parsing"},
			{"api_key missing", e.do("POST", "/api/v1/auth/validate-key", strings.NewReader(""),
				"Content-Type", "application/x-www-form-urlencoded"), `["body","api_key"]`, "missing"},
			{"result_data missing", e.postForm("/api/v1/files/upload-result", map[string]string{"x": "y"}, "", nil, bearer(alice)...),
				`["body","result_data"]`, "missing"},
		} {
			if c.res.Code != 422 {
				t.Errorf("%s: %d %s, want 422", c.name, c.res.Code, c.res.Body)
				continue
			}
			var body struct {
				Detail []struct {
					Loc  json.RawMessage `json:"loc"`
					Msg  string          `json:"msg"`
					Type string          `json:"type"`
				} `json:"detail"`
			}
			if err := json.Unmarshal(c.res.Body, &body); err != nil || len(body.Detail) != 1 ||
				string(body.Detail[0].Loc) != c.loc || body.Detail[0].Type != c.typ || body.Detail[0].Msg == "" {
				t.Errorf("%s: %s, want one detail at %s of type %s", c.name, c.res.Body, c.loc, c.typ)
			}
		}
		// Upstream's own checks stay 400 {"detail": "..."}.
		res := e.postForm("/api/v1/ingest/file", map[string]string{"chunk_size": "100"}, "a.txt", []byte("a"))
		if res.Code != 400 || res.json(t)["detail"] != "chunk_size must be between 500 and 16000 characters" {
			t.Errorf("chunk_size out of range: %d %s", res.Code, res.Body)
		}
	})

	t.Run("CORS", func(t *testing.T) {
		res := e.do("OPTIONS", "/process/file", nil, "Origin", "https://ui.example", "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "authorization,x-api-key")
		if res.Code != 200 || res.Header.Get("Access-Control-Allow-Origin") != "https://ui.example" ||
			!strings.Contains(strings.ToLower(res.Header.Get("Access-Control-Allow-Headers")), "x-api-key") ||
			!strings.Contains(strings.ToLower(res.Header.Get("Access-Control-Allow-Headers")), "authorization") ||
			!strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("preflight: %d %v", res.Code, res.Header)
		}
		res = e.do("GET", "/", nil, "Origin", "https://ui.example")
		if res.Header.Get("Access-Control-Allow-Origin") != "*" || res.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("simple request: %v", res.Header)
		}
	})

	t.Run("docs", func(t *testing.T) {
		if res := e.do("GET", "/redoc", nil); res.Code != 200 || !bytes.Contains(res.Body, []byte(`spec-url="/openapi.json"`)) {
			t.Errorf("redoc: %d", res.Code)
		}
		var spec map[string]any
		if err := json.Unmarshal(e.do("GET", "/openapi.json", nil).Body, &spec); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/search", "/api/v1/admin/cleanup"} {
			if path(spec, "paths", p, "post") == nil {
				t.Errorf("openapi.json lacks POST %s", p)
			}
		}
		for _, code := range []string{"202", "422", "503", "504"} {
			if path(spec, "paths", "/process/file", "post", "responses", code) == nil {
				t.Errorf("openapi.json: /process/file does not document %s", code)
			}
		}
	})

	// Every message binds to the real task signature in Python (the stand-in
	// has upstream's names and signatures).
	t.Run("messages bind to the Python task signatures", func(t *testing.T) {
		testenv.RequireCelery(t)
		var msgs []map[string]any
		for _, q := range sent {
			msgs = append(msgs, map[string]any{"task": q.msg.Task, "args": q.msg.Args, "kwargs": q.msg.Kwargs})
		}
		b, _ := json.Marshal(msgs)
		out := testenv.RunPython(t, context.Background(), r.URL(), `
import inspect, json, sys
from morag.worker import celery_app
msgs = json.loads(sys.argv[1])
for m in msgs:
    task = celery_app.tasks[m["task"]]
    inspect.signature(task.run).bind(*m["args"], **(m["kwargs"] or {}))
print(len(msgs), "bound")
`, string(b))
		if !strings.Contains(out, fmt.Sprintf("%d bound", len(msgs))) || len(msgs) < 10 {
			t.Fatalf("python: %s", out)
		}
	})
}

// TestCompatPythonWorkerSignedURL: a real Celery worker running the stand-in
// morag package on gpu-tasks-alice (and celery) takes a gpu=true upload
// through its signed URL. Its remote task names the temp file with
// Path(file_url).suffix, exactly as upstream's, so the signature must not
// end up in that suffix: the file is detected as video. The results reach
// the client in upstream's shape.
func TestCompatPythonWorkerSignedURL(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	alice := e.createKey("alice")
	testenv.StartCeleryWorker(t, r.URL(), "morag.worker", "-Q", "gpu-tasks-alice,celery", "-c", "1", "-n", "alicegpu@%h")
	eventually(t, 30*time.Second, "alice's GPU worker in the fleet", func() bool {
		alive, _ := e.gw.fleet.QueueAlive(context.Background(), "gpu-tasks-alice")
		return alive
	})
	video := bytes.Repeat([]byte("frames "), 4096)

	for _, c := range []struct{ name, contentType, wantGiven string }{
		{"no content_type: detected from the URL's suffix", "", ""},
		{"a MIME type is normalized", "video/mp4", "video"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fields := map[string]string{"gpu": "true"}
			if c.contentType != "" {
				fields["content_type"] = c.contentType
			}
			res := e.postForm("/process/file", fields, "talk.mp4", video, bearer(alice)...)
			if res.Code != 200 {
				t.Fatalf("%d %s", res.Code, res.Body)
			}
			checkModel(t, "process/file", res.Body, modelProcessingResult)
			m := res.json(t)
			if path(m, "metadata", "routing", "queue") != "gpu-tasks-alice" || m["success"] != true {
				t.Fatalf("not processed on alice's GPU queue: %s", res.Body)
			}
			if got := path(m, "metadata", "temp_suffix"); got != ".mp4" {
				t.Errorf("the worker's temp file suffix is %q, want .mp4 (Path(file_url).suffix)", got)
			}
			if got := path(m, "metadata", "morag_content_type"); got != "video" {
				t.Errorf("the worker processed the file as %v, want video", got)
			}
			if got, _ := path(m, "metadata", "content_type").(string); got != c.wantGiven {
				t.Errorf("content_type given to the task: %q, want %q", got, c.wantGiven)
			}
			if path(m, "metadata", "size") != float64(len(video)) {
				t.Errorf("the worker saw other bytes: %s", res.Body)
			}
		})
	}

	t.Run("search runs on the Python fleet", func(t *testing.T) {
		res := e.postJSON("/search", map[string]any{"query": "hello", "limit": 1, "filters": map[string]any{"k": "v"}})
		if res.Code != 200 || res.Header.Get("X-Morag-Queue") != "celery" {
			t.Fatalf("%d %v %s", res.Code, res.Header, res.Body)
		}
		checkModel(t, "search", res.Body, model{{"results", "list"}})
		var body struct {
			Results []map[string]any `json:"results"`
		}
		json.Unmarshal(res.Body, &body)
		if len(body.Results) != 1 || body.Results[0]["content"] != "hello" || path(body.Results[0], "metadata", "filters", "k") != "v" {
			t.Fatalf("search: %s", res.Body)
		}
	})

	t.Run("ingest file: source_type detected, original name in source_path", func(t *testing.T) {
		res := e.postForm("/api/v1/ingest/file", nil, "Quarterly Report.PDF", []byte("%PDF"))
		if res.Code != 200 {
			t.Fatalf("%d %s", res.Code, res.Body)
		}
		id := res.json(t)["task_id"].(string)
		var st resp
		eventually(t, 30*time.Second, "ingest SUCCESS", func() bool {
			st = e.do("GET", "/api/v1/status/"+id, nil)
			return st.json(t)["status"] == "SUCCESS"
		})
		checkModel(t, "status", st.Body, modelTaskStatus)
		m := st.json(t)
		src, _ := path(m, "result", "source").(string)
		if path(m, "result", "source_type") != "document" || !strings.HasSuffix(src, "_Quarterly_Report.PDF") ||
			!bytes.Contains(st.Body, []byte(`"progress":1.0`)) {
			t.Fatalf("ingest: %s", st.Body)
		}
	})
}

// TestCompatTaskThatRaises: upstream answers processing that raised with 500
// {"detail": "Processing failed: …"}; a task that raised (FAILURE) is the
// same event here, so a client sees the same answer, without worker paths.
func TestCompatTaskThatRaises(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	work := pythonShapedWorker(t, e, "celery")
	res := e.postJSON("/process/url", map[string]any{"url": "https://example.com/raise.mp4"})
	<-work
	if res.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500 as MoRAG: %s", res.Code, res.Body)
	}
	m := res.json(t)
	if len(m) != 1 {
		t.Errorf("body %s: want only detail, as FastAPI's HTTPException", res.Body)
	}
	d, _ := m["detail"].(string)
	if !strings.HasPrefix(d, "Processing failed: ") || !strings.Contains(d, "moov atom not found") {
		t.Errorf("detail %q: want \"Processing failed: \" and the error", d)
	}
	if strings.Contains(d, "/tmp/morag-worker-1") {
		t.Errorf("detail %q carries a worker path", d)
	}
}
