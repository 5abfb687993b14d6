package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

// workerRSSBound is what the Go worker's peak RSS (VmHWM) must stay
// under after the whole hostile corpus; idle it is ~10-15 MiB.
const workerRSSBound = 100 << 20

// TestHostileUploads sends a corpus of hostile files through the gateway
// to a Go worker (issues 17 and 18): playlists and lists pointing at a
// canary outside the task folder and at a loopback listener, resolution,
// duration, frame-rate, stream, tag and packet bombs, truncated and
// non-media files. For each: the task ends (SUCCESS or FAILURE) within its
// bound, its error is short and clean, the canary is never in the answer,
// the worker is alive and its temporary folder holds nothing but its lock.
// The worker's limits are lowered so that small files show each one.
func TestHostileUploads(t *testing.T) {
	testenv.RequireCelery(t)
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("SKIP: ffmpeg is not installed (apt-get install ffmpeg)")
	}
	dir := t.TempDir()
	secret := t.TempDir() // another user's files, outside any task folder
	canaryText := "CANARY-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	canary := filepath.Join(secret, "canary.mp4")
	ffmpeg(t, "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=2", "-c:v", "libx264", "-preset", "ultrafast",
		"-metadata", "title="+canaryText, canary)
	var hits atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.ServeFile(w, r, canary)
	})}
	go srv.Serve(l) // owner: this test
	t.Cleanup(func() { srv.Close() })
	url := "http://" + l.Addr().String() + "/canary.mp4"

	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gen := func(name string, args ...string) string {
		p := filepath.Join(dir, name)
		ffmpeg(t, append(args, p)...)
		return p
	}
	hls := func(entries ...string) string {
		s := "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"
		for _, e := range entries {
			s += "#EXTINF:2.0,\n" + e + "\n"
		}
		return s
	}
	x264 := []string{"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"}
	meta := write("tags.txt", ";FFMETADATA1\ncomment="+strings.Repeat("A", 600<<10)+"\n")
	streams := []string{"-f", "lavfi", "-i", "anullsrc=d=1", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=1", "-map", "1:v"}
	for range 200 {
		streams = append(streams, "-map", "0:a")
	}
	silent := gen("silent.mp4", append([]string{"-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=4"}, x264...)...)
	whole, err := os.ReadFile(silent)
	if err != nil {
		t.Fatal(err)
	}
	thumbs := map[string]any{"include_thumbnails": true, "extract_keyframes": true}
	// One packet per millisecond of 2x2 gray: every packet a keyframe of
	// four bytes, the shape of the laced-mkv flood (a 20 MB file once
	// listed as millions of packets and took the worker to 1.97 GB).
	flood := func(name string, packets int) string {
		p := filepath.Join(dir, name)
		cmd := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "2x2", "-r", "1000",
			"-i", "-", "-c:v", "copy", p)
		cmd.Stdin = bytes.NewReader(make([]byte, 4*packets))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("flood: %v\n%s", err, out)
		}
		return p
	}

	type want struct {
		fail    bool   // a FAILURE (else a SUCCESS)
		says    string // in the error message
		forward bool   // done by the Python stand-in
		// keyframes, on a SUCCESS, is how many keyframes come back.
		keyframes int
	}
	cases := []struct {
		name    string
		path    string
		options map[string]any
		want    want
	}{
		{"hls with file://", write("x.m3u8", hls("file://"+canary, "file://"+canary)+"#EXT-X-ENDLIST\n"), thumbs, want{fail: true, says: `detected format "hls"`}},
		{"hls with http, live (no ENDLIST)", write("live.m3u8", hls(url, url)), thumbs, want{fail: true, says: `detected format "hls"`}},
		{"hls named .mp4", write("playlist.mp4", hls(canary)+"#EXT-X-ENDLIST\n"), thumbs, want{fail: true, says: `detected format "hls"`}},
		{"ffconcat", write("list.ffconcat", "ffconcat version 1.0\nfile '"+canary+"'\nfile '"+url+"'\n"), thumbs, want{fail: true, says: `detected format "concat"`}},
		{"resolution bomb", gen("big.mp4", append([]string{"-f", "lavfi", "-i", "color=c=gray:s=4096x2304:r=2:d=1"}, x264...)...), thumbs, want{fail: true, says: "resolution limit exceeded: 4096x2304"}},
		{"10-hour-like video (2 h of 2x2)", gen("long.mkv", append([]string{"-f", "lavfi", "-i", "color=s=2x2:r=1:d=7200"}, x264...)...), thumbs, want{fail: true, says: "duration limit exceeded"}},
		{"absurd frame rate", gen("fast.mp4", append([]string{"-f", "lavfi", "-i", "testsrc=s=16x16:r=5000:d=1"}, x264...)...), thumbs, want{fail: true, says: "frame rate limit exceeded"}},
		{"201 streams", gen("streams.mkv", append(streams, append(x264, "-c:a", "pcm_s16le")...)...), thumbs, want{fail: true, says: "stream count limit exceeded: 201 streams"}},
		{"tag bomb", gen("tags.mkv", append([]string{"-f", "lavfi", "-i", "testsrc=s=64x48:r=5:d=1", "-i", meta, "-map_metadata", "1"}, x264...)...), thumbs, want{fail: true, says: "metadata size limit exceeded"}},
		{"packet flood (200k packets)", flood("flood.mkv", 200_000), map[string]any{"extract_keyframes": true}, want{fail: true, says: "packet count limit exceeded"}},
		{"60k packets, under the cap", flood("many.mkv", 60_000), thumbs, want{keyframes: 10}},
		{"truncated mp4", write("cut.mp4", string(whole[:len(whole)/2])), thumbs, want{fail: true, says: "media: "}},
		{"garbage named .mp4", write("garbage.mp4", strings.Repeat("not a video\x00\x01", 4096)), thumbs, want{fail: true, says: "corrupt or unsupported media"}},
		{"non-media of unknown kind", write("notes.bin", strings.Repeat("\x00\x01plain bytes", 512)), thumbs, want{forward: true}},
		{"a real video still works", silent, map[string]any{"include_thumbnails": true}, want{}},
	}

	workTmp := t.TempDir()
	s := startStackWith(t, []string{"TMPDIR=" + workTmp}, []string{
		"-media-max-pixels", "2073600", "-media-max-duration", "1h", "-media-max-metadata", "256KiB",
		"-media-max-packets", "100000", "-media-memory", "1GiB",
	})
	// The non-media case is handed on to Python: the Go worker forwards
	// only to a queue a live worker consumes.
	testenv.StartCeleryWorker(t, s.redisURL, "morag.worker", "-Q", "celery", "-n", "py@%h", "--concurrency", "1")
	s.waitListed(t, "py@", "celery")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			raw := s.post(t, c.path, c.options, nil)
			took := time.Since(start)
			var res result
			if err := json.Unmarshal(raw, &res); err != nil {
				t.Fatalf("answer %s: %v", raw, err)
			}
			failedMessage(t, &res)
			if took > 60*time.Second {
				t.Errorf("the task took %v; hostile input must end within a minute here", took)
			}
			if bytes.Contains(raw, []byte(canaryText)) {
				t.Errorf("the canary's content is in the answer: %s", raw)
			}
			switch {
			case c.want.fail:
				if res.Success || res.ErrorMessage == nil {
					t.Fatalf("success %v, want a FAILURE saying %q: %.300s", res.Success, c.want.says, raw)
				}
				msg := *res.ErrorMessage
				if !strings.Contains(msg, c.want.says) {
					t.Errorf("error %q does not say %q", msg, c.want.says)
				}
				for _, bad := range []string{workTmp, dir, secret, s.uploads, "@ 0x", "Invalid argument", "ffprobe output"} {
					if strings.Contains(msg, bad) {
						t.Errorf("error %q carries %q (a worker path or ffmpeg's output)", msg, bad)
					}
				}
				if len(msg) > 400 {
					t.Errorf("error is %d bytes long: %q", len(msg), msg)
				}
				t.Logf("error: %s (%v)", msg, took.Round(time.Millisecond))
			case c.want.forward:
				if !res.Success || res.Metadata["processed_by"] != "python-standin" {
					t.Errorf("want it forwarded to the Python worker: %.300s", raw)
				}
			default:
				if !res.Success || res.Metadata["processed_by"] != "morag-gpu" {
					t.Errorf("want a SUCCESS by the Go worker: %.300s", raw)
				}
				if got := res.Metadata["keyframes_count"]; c.want.keyframes > 0 && got != float64(c.want.keyframes) {
					t.Errorf("keyframes_count %v, want %d", got, c.want.keyframes)
				}
				t.Logf("success (%v)", took.Round(time.Millisecond))
			}
			select {
			case <-s.goWorker.Done():
				t.Fatalf("the Go worker died:\n%s", s.goWorker.Output())
			default:
			}
			assertOnlyLocks(t, workTmp)
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback listener was contacted %d times", n)
	}
	hwm := vmHWM(t, s.goWorker.Pid())
	t.Logf("Go worker peak RSS (VmHWM) after the corpus: %.1f MiB (bound %d MiB)", float64(hwm)/(1<<20), workerRSSBound>>20)
	if hwm > workerRSSBound {
		t.Errorf("the worker's peak RSS %d bytes is over the bound %d", hwm, workerRSSBound)
	}

	t.Run("a task past its time_limit fails and its ffmpeg is killed", func(t *testing.T) {
		long := gen("slow.mp4", append([]string{"-f", "lavfi", "-i", "testsrc=size=640x480:rate=25:duration=60"}, x264...)...)
		start := time.Now()
		raw := s.post(t, long, map[string]any{"video_quality": "720p"}, map[string]string{"time_limit": "3"})
		took := time.Since(start)
		var res result
		if err := json.Unmarshal(raw, &res); err != nil {
			t.Fatalf("answer %s: %v", raw, err)
		}
		failedMessage(t, &res)
		if res.Success || res.ErrorMessage == nil || !strings.Contains(*res.ErrorMessage, "TimeLimitExceeded") {
			t.Fatalf("want a TimeLimitExceeded FAILURE, got: %.300s", raw)
		}
		if took > 15*time.Second {
			t.Errorf("a 3 s time limit took %v to end the task", took)
		}
		t.Logf("error: %s (%v)", *res.ErrorMessage, took.Round(time.Millisecond))
		deadline := time.Now().Add(5 * time.Second)
		for len(ffmpegUnder(workTmp)) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if left := ffmpegUnder(workTmp); len(left) > 0 {
			t.Errorf("ffmpeg %v still running after the task's time limit", left)
		}
		assertOnlyLocks(t, workTmp)
	})

	t.Run("worker SIGKILLed mid-task leaves no ffmpeg and, after restart, no temp folder", func(t *testing.T) {
		long := gen("busy.mp4", append([]string{"-f", "lavfi", "-i", "testsrc=size=640x480:rate=25:duration=60"}, x264...)...)
		raw := s.post(t, long, map[string]any{"video_quality": "720p"}, map[string]string{"async": "true"})
		if !bytes.Contains(raw, []byte("task_id")) {
			t.Fatalf("async answer %s", raw)
		}
		var pids []int
		deadline := time.Now().Add(60 * time.Second)
		for len(pids) == 0 && time.Now().Before(deadline) {
			pids = ffmpegUnder(workTmp)
			time.Sleep(50 * time.Millisecond)
		}
		if len(pids) == 0 {
			t.Fatalf("no ffmpeg on %s appeared:\n%s", workTmp, s.goWorker.Output())
		}
		old := s.goWorker.Pid()
		// The worker alone, not its group: its ffmpeg children are in
		// groups of their own, so only Pdeathsig can end them.
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-s.goWorker.Done()
		deadline = time.Now().Add(5 * time.Second)
		for len(ffmpegUnder(workTmp)) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if left := ffmpegUnder(workTmp); len(left) > 0 {
			t.Fatalf("ffmpeg %v still running after the worker was SIGKILLed", left)
		}
		stale, _ := filepath.Glob(filepath.Join(workTmp, fmt.Sprintf("morag-worker-%d-*", old)))
		if len(stale) == 0 {
			t.Fatal("the killed worker left no folder: the test does not show the sweep")
		}
		s.goWorker = testenv.Start(t, "", s.workerEnv, s.workerBin, s.workerArgs...)
		if !s.goWorker.WaitOutput(`"ready."`, 60*time.Second) {
			t.Fatalf("the restarted worker did not become ready:\n%s", s.goWorker.Output())
		}
		for _, d := range stale {
			if _, err := os.Stat(d); err == nil {
				t.Errorf("the dead worker's folder %s survived the restart", d)
			}
		}
		if !strings.Contains(s.goWorker.Output(), "removed a dead worker's temporary folder") {
			t.Errorf("the restarted worker did not log the sweep:\n%s", s.goWorker.Output())
		}
	})
}

// post sends path to /process/file with gpu=true, the options and extra
// form fields, and returns the answer's body (HTTP 200, 202, or MoRAG's 500
// for a task that raised).
func (s *stack) post(t *testing.T, path string, options map[string]any, fields map[string]string) []byte {
	t.Helper()
	code, raw, _ := s.postFile(t, path, options, false, fields)
	// 500 is MoRAG's answer for a task that raised ({"detail": …}).
	if code != http.StatusOK && code != http.StatusAccepted && code != http.StatusInternalServerError {
		t.Fatalf("POST /process/file: HTTP %d: %s", code, raw)
	}
	return raw
}

// assertOnlyLocks checks that the worker's temporary folders under tmp
// hold nothing but their lock files.
func assertOnlyLocks(t *testing.T, tmp string) {
	t.Helper()
	entries, _ := os.ReadDir(tmp)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "morag-worker-") {
			t.Errorf("left in the worker's TMPDIR: %s", e.Name())
			continue
		}
		inner, _ := os.ReadDir(filepath.Join(tmp, e.Name()))
		for _, f := range inner {
			if f.Name() != ".lock" {
				t.Errorf("left in %s: %s", e.Name(), f.Name())
			}
		}
	}
}

// vmHWM reads a process's peak resident set size from /proc.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// ffmpegUnder lists running ffmpeg/ffprobe processes whose command line
// names a path under dir.
func ffmpegUnder(dir string) []int {
	procs, _ := os.ReadDir("/proc")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if base := filepath.Base(args[0]); (base == "ffmpeg" || base == "ffprobe") && strings.Contains(string(cmd), dir) {
			// A zombie has an empty cmdline, so this is a live one.
			pids = append(pids, pid)
		}
	}
	return pids
}

// failedMessage reads MoRAG's 500 answer for a task that raised
// ({"detail": "Processing failed: …"}) into res.ErrorMessage, so the
// checks above read one place.
func failedMessage(t *testing.T, res *result) {
	t.Helper()
	if res.Detail == "" {
		return
	}
	if !strings.HasPrefix(res.Detail, "Processing failed: ") {
		t.Errorf("detail %q: want MoRAG's \"Processing failed: …\"", res.Detail)
	}
	msg := strings.TrimPrefix(res.Detail, "Processing failed: ")
	res.ErrorMessage = &msg
}
