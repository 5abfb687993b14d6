package tasks

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"morag-gpu/media"
	"morag-gpu/worker/runner"
)

func TestRegisterMediaNames(t *testing.T) {
	mux := runner.NewMux()
	if err := RegisterMedia(mux, MediaConfig{ForwardQueue: "celery"}); err != nil {
		t.Fatal(err)
	}
	names := strings.Join(mux.Names(), " ")
	for _, want := range append([]string{ProcessFileRemote, ProcessURLRemote, ProcessFile}, pythonTasks()...) {
		if !strings.Contains(names, want) {
			t.Errorf("%s not registered (have %s)", want, names)
		}
	}
	if err := RegisterMedia(runner.NewMux(), MediaConfig{NoTranscriber: "sometimes"}); err == nil {
		t.Error("a bad -no-transcriber policy was accepted")
	}
}

func TestNonMediaIsForwardedUnchanged(t *testing.T) {
	done := privateTMP(t)
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<html>a page</html>"))
	}))
	defer srv.Close()
	m := newTestMedia(t, MediaConfig{ForwardQueue: "celery", AllowPrivateURLs: true, Transcriber: &fakeTranscriber{}})
	ctx := testCtx(t)
	// Files behind the gateway's extension-less URLs: known by their
	// Content-Disposition name, or by the probe.
	docs := t.TempDir()
	os.WriteFile(filepath.Join(docs, "report.pdf"), []byte("%PDF-1.4\n%\xe2\xe3\n1 0 obj\n<<>>\nendobj\n"), 0o644)
	os.WriteFile(filepath.Join(docs, "notes"), []byte("just some notes, not media at all\n"), 0o644)
	pdf := newFileServer(t, filepath.Join(docs, "report.pdf"), "report.pdf")
	notes := newFileServer(t, filepath.Join(docs, "notes"), "notes")

	for _, tc := range []struct {
		name string
		call func() (any, error)
		hits int // requests the decision may cost
	}{
		{"pdf content type", func() (any, error) {
			return m.processFileRemote(ctx, newTask(ProcessFileRemote, srv.URL+"/f/doc", "alice", "application/pdf", map[string]any{}))
		}, 0},
		{"morag document type", func() (any, error) {
			return m.processFileRemote(ctx, newTask(ProcessFileRemote, srv.URL+"/f/doc", "alice", "document", nil))
		}, 0},
		{"pdf extension", func() (any, error) { return m.processFile(ctx, newTask(ProcessFile, "/shared/report.pdf")) }, 0},
		{"pdf by content-disposition", func() (any, error) {
			return m.processFileRemote(ctx, newTask(ProcessFileRemote, pdf.URL+"/api/v1/files/abc?token=t", "alice", nil, nil))
		}, 0},
		{"not media by probe", func() (any, error) {
			return m.processFileRemote(ctx, newTask(ProcessFileRemote, notes.URL+"/api/v1/files/def?token=t", "alice", nil, nil))
		}, 0},
		{"web page url", func() (any, error) {
			return m.processURLRemote(ctx, newTask(ProcessURLRemote, srv.URL+"/article", "alice"))
		}, 1},
		{"youtube url", func() (any, error) {
			return m.processURLRemote(ctx, newTask(ProcessURLRemote, "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "alice", nil, nil))
		}, 0},
		{"web page task", func() (any, error) {
			return m.forwardTask(ctx, newTask("morag.worker.process_web_page_task_remote", "https://example.com", "alice"))
		}, 0},
		{"ingest task", func() (any, error) {
			return m.forwardTask(ctx, newTask("morag.ingest_tasks.ingest_file_task", "/tmp/x.pdf", "document", map[string]any{}))
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits
			v, err := tc.call()
			if v != nil {
				t.Errorf("a forwarded task returned a value: %v", v)
			}
			fe := asForward(t, err)
			if fe.Queue != "celery" || fe.Reason == "" {
				t.Errorf("forwarded to %q (reason %q), want celery with a reason", fe.Queue, fe.Reason)
			}
			if hits-before > tc.hits {
				t.Errorf("the decision cost %d requests, want at most %d", hits-before, tc.hits)
			}
		})
	}

	// Without a forward queue the task fails, saying what to do.
	m = newTestMedia(t, MediaConfig{ForwardQueue: "x"})
	m.cfg.ForwardQueue = ""
	_, err := m.processFileRemote(ctx, newTask(ProcessFileRemote, srv.URL+"/f", "alice", "document"))
	var fe *runner.ForwardError
	if err == nil || errors.As(err, &fe) || !strings.Contains(err.Error(), "-forward-unknown") {
		t.Errorf("with no forward queue: err = %v, want a plain error naming -forward-unknown", err)
	}
	done()
}

func TestNoTranscriberForwardsOrFails(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	ctx := testCtx(t)
	audio := newFileServer(t, fixtures.audio, "tone.mp3")
	video := newFileServer(t, fixtures.video, "clip.mp4")
	reason := "built without the whisper build tag"

	fwd := newTestMedia(t, MediaConfig{ForwardQueue: "celery", TranscriberReason: reason})
	// Audio declared: forwarded before anything is downloaded.
	_, err := fwd.processFileRemote(ctx, newTask(ProcessFileRemote, audio.URL+"/f/1", "alice", "audio/mpeg", nil))
	if fe := asForward(t, err); fe.Queue != "celery" || !strings.Contains(fe.Reason, "no transcriber") || !strings.Contains(fe.Reason, reason) {
		t.Errorf("forward %+v: want celery and a reason naming the missing transcriber", fe)
	}
	if n := len(audio.requestLog()); n != 0 {
		t.Errorf("audio was downloaded %d times before being forwarded", n)
	}
	// A video with an audio track: known after the probe.
	_, err = fwd.processFileRemote(ctx, newTask(ProcessFileRemote, video.URL+"/f/2", "alice", nil, nil))
	if fe := asForward(t, err); !strings.Contains(fe.Reason, "video's audio track") {
		t.Errorf("reason %q should say the video's audio needs a transcript", fe.Reason)
	}
	// Shared storage, no content type: the extension says audio.
	_, err = fwd.processFile(ctx, newTask(ProcessFile, fixtures.audio, nil, nil))
	asForward(t, err)

	fail := newTestMedia(t, MediaConfig{ForwardQueue: "celery", TranscriberReason: reason, NoTranscriber: NoTranscriberFail})
	for _, task := range []*runner.Task{
		newTask(ProcessFileRemote, audio.URL+"/f/3", "alice", "audio", nil),
		newTask(ProcessFileRemote, video.URL+"/f/4", "alice", "video", nil),
	} {
		v, err := fail.processFileRemote(ctx, task)
		var fe *runner.ForwardError
		if v != nil || err == nil || errors.As(err, &fe) {
			t.Fatalf("fail mode: got %v, %v; want a plain error", v, err)
		}
		for _, want := range []string{"no transcriber", reason, "-no-transcriber forward"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("fail mode error %q does not say %q", err, want)
			}
		}
	}
	done()
}

func TestVideoWithFakeTranscriber(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	srv := newFileServer(t, fixtures.video, "holiday clip.mp4")
	srv.dropOnce = true // the download resumes on the way
	tr := &fakeTranscriber{}
	m := newTestMedia(t, MediaConfig{Transcriber: tr, Tools: &media.Tools{}})
	task := newTask(ProcessFileRemote, srv.URL+"/api/v1/files/t1?token=abc", "alice", "video/mp4",
		map[string]any{"include_thumbnails": true})

	v, err := m.processFileRemote(testCtx(t), task)
	if err != nil {
		t.Fatalf("process: %v", err)
	}
	res := roundTrip(t, v)
	for _, k := range []string{"success", "content", "metadata", "processing_time", "error_message", "user_id", "thumbnails"} {
		if _, ok := res[k]; !ok {
			t.Errorf("result has no %q (MoRAG's shape)", k)
		}
	}
	if res["success"] != true || res["error_message"] != nil || res["user_id"] != "alice" {
		t.Errorf("success %v error_message %v user_id %v", res["success"], res["error_message"], res["user_id"])
	}
	meta := res["metadata"].(map[string]any)
	if d, _ := meta["duration"].(float64); math.Abs(d-3) > 0.2 {
		t.Errorf("duration %v, want about 3", meta["duration"])
	}
	checks := map[string]any{"resolution": "320x240", "fps": 25.0, "has_audio": true, "decode": "cpu",
		"thumbnails_count": 5.0, "segments_count": 2.0, "language": "en", "filename": "holiday clip.mp4", "processed_by": "morag-gpu"}
	for k, want := range checks {
		if meta[k] != want {
			t.Errorf("metadata[%q] = %v, want %v", k, meta[k], want)
		}
	}
	if dl, _ := meta["download"].(map[string]any); dl["sha256_verified"] != true || dl["resumes"] != 1.0 {
		t.Errorf("download metadata %v: want a verified, once-resumed download", meta["download"])
	}
	// Where the time went: every stage this task ran, in seconds.
	timings, _ := meta["timings"].(map[string]any)
	for _, stage := range []string{"download", "probe", "decode_audio", "transcribe", "thumbnails"} {
		if v, ok := timings[stage].(float64); !ok || v < 0 {
			t.Errorf("timings[%q] = %v, want seconds (timings %v)", stage, timings[stage], timings)
		}
	}
	if _, ok := timings["proxy"]; ok {
		t.Errorf("timings %v has a proxy stage the task did not run", timings)
	}
	content := res["content"].(string)
	for _, want := range []string{"# Video Analysis", "| Resolution | 320x240 |", "| Audio | Yes (aac) |", "## Transcript",
		"ask not what your country can do for you", "## Thumbnails", "![Thumbnail 5](thumbnail_5.jpg)"} {
		if !strings.Contains(content, want) {
			t.Errorf("markdown lacks %q:\n%s", want, content)
		}
	}
	thumbs := res["thumbnails"].([]any)
	if len(thumbs) != 5 {
		t.Fatalf("%d thumbnails, want 5", len(thumbs))
	}
	for i, th := range thumbs {
		s, _ := th.(string)
		b64, ok := strings.CutPrefix(s, "data:image/jpeg;base64,")
		jpg, err := base64.StdEncoding.DecodeString(b64)
		if !ok || err != nil || len(jpg) < 4 || jpg[0] != 0xFF || jpg[1] != 0xD8 {
			t.Errorf("thumbnail %d is not a JPEG data URL", i)
		}
	}
	if calls, samples := tr.seen(); calls == 0 || math.Abs(float64(samples)/16000-3) > 0.2 {
		t.Errorf("transcriber saw %d calls, %d samples; want about 3 s of 16 kHz PCM", calls, samples)
	}
	done()
}

func TestSilentVideoNeedsNoTranscriber(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	srv := newFileServer(t, fixtures.silent, "silent.mp4")
	m := newTestMedia(t, MediaConfig{TranscriberReason: "none in this build"})
	v, err := m.processFileRemote(testCtx(t), newTask(ProcessFileRemote, srv.URL+"/f", "alice", nil, nil))
	if err != nil {
		t.Fatalf("a video without audio must not need a transcriber: %v", err)
	}
	res := roundTrip(t, v)
	meta := res["metadata"].(map[string]any)
	if meta["has_audio"] != false || meta["decode"] != "cpu" || meta["resolution"] != "320x240" {
		t.Errorf("metadata %v", meta)
	}
	if _, ok := res["thumbnails"]; ok {
		t.Error("thumbnails returned without include_thumbnails")
	}
	if c := res["content"].(string); !strings.Contains(c, "| Audio | No |") || strings.Contains(c, "## Transcript") {
		t.Errorf("content:\n%s", c)
	}
	done()
}

func TestAudioFromSharedStorage(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	m := newTestMedia(t, MediaConfig{Transcriber: &fakeTranscriber{}})
	v, err := m.processFile(testCtx(t), newTask(ProcessFile, fixtures.audio, "audio", map[string]any{"language": "en"}))
	if err != nil {
		t.Fatal(err)
	}
	res := roundTrip(t, v)
	if _, ok := res["user_id"]; ok {
		t.Error("process_file_task returns no user_id")
	}
	meta := res["metadata"].(map[string]any)
	for k, want := range map[string]any{"sample_rate": 44100.0, "channels": 1.0, "word_count": 17.0, "segment_count": 2.0,
		"filename": "tone.mp3", "file_extension": "mp3", "decode": "cpu"} {
		if meta[k] != want {
			t.Errorf("metadata[%q] = %v, want %v", k, meta[k], want)
		}
	}
	content := res["content"].(string)
	for _, want := range []string{"# Audio Transcription: tone.mp3", "## Metadata", "- **Duration**: 00:00:03", "## Full Transcript",
		"ask not what your country can do for you ask what you can do for your country", "## Detailed Transcript",
		"[00:00:00] ask not"} {
		if !strings.Contains(content, want) {
			t.Errorf("markdown lacks %q:\n%s", want, content)
		}
	}
	// The input on shared storage is the gateway's: it stays.
	if _, err := os.Stat(fixtures.audio); err != nil {
		t.Errorf("the shared input was removed: %v", err)
	}
	_, err = m.processFile(testCtx(t), newTask(ProcessFile, filepath.Join(fixtures.dir, "gone.mp3")))
	if err == nil || !strings.Contains(err.Error(), "shared") {
		t.Errorf("missing shared file: err = %v, want it to explain shared storage", err)
	}
	done()
}

func TestURLTaskRefusesPrivateAddresses(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	srv := newFileServer(t, fixtures.silent, "silent.mp4")
	ctx := testCtx(t)
	guarded := newTestMedia(t, MediaConfig{})
	// By IP and by a name that resolves to loopback: the check is on the
	// dialled address, so no DNS answer gets around it.
	for _, u := range []string{srv.URL + "/v.mp4", strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/v.mp4"} {
		_, err := guarded.processURLRemote(ctx, newTask(ProcessURLRemote, u, "alice", "video", nil))
		if err == nil || !strings.Contains(err.Error(), "loopback") || !strings.Contains(err.Error(), "-allow-private-urls") {
			t.Errorf("%s: err = %v, want a refusal naming loopback and -allow-private-urls", u, err)
		}
	}
	if n := len(srv.requestLog()); n != 0 {
		t.Errorf("the private server got %d requests", n)
	}

	open := newTestMedia(t, MediaConfig{AllowPrivateURLs: true, MaxDownloadSize: 1 << 30, APIKey: "secret-key"})
	v, err := open.processURLRemote(ctx, newTask(ProcessURLRemote, srv.URL+"/v.mp4", "alice", nil, nil))
	if err != nil {
		t.Fatalf("with -allow-private-urls: %v", err)
	}
	if res := roundTrip(t, v); res["user_id"] != "alice" || res["success"] != true {
		t.Errorf("result %v", res)
	}
	if a := srv.requestLog()[0].Header.Get("Authorization"); a != "" {
		t.Errorf("the API key was sent to a third-party URL: %q", a)
	}

	small := newTestMedia(t, MediaConfig{AllowPrivateURLs: true, MaxDownloadSize: 1000})
	_, err = small.processURLRemote(ctx, newTask(ProcessURLRemote, srv.URL+"/v.mp4", "alice", nil, nil))
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("size limit: err = %v, want ErrTooLarge", err)
	}
	done()
}

func TestProxyTranscodeIsUploaded(t *testing.T) {
	needFixtures(t)
	done := privateTMP(t)
	srv := newFileServer(t, fixtures.silent, "silent.mp4")
	m := newTestMedia(t, MediaConfig{APIKey: "k"})
	task := newTask(ProcessFileRemote, srv.URL+"/api/v1/files/t?token=x", "alice", "video", map[string]any{"video_quality": "720p"})
	v, err := m.processFileRemote(testCtx(t), task)
	if err != nil {
		t.Fatal(err)
	}
	meta := roundTrip(t, v)["metadata"].(map[string]any)
	proxy, _ := meta["proxy"].(map[string]any)
	if proxy["uploaded"] != true || proxy["encode"] != "libx264" || proxy["decode"] != "cpu" {
		t.Fatalf("proxy metadata %v", proxy)
	}
	if ref, _ := proxy["upload"].(map[string]any); ref["result_id"] != "r1" {
		t.Errorf("upload reference %v, want the gateway's answer", proxy["upload"])
	}
	if meta["encode"] != "libx264" {
		t.Errorf("metadata encode %v", meta["encode"])
	}
	ups := srv.uploadLog()
	if len(ups) != 1 {
		t.Fatalf("%d uploads", len(ups))
	}
	var rd map[string]any
	if err := json.Unmarshal([]byte(ups[0].resultData), &rd); err != nil || rd["task_id"] != task.ID {
		t.Errorf("result_data %q: want JSON with the task id", ups[0].resultData)
	}
	if ups[0].auth != "Bearer k" || ups[0].fileName != "silent_720p.mp4" || len(ups[0].file) < 1000 || string(ups[0].file[4:8]) != "ftyp" {
		t.Errorf("upload auth %q name %q, %d bytes: want an MP4 sent with the key", ups[0].auth, ups[0].fileName, len(ups[0].file))
	}

	// A gateway that refuses the upload costs the proxy, not the result.
	srv.mu.Lock()
	srv.uploadOK = false
	srv.mu.Unlock()
	v, err = m.processFileRemote(testCtx(t), newTask(ProcessFileRemote, srv.URL+"/f", "alice", "video", map[string]any{"video_quality": "720p"}))
	if err != nil {
		t.Fatalf("a failed upload failed the task: %v", err)
	}
	res := roundTrip(t, v)
	proxy, _ = res["metadata"].(map[string]any)["proxy"].(map[string]any)
	if res["success"] != true || proxy["uploaded"] != false || !strings.Contains(proxy["error"].(string), "401") {
		t.Errorf("after a refused upload: success %v proxy %v", res["success"], proxy)
	}
	done()
}

func TestBadArgumentsAreClearErrors(t *testing.T) {
	m := newTestMedia(t, MediaConfig{})
	ctx := testCtx(t)
	for _, tc := range []struct {
		task *runner.Task
		want string
	}{
		{newTask(ProcessFileRemote), "missing 1 required positional argument: 'file_url'"},
		{newTask(ProcessFileRemote, "http://gw/f"), "missing 1 required positional argument: 'user_id'"},
		{newTask(ProcessFileRemote, 42, "alice"), "file_url must be a string"},
		{newTask(ProcessFileRemote, "http://gw/f", "alice", nil, "opts"), "task_options must be a dict"},
		{newTask(ProcessFileRemote, "http://gw/f", "alice", nil, map[string]any{"include_thumbnails": []any{}}), "include_thumbnails"},
		{newTask(ProcessFileRemote, "ftp://gw/f", "alice"), "not an http or https URL"},
		{newTask(ProcessURLRemote, "file:///etc/passwd", "alice"), "not an http or https URL"},
	} {
		v, err := func() (v any, err error) {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%v panicked: %v", tc.task.Args, p)
				}
			}()
			if tc.task.Name == ProcessURLRemote {
				return m.processURLRemote(ctx, tc.task)
			}
			return m.processFileRemote(ctx, tc.task)
		}()
		if v != nil || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, %v; want an error saying %q", tc.task.Args, v, err, tc.want)
		}
	}
}

func TestKindFromContentType(t *testing.T) {
	for ct, want := range map[string]kind{
		"": kindUnknown, "audio": kindAudio, "VIDEO": kindVideo, "document": kindOther, "web": kindOther,
		"youtube": kindOther, "image": kindOther, "audio/mpeg": kindAudio, "video/mp4; codecs=avc1": kindVideo,
		"application/pdf": kindOther, "text/html": kindOther, "application/octet-stream": kindUnknown,
		"image/png": kindOther,
	} {
		if got := kindFromContentType(ct); got != want {
			t.Errorf("kindFromContentType(%q) = %v, want %v", ct, got, want)
		}
	}
}

// roundTrip encodes v as the runner stores it and decodes it as a client
// reads it.
func roundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("result is not JSON-encodable: %v", err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
