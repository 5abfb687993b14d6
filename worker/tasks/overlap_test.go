package tasks

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/media/transcribe"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// holdTranscriber is fakeTranscriber that, once hold is set, blocks every
// call until hold is closed (or its context ends), announcing each call on
// entered; it records the most calls that ran at once.
type holdTranscriber struct {
	fakeTranscriber
	entered chan struct{}
	hold    chan struct{}

	mu          sync.Mutex
	active, top int
}

func newHoldTranscriber() *holdTranscriber {
	return &holdTranscriber{entered: make(chan struct{}, 16), hold: make(chan struct{})}
}

func (h *holdTranscriber) Transcribe(ctx context.Context, pcm []float32, opts transcribe.Options, progress func(float64)) (*transcribe.Transcript, error) {
	h.mu.Lock()
	h.active++
	h.top = max(h.top, h.active)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.active--
		h.mu.Unlock()
	}()
	h.entered <- struct{}{}
	select {
	case <-h.hold:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	return h.fakeTranscriber.Transcribe(ctx, pcm, opts, progress)
}

func (h *holdTranscriber) most() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.top
}

// slowServer serves the audio fixture only once serve is closed: a
// download stuck on a slow gateway. requested says a request arrived.
func slowServer(t *testing.T) (srv *httptest.Server, requested <-chan struct{}, serve func()) {
	t.Helper()
	data, err := os.ReadFile(fixtures.audio)
	if err != nil {
		t.Fatal(err)
	}
	req := make(chan struct{}, 4)
	gate := make(chan struct{})
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req <- struct{}{}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "audio/mpeg")
		w.Header().Set("Content-Disposition", `attachment; filename="slow.mp3"`)
		w.Write(data)
	}))
	var once sync.Once
	serve = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(srv.Close)
	t.Cleanup(serve) // runs before srv.Close: a blocked handler lets go
	return srv, req, serve
}

// With -concurrency 2 and -transcribe-streams 1: a task stuck downloading
// holds no transcription stream, so another task transcribes meanwhile;
// once it is downloaded, it waits for the stream (saying so) rather than
// running a second transcription.
func TestSlowDownloadDoesNotHoldTheTranscriber(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	tr := newHoldTranscriber()
	rd, client := startRunnerWith(t, MediaConfig{ForwardQueue: "celery", Transcriber: tr, TranscribeStreams: 1},
		func(c *runner.Config) { c.Concurrency = 2 })
	ctx := testCtx(t)
	srv, requested, serve := slowServer(t)

	slowID := protocol.NewID()
	slowStates := watchMeta(t, rd, slowID, func(status, msg string) string { return strings.TrimSpace(status + " " + msg) })
	slow, err := client.Send(ctx, ProcessFileRemote, []any{srv.URL + "/api/v1/files/slow.mp3", "alice", "audio/mpeg", nil}, nil,
		protocol.SendOptions{TaskID: slowID, Queue: "gpu-tasks-alice"})
	if err != nil {
		t.Fatal(err)
	}
	<-requested // the slow task is downloading, on one of the two slots

	fast, err := client.Send(ctx, ProcessFile, []any{fixtures.audio, "audio/mpeg"}, nil, protocol.SendOptions{Queue: "gpu-tasks-alice"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tr.entered: // the other task transcribes while the download hangs
	case <-ctx.Done():
		t.Fatal("the second task never reached the transcriber while the first was downloading")
	}

	// Let the download finish: the slow task must now wait for the one
	// stream, which the other task holds, and report that it does.
	serve()
	waitForProgress(t, ctx, rd, slowID, "waiting for a transcriber")
	if n := tr.most(); n != 1 {
		t.Fatalf("%d transcriptions ran at once with -transcribe-streams 1", n)
	}
	close(tr.hold)
	for _, ar := range []*protocol.AsyncResult{fast, slow} {
		if _, err := ar.Get(ctx); err != nil {
			t.Fatalf("task %s: %v", ar.ID, err)
		}
	}
	if n := tr.most(); n != 1 {
		t.Errorf("%d transcriptions ran at once with -transcribe-streams 1", n)
	}
	seen := strings.Join(slowStates(), " | ")
	if !strings.Contains(seen, "PROGRESS waiting for a transcriber | PROGRESS transcribing") {
		t.Errorf("the slow task's states do not show it waiting, then transcribing: %s", seen)
	}
	done()
}

// waitForProgress polls the task's stored state until its PROGRESS message
// is msg (the test's context bounds it).
func waitForProgress(t *testing.T, ctx context.Context, rd interface{ Conn() redis.Conn }, id, msg string) {
	t.Helper()
	conn := rd.Conn()
	defer conn.Close()
	for {
		raw, err := redis.String(conn.Do("GET", "celery-task-meta-"+id))
		if err == nil && (strings.Contains(raw, `"message": "`+msg+`"`) || strings.Contains(raw, `"message":"`+msg+`"`)) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("task %s never reported %q; last state %s", id, msg, raw)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A task waiting for a transcription stream ends as soon as it is
// cancelled (revoked, or past its time limit), never touching the
// transcriber, and leaves no temporary files.
func TestCancelWhileWaitingForTheTranscriber(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	tr := newHoldTranscriber()
	close(tr.hold)
	m := newTestMedia(t, MediaConfig{Transcriber: tr, TranscribeStreams: 1})
	if err := m.proc.gate.Acquire(testCtx(t)); err != nil { // another task's transcription
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(testCtx(t))
	revoked := errors.New("revoked")
	res := make(chan error, 1)
	go func() { // owner: this test; ends when the task does
		_, err := m.processFile(ctx, newTask(ProcessFile, fixtures.audio, "audio/mpeg"))
		res <- err
	}()
	for m.proc.gate.Waiting() == 0 {
		select {
		case err := <-res:
			t.Fatalf("the task ended before waiting for the transcriber: %v", err)
		case <-ctx.Done():
			t.Fatal("the task never waited for the transcriber")
		default:
			runtime.Gosched()
		}
	}
	cancel(revoked)
	err := <-res
	if !errors.Is(err, revoked) || !strings.Contains(err.Error(), "waiting for a transcriber") {
		t.Errorf("err = %v, want the cancellation's cause while waiting for a transcriber", err)
	}
	if calls, _ := tr.seen(); calls != 0 || tr.most() != 0 {
		t.Errorf("a cancelled waiter reached the transcriber (%d calls)", calls)
	}
	m.proc.gate.Release()
	if m.proc.gate.InUse() != 0 || m.proc.gate.Waiting() != 0 {
		t.Errorf("gate left with %d in use, %d waiting", m.proc.gate.InUse(), m.proc.gate.Waiting())
	}
	done()
}

// failTranscriber fails every call, once the video's thumbnails and
// keyframes (cut alongside the transcription) may still be running.
type failTranscriber struct{ fakeTranscriber }

func (*failTranscriber) Transcribe(context.Context, []float32, transcribe.Options, func(float64)) (*transcribe.Transcript, error) {
	return nil, errors.New("fake transcriber: out of memory")
}

// A video's frames are cut while its audio is transcribed; when the
// transcription fails, the frame work is stopped and waited for, so the
// task fails with the transcription's error and leaves nothing behind.
func TestFramesAlongsideAFailedTranscription(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	m := newTestMedia(t, MediaConfig{Transcriber: &failTranscriber{}, TranscribeStreams: 1})
	_, err := m.processFile(testCtx(t), newTask(ProcessFile, fixtures.video, "video/mp4",
		map[string]any{"include_thumbnails": true, "extract_keyframes": true}))
	if err == nil || !strings.Contains(err.Error(), "out of memory") {
		t.Fatalf("err = %v, want the transcription's failure", err)
	}
	if m.proc.gate.InUse() != 0 {
		t.Error("a failed transcription kept its stream")
	}
	done()
}
