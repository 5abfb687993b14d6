// Package e2e runs the whole stack as separate processes: redis-server, the
// gateway binary, the Go worker binary and a Python Celery worker running
// the stand-in morag package, and talks to it over HTTP as a MoRAG client
// does.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"morag-gpu/auth"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// stack is one running deployment.
type stack struct {
	base     string // the gateway's URL
	redisURL string
	aliceKey string
	goWorker *testenv.Process
	uploads  string
	// How the Go worker was started, to start it again.
	workerBin  string
	workerEnv  []string
	workerArgs []string
}

// TestProcessFileGPU: alice uploads with gpu=true. The gateway sends what
// her Go worker (default build: no transcriber) can finish to
// gpu-tasks-alice and what needs a transcript to celery. With nobody on
// celery, a synchronous call for a spoken video is refused at once with the
// reason, and the Go worker fails what it would have forwarded there; once
// a Python worker consumes celery, the client gets one complete MoRAG
// result either way, and the Go worker hands on what it cannot do.
func TestProcessFileGPU(t *testing.T) {
	testenv.RequireCelery(t)
	for _, tool := range []string{"ffmpeg", "espeak-ng"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP: %s is not installed (apt-get install %s, or scripts/setup)", tool, tool)
		}
	}
	media := t.TempDir()
	speech := filepath.Join(media, "speech.wav")
	talk := filepath.Join(media, "talk.mp4")
	silent := filepath.Join(media, "silent.mp4")
	notes := filepath.Join(media, "notes.txt")
	if out, err := exec.Command("espeak-ng", "-w", speech, "Hello from the routing test. Nobody here can transcribe this.").CombinedOutput(); err != nil {
		t.Fatalf("espeak-ng: %v\n%s", err, out)
	}
	ffmpeg(t, "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3", "-i", speech,
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", talk)
	ffmpeg(t, "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", silent)
	if err := os.WriteFile(notes, []byte("meeting notes: a document, not media\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	s := startStack(t)

	t.Run("no transcriber anywhere: a synchronous spoken video is refused at once", func(t *testing.T) {
		code, raw, h := s.postFile(t, talk, nil, false)
		var body struct {
			Detail string `json:"detail"`
		}
		json.Unmarshal(raw, &body)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("HTTP %d %s, want 503", code, raw)
		}
		for _, want := range []string{"video with an audio track needs a transcript", "alice-gpu@", "no transcriber",
			`no live worker consumes queue "celery"`, "make worker-whisper", "celery -A morag.worker worker --queues=celery"} {
			if !strings.Contains(body.Detail, want) {
				t.Errorf("detail %q does not say %q", body.Detail, want)
			}
		}
		if h.Get("X-Morag-Routing-Reason") != "gpu-worker-cannot-transcribe" || h.Get("X-Morag-Queue") != "celery" {
			t.Errorf("routing headers %v", h)
		}
		if _, workers := s.listed("alice-gpu@", "gpu-tasks-alice"); !strings.Contains(workers, `"transcriber":{"available":false,"reason":"no transcriber: built without`) {
			t.Errorf("/api/v1/status/workers does not show why the Go worker cannot transcribe: %s", workers)
		}
		t.Logf("503 detail: %s", body.Detail)
	})

	t.Run("the Go worker fails what it would forward into a dead queue", func(t *testing.T) {
		code, raw, _ := s.postFile(t, notes, nil, true)
		var acc struct {
			TaskID string `json:"task_id"`
			Queue  string `json:"queue"`
		}
		json.Unmarshal(raw, &acc)
		if code != http.StatusAccepted || acc.Queue != "gpu-tasks-alice" {
			t.Fatalf("HTTP %d %s: want 202 on gpu-tasks-alice (a document needs no transcript)", code, raw)
		}
		st := s.waitStatus(t, acc.TaskID, "FAILURE")
		if st.Error == nil || !strings.Contains(*st.Error, `no live worker consumes queue "celery"`) || !strings.Contains(*st.Error, "Python MoRAG worker") {
			t.Fatalf("FAILURE error %v: want the dead queue and what to start", st.Error)
		}
		if s.goLogged(t, "task forwarded", acc.TaskID, nil) {
			t.Errorf("the Go worker forwarded task %s into the dead queue", acc.TaskID)
		}
	})

	testenv.StartCeleryWorker(t, s.redisURL, "morag.worker", "-Q", "celery", "-n", "py@%h", "--concurrency", "1")
	s.waitListed(t, "py@", "celery")

	t.Run("spoken video goes to the Python worker on celery", func(t *testing.T) {
		res := s.processFile(t, talk, map[string]any{"include_thumbnails": true})
		meta := res.Metadata
		if !res.Success || res.ErrorMessage != nil {
			t.Fatalf("success %v error %v", res.Success, res.ErrorMessage)
		}
		if meta["processed_by"] != "python-standin" {
			t.Fatalf("processed_by %v, want python-standin (the Go worker has no transcriber)", meta["processed_by"])
		}
		if want := fileSHA(t, talk); meta["sha256"] != want {
			t.Errorf("the Python worker hashed %v, want the uploaded file's %s", meta["sha256"], want)
		}
		if r, _ := meta["routing"].(map[string]any); r["queue"] != "celery" || r["reason"] != "gpu-worker-cannot-transcribe" {
			t.Errorf("routing %v: want celery, gpu-worker-cannot-transcribe (the live GPU worker cannot transcribe)", meta["routing"])
		}
		if !strings.Contains(res.Content, "Stand-in processing") {
			t.Errorf("content %q", res.Content)
		}
	})

	t.Run("a document is handed on by the Go worker to the live Python worker", func(t *testing.T) {
		res := s.processFile(t, notes, nil)
		meta := res.Metadata
		if !res.Success || meta["processed_by"] != "python-standin" {
			t.Fatalf("success %v processed_by %v error %v", res.Success, meta["processed_by"], res.ErrorMessage)
		}
		if r, _ := meta["routing"].(map[string]any); r["queue"] != "gpu-tasks-alice" {
			t.Errorf("routing %v: want gpu-tasks-alice (the Go worker was alive)", meta["routing"])
		}
		id, _ := meta["task_id"].(string)
		if !s.goLogged(t, "task forwarded", id, func(l map[string]any) bool { return l["to_queue"] == "celery" }) {
			t.Errorf("the Go worker did not log forwarding task %s to celery:\n%s", id, s.goWorker.Output())
		}
	})

	t.Run("video without audio is done by the Go worker", func(t *testing.T) {
		res := s.processFile(t, silent, map[string]any{"include_thumbnails": true})
		meta := res.Metadata
		if !res.Success || res.ErrorMessage != nil {
			t.Fatalf("success %v error %v", res.Success, res.ErrorMessage)
		}
		for k, want := range map[string]any{"processed_by": "morag-gpu", "decode": "cpu", "has_audio": false,
			"resolution": "320x240", "fps": 25.0, "thumbnails_count": 5.0} {
			if meta[k] != want {
				t.Errorf("metadata[%q] = %v, want %v", k, meta[k], want)
			}
		}
		if d, _ := meta["duration"].(float64); d < 2.8 || d > 3.2 {
			t.Errorf("duration %v, want about 3", meta["duration"])
		}
		if r, _ := meta["routing"].(map[string]any); r["queue"] != "gpu-tasks-alice" {
			t.Errorf("routing %v", meta["routing"])
		}
		if dl, _ := meta["download"].(map[string]any); dl["sha256_verified"] != true || dl["sha256"] != fileSHA(t, silent) {
			t.Errorf("download %v: want the gateway's sha256 verified", meta["download"])
		}
		for _, want := range []string{"# Video Analysis", "| Resolution | 320x240 |", "| Audio | No |", "## Thumbnails"} {
			if !strings.Contains(res.Content, want) {
				t.Errorf("content lacks %q:\n%s", want, res.Content)
			}
		}
		if len(res.Thumbnails) != 5 {
			t.Fatalf("%d thumbnails, want 5", len(res.Thumbnails))
		}
		for i, th := range res.Thumbnails {
			b64, ok := strings.CutPrefix(th, "data:image/jpeg;base64,")
			jpg, err := base64.StdEncoding.DecodeString(b64)
			if !ok || err != nil || len(jpg) < 2 || jpg[0] != 0xFF || jpg[1] != 0xD8 {
				t.Errorf("thumbnail %d is not a JPEG data URL", i)
			}
		}
		id, _ := meta["task_id"].(string)
		if s.goLogged(t, "task forwarded", id, nil) {
			t.Errorf("the Go worker forwarded task %s it should have done itself", id)
		}
	})
}

// result is MoRAG's ProcessingResultResponse.
type result struct {
	Success        bool           `json:"success"`
	Content        string         `json:"content"`
	Metadata       map[string]any `json:"metadata"`
	ProcessingTime float64        `json:"processing_time"`
	ErrorMessage   *string        `json:"error_message"`
	Thumbnails     []string       `json:"thumbnails"`
	// Detail is MoRAG's 500 answer for a task that raised.
	Detail string `json:"detail"`
}

// postFile posts the file to /process/file with gpu=true and alice's key
// (with ?async=true when async) and returns the answer as it came.
func (s *stack) postFile(t testing.TB, path string, options map[string]any, async bool, fields ...map[string]string) (int, []byte, http.Header) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part, _ := mw.CreateFormFile("file", filepath.Base(path))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	part.Write(data)
	if options != nil {
		opts, _ := json.Marshal(options)
		mw.WriteField("options", string(opts))
	}
	mw.WriteField("gpu", "true")
	for _, f := range fields {
		for k, v := range f {
			mw.WriteField(k, v)
		}
	}
	mw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	url := s.base + "/process/file"
	if async {
		url += "?async=true"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+s.aliceKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /process/file: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, resp.Header
}

// processFile posts the file synchronously and returns the one answer,
// which must be MoRAG's result.
func (s *stack) processFile(t testing.TB, path string, options map[string]any) result {
	t.Helper()
	code, raw, _ := s.postFile(t, path, options, false)
	if code != http.StatusOK {
		t.Fatalf("POST /process/file: HTTP %d: %s", code, raw)
	}
	var res result
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("answer is not MoRAG's result: %v: %s", err, raw)
	}
	if dec.More() {
		t.Fatalf("more than one result in the answer: %s", raw)
	}
	var keys map[string]json.RawMessage
	json.Unmarshal(raw, &keys)
	for _, k := range []string{"success", "content", "metadata", "processing_time", "error_message", "thumbnails"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("answer has no %q: %s", k, raw)
		}
	}
	if res.Metadata == nil {
		t.Fatalf("answer has no metadata: %s", raw)
	}
	return res
}

// startStack runs redis, the gateway and the Go worker on gpu-tasks-alice,
// and waits until the gateway sees the Go worker alive. Nothing consumes
// celery yet: the test starts the Python stand-in there when it needs it.
func startStack(t *testing.T) *stack {
	t.Helper()
	return startStackWith(t, nil, nil)
}

// startStackWith is startStack with extra environment and flags for the
// Go worker.
func startStackWith(t *testing.T, workerEnv, workerFlags []string) *stack {
	t.Helper()
	s, dir := startGateway(t)
	workerBin, workerArgs := goWorker(t, dir)
	s.startGoWorker(t, workerBin, workerEnv, append(workerArgs, workerFlags...), 60*time.Second)
	if !s.goWorker.WaitOutput("no transcriber", time.Second) {
		t.Errorf("the default build's worker did not say at start that it has no transcriber:\n%s", s.goWorker.Output())
	}
	s.waitListed(t, "alice-gpu@", "gpu-tasks-alice")
	return s
}

// startGateway starts the shared half of every stack: a private Redis, an
// API key for alice and the gateway built from this tree. dir is the
// test's folder for binaries.
func startGateway(t testing.TB) (*stack, string) {
	t.Helper()
	dir := t.TempDir()
	gatewayBin := build(t, dir, "./gateway", "gateway")
	r := testenv.StartRedis(t)

	pool, err := protocol.NewPool(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, _, err := auth.NewKeyService(pool).Create(ctx, "alice", "e2e", 1)
	if err != nil {
		t.Fatalf("create alice's key: %v", err)
	}

	port := testenv.FreePort(t)
	s := &stack{base: fmt.Sprintf("http://127.0.0.1:%d", port), redisURL: r.URL(), aliceKey: key, uploads: filepath.Join(dir, "uploads")}
	gw := testenv.Start(t, "", []string{"REDIS_URL=" + r.URL(), "MORAG_ADMIN_TOKEN=e2e-admin-token-0123456789abcdef"}, gatewayBin,
		"-addr", fmt.Sprintf("127.0.0.1:%d", port), "-upload-dir", s.uploads, "-public-url", s.base, "-wait-timeout", "3m")
	if !gw.WaitOutput("gateway listening", 60*time.Second) {
		t.Fatalf("gateway did not start:\n%s", gw.Output())
	}
	return s, dir
}

// startGoWorker starts bin as alice's GPU worker on the stack's Redis
// (extra env and args after the common ones) and waits for it to be ready.
func (s *stack) startGoWorker(t testing.TB, bin string, env, args []string, ready time.Duration) {
	t.Helper()
	s.workerBin = bin
	s.workerEnv = append([]string{"REDIS_URL=" + s.redisURL, "MORAG_API_KEY=" + s.aliceKey}, env...)
	s.workerArgs = append([]string{"-redis", s.redisURL, "-queues", "gpu-tasks-alice", "-hostname", "alice-gpu@%h", "-forward-unknown", "celery"}, args...)
	s.goWorker = testenv.Start(t, "", s.workerEnv, bin, s.workerArgs...)
	if !s.goWorker.WaitOutput(`"ready."`, ready) {
		t.Fatalf("Go worker did not become ready:\n%s", s.goWorker.Output())
	}
}

// waitListed waits until /api/v1/status/workers lists a worker whose name
// starts with prefix consuming queue.
func (s *stack) waitListed(t testing.TB, prefix, queue string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, body := s.listed(prefix, queue)
		if ok {
			return
		}
		last = body
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("the gateway never listed %s* on %s; last /api/v1/status/workers: %s", prefix, queue, last)
}

// listed reports whether /api/v1/status/workers lists a worker named
// prefix* with queue.
func (s *stack) listed(prefix, queue string) (bool, string) {
	resp, err := http.Get(s.base + "/api/v1/status/workers")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body struct {
		Workers struct {
			Details map[string]struct {
				Queues []string `json:"queues"`
			} `json:"details"`
		} `json:"workers"`
	}
	if json.Unmarshal(raw, &body) != nil {
		return false, string(raw)
	}
	for name, w := range body.Workers.Details {
		if strings.HasPrefix(name, prefix) && slices.Contains(w.Queues, queue) {
			return true, string(raw)
		}
	}
	return false, string(raw)
}

// taskStatus is the part of /api/v1/status/{id} the tests read.
type taskStatus struct {
	Status string  `json:"status"`
	Error  *string `json:"error"`
}

// waitStatus polls /api/v1/status/{id} until the task reaches state.
func (s *stack) waitStatus(t *testing.T, id, state string) taskStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var st taskStatus
	for time.Now().Before(deadline) {
		// The task is alice's: only her key may read its status.
		req, _ := http.NewRequest(http.MethodGet, s.base+"/api/v1/status/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+s.aliceKey)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if st.Status == state {
				return st
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("task %s never reached %s; last status %+v", id, state, st)
	return st
}

// goLogged reports whether the Go worker logged message for task id (and
// the line passes match, when given).
func (s *stack) goLogged(t *testing.T, message, id string, match func(map[string]any) bool) bool {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(s.goWorker.Output()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if line["message"] == message && line["task_id"] == id && (match == nil || match(line)) {
			return true
		}
	}
	return false
}

// goWorker builds the Go worker and returns it with its extra flags. The
// GPU is off so that the decode path asserted ("cpu") is the same on every
// machine.
func goWorker(t *testing.T, dir string) (string, []string) {
	t.Helper()
	return build(t, dir, "./worker", "worker"), []string{"-gpu", "off", "-loglevel", "info"}
}

// build compiles pkg; a package that does not build yet skips the test
// with the compiler's reason.
func build(t testing.TB, dir, pkg, out string) string {
	t.Helper()
	bin := filepath.Join(dir, out)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = testenv.RepoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return bin
}

func ffmpeg(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command("ffmpeg", append([]string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
	}
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
