package tasks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/media/transcribe"
	"morag-gpu/worker/runner"
)

// mediaFixtures are the test inputs, generated once with ffmpeg's lavfi
// sources (nothing is downloaded).
type mediaFixtures struct {
	dir     string
	video   string // 3 s 320x240 25 fps H.264 + AAC sine
	silent  string // 3 s 320x240 25 fps H.264, no audio stream
	audio   string // 3 s MP3 sine
	missing string // why fixtures are unavailable, "" when they are there
}

var fixtures mediaFixtures

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tasks-fixtures-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	fixtures = makeFixtures(dir)
	return m.Run()
}

func makeFixtures(dir string) mediaFixtures {
	f := mediaFixtures{
		dir:    dir,
		video:  filepath.Join(dir, "clip.mp4"),
		silent: filepath.Join(dir, "silent.mp4"),
		audio:  filepath.Join(dir, "tone.mp3"),
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		f.missing = "ffmpeg is not installed (apt-get install ffmpeg)"
		return f
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "ffmpeg", append([]string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ffmpeg %v: %v: %s", args, err, out)
		}
		return nil
	}
	for _, args := range [][]string{
		{"-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
			"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-c:a", "aac", "-shortest", f.video},
		{"-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3",
			"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", f.silent},
		{"-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "libmp3lame", "-b:a", "64k", f.audio},
	} {
		if err := run(args...); err != nil {
			f.missing = err.Error()
			return f
		}
	}
	return f
}

func needFixtures(t testing.TB) {
	t.Helper()
	if fixtures.missing != "" {
		t.Skip("media fixtures unavailable: " + fixtures.missing)
	}
}

// privateTMP points TMPDIR at a fresh directory and returns a check that it
// is empty: every temporary file a task made is gone.
func privateTMP(t *testing.T) func() {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	return func() {
		t.Helper()
		entries, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Errorf("temporary file left behind: %s", filepath.Join(tmp, e.Name()))
		}
	}
}

// fakeTranscriber returns fixed segments, scaled into each window it is
// given, so the rest of the pipeline can be tested without whisper.
type fakeTranscriber struct {
	mu    sync.Mutex
	calls int
	pcm   int // samples seen
}

func (f *fakeTranscriber) Transcribe(ctx context.Context, pcm []float32, _ transcribe.Options, progress func(float64)) (*transcribe.Transcript, error) {
	if len(pcm) == 0 {
		return nil, errors.New("fake transcriber: empty PCM")
	}
	f.mu.Lock()
	f.calls++
	f.pcm += len(pcm)
	f.mu.Unlock()
	if progress != nil {
		progress(0.5)
		progress(1)
	}
	d := time.Duration(len(pcm)) * time.Second / transcribe.SampleRate
	return &transcribe.Transcript{
		Language: "en",
		Duration: d,
		Segments: []transcribe.Segment{
			{Start: 0, End: d / 2, Text: "ask not what your country can do for you", Confidence: -0.2},
			{Start: d / 2, End: d, Text: "ask what you can do for your country", Confidence: -0.3},
		},
	}, nil
}

func (f *fakeTranscriber) Close() error { return nil }

func (f *fakeTranscriber) seen() (calls, samples int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.pcm
}

// fileServer serves one file the way the gateway does: Range support, a
// sha256 header and the original name in Content-Disposition.
type fileServer struct {
	*httptest.Server
	data []byte

	mu       sync.Mutex
	requests []*http.Request
	dropOnce bool   // the first full GET sends half the body and drops the connection
	sha      string // X-Content-SHA256 value; "" sends none
	name     string
	ctype    string
	status   int // non-zero: answer every request with this status
	uploads  []upload
	uploadOK bool
}

type upload struct {
	resultData string
	fileName   string
	file       []byte
	auth       string
}

func newFileServer(t *testing.T, path, name string) *fileServer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	fs := &fileServer{data: data, sha: hex.EncodeToString(sum[:]), name: name, ctype: "application/octet-stream", uploadOK: true}
	fs.Server = httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fileServer) serve(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	fs.requests = append(fs.requests, r.Clone(context.Background()))
	drop := fs.dropOnce && r.Header.Get("Range") == ""
	if drop {
		fs.dropOnce = false
	}
	status, sha, name, ctype, uploadOK := fs.status, fs.sha, fs.name, fs.ctype, fs.uploadOK
	fs.mu.Unlock()

	if r.Method == http.MethodPost && r.URL.Path == "/api/v1/files/upload-result" {
		fs.receiveUpload(w, r, uploadOK)
		return
	}
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	h := w.Header()
	if sha != "" {
		h.Set("X-Content-SHA256", sha)
	}
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	h.Set("Content-Type", ctype)
	h.Set("ETag", `"v1"`)
	if drop {
		h.Set("Content-Length", strconv.Itoa(len(fs.data)))
		w.WriteHeader(http.StatusOK)
		w.Write(fs.data[:len(fs.data)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(fs.data))
}

func (fs *fileServer) receiveUpload(w http.ResponseWriter, r *http.Request, ok bool) {
	if !ok {
		w.Header().Set("WWW-Authenticate", "Bearer")
		http.Error(w, `{"detail":"Valid API key required"}`, http.StatusUnauthorized)
		return
	}
	if err := r.ParseMultipartForm(64 << 20); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	up := upload{resultData: r.FormValue("result_data"), auth: r.Header.Get("Authorization")}
	if f, hdr, err := r.FormFile("file"); err == nil {
		var b bytes.Buffer
		b.ReadFrom(f)
		f.Close()
		up.file, up.fileName = b.Bytes(), hdr.Filename
	}
	fs.mu.Lock()
	fs.uploads = append(fs.uploads, up)
	n := len(fs.uploads)
	fs.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"status":"success","message":"Result uploaded successfully","result_id":"r%d"}`, n)
}

func (fs *fileServer) requestLog() []*http.Request {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]*http.Request(nil), fs.requests...)
}

func (fs *fileServer) uploadLog() []upload {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]upload(nil), fs.uploads...)
}

// newTestMedia builds the task handlers with test settings: fast retries
// and logs into the test log.
func newTestMedia(t *testing.T, cfg MediaConfig) *mediaTasks {
	t.Helper()
	if cfg.ForwardQueue == "" {
		cfg.ForwardQueue = "celery"
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	m, err := newMediaTasks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*downloader{m.files, m.urls} {
		d.backoff = 10 * time.Millisecond
		d.idle = 5 * time.Second
	}
	return m
}

// newTask is a task as the runner would hand it over (without a server, so
// states are not stored).
func newTask(name string, args ...any) *runner.Task {
	return &runner.Task{ID: "task-" + strconv.FormatInt(time.Now().UnixNano(), 36), Name: name, Queue: "gpu-tasks-alice",
		Args: args, Kwargs: map[string]any{}, Hostname: "gpu@test"}
}

// asForward returns the ForwardError in err, failing the test when there
// is none.
func asForward(t *testing.T, err error) *runner.ForwardError {
	t.Helper()
	var fe *runner.ForwardError
	if !errors.As(err, &fe) {
		t.Fatalf("want a *runner.ForwardError, got %v", err)
	}
	return fe
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
