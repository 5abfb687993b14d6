// Package bundle tests the self-contained GPU worker bundle (`make bundle`,
// scripts/bundle): unpacked into an empty folder and run with a PATH that
// has no ffmpeg, ffprobe, Go or espeak-ng, it must work with nothing from
// outside but glibc, the C++ runtime it ships a copy of, Redis (the broker)
// and, on a GPU box, the NVIDIA driver.
//
// The bundle takes many minutes to build (ffmpeg and whisper.cpp), so the
// test uses dist/morag-gpu-bundle.tar.gz when `make bundle` made it, builds
// it first when BUNDLE_TEST=1, and otherwise skips, saying so.
package bundle

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"morag-gpu/auth"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// Programs the bundle must not need from the system.
var hidden = map[string]bool{"ffmpeg": true, "ffprobe": true, "ffplay": true, "go": true, "gofmt": true, "espeak-ng": true, "nvcc": true}

// Libraries that may resolve outside the bundle: glibc's. libstdc++ and
// libgcc_s may too, when the bundle ships them in lib/compat (its
// scripts use those when the system's are missing or too old).
var glibc = map[string]bool{"linux-vdso.so.1": true, "libc.so.6": true, "libm.so.6": true, "libpthread.so.0": true,
	"libdl.so.2": true, "librt.so.1": true, "ld-linux-x86-64.so.2": true, "libresolv.so.2": true}

func unpack(t *testing.T) string {
	t.Helper()
	root := testenv.RepoRoot(t)
	tarball := filepath.Join(root, "dist", "morag-gpu-bundle.tar.gz")
	if os.Getenv("BUNDLE_TEST") == "1" {
		cmd := exec.Command("make", "bundle")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make bundle: %v\n%s", err, out)
		}
	}
	if _, err := os.Stat(tarball); err != nil {
		t.Skip("SKIP: no dist/morag-gpu-bundle.tar.gz to test: run `make bundle` first (it builds ffmpeg and " +
			"whisper.cpp: many minutes), or set BUNDLE_TEST=1 to have this test build it")
	}
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xzf", tarball, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", tarball, err, out)
	}
	b, err := filepath.EvalSymlinks(filepath.Join(dir, "morag-gpu-bundle"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// strippedPath is a folder of links to every program on PATH except the
// hidden ones: the PATH of a box with no ffmpeg and no Go.
func strippedPath(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sysbin")
	os.MkdirAll(dir, 0o755)
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			name := e.Name()
			if hidden[name] {
				continue
			}
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
				continue
			}
			os.Symlink(p, filepath.Join(dir, name)) // the first on PATH wins
		}
	}
	return dir
}

// env is what every bundled program runs with: the stripped PATH, no
// LD_LIBRARY_PATH, no Go.
func env(sysbin string, extra ...string) []string {
	return append([]string{"PATH=" + sysbin, "LD_LIBRARY_PATH=", "GOROOT=", "GOPATH=", "GOFLAGS="}, extra...)
}

func TestBundle(t *testing.T) {
	b := unpack(t)
	sysbin := strippedPath(t)
	run := func(timeout time.Duration, name string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), env(sysbin)...)
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	t.Run("under 64 MiB", func(t *testing.T) {
		var size int64
		filepath.Walk(b, func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				size += fi.Size()
			}
			return nil
		})
		t.Logf("bundle: %.1f MiB in files", float64(size)/(1<<20))
		if size > 64<<20 {
			t.Errorf("the bundle holds %.1f MiB of files, over 64 MiB", float64(size)/(1<<20))
		}
	})

	t.Run("PATH has no system ffmpeg or Go", func(t *testing.T) {
		out, _ := run(10*time.Second, "bash", "-c", "source "+b+"/libexec/bundle-env.sh; command -v ffmpeg ffprobe go || true")
		lines := strings.Fields(out)
		if len(lines) != 2 || lines[0] != b+"/bin/ffmpeg" || lines[1] != b+"/bin/ffprobe" {
			t.Fatalf("with the bundle's environment, ffmpeg/ffprobe/go resolve to %q; want only the bundle's ffmpeg and ffprobe", lines)
		}
	})

	t.Run("ldd: nothing outside the bundle but glibc", func(t *testing.T) {
		compat := map[string]bool{}
		ents, _ := os.ReadDir(filepath.Join(b, "lib", "compat"))
		for _, e := range ents {
			compat[e.Name()] = true
		}
		n := 0
		filepath.Walk(b, func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() || !isELF(p) {
				return nil
			}
			n++
			out, _ := run(30*time.Second, "ldd", p)
			if strings.Contains(out, "not a dynamic executable") || strings.Contains(out, "statically linked") {
				return nil
			}
			rel, _ := filepath.Rel(b, p)
			for _, line := range strings.Split(out, "\n") {
				line = strings.TrimSpace(line)
				if line == "" {
					continue
				}
				if strings.Contains(line, "not found") {
					t.Errorf("%s: %s", rel, line)
					continue
				}
				name, target := lddLine(line)
				if target == "" || strings.HasPrefix(target, b+"/") {
					continue
				}
				switch {
				case glibc[name]:
				case compat[name]:
					// The system's copy, new enough (the bundle has its own in lib/compat).
				default:
					t.Errorf("%s needs %s from outside the bundle (%s)", rel, name, target)
				}
			}
			return nil
		})
		if n < 8 {
			t.Errorf("only %d ELF files in the bundle", n)
		}
		for _, want := range []string{"bin/worker", "bin/gateway", "bin/gpu-check", "bin/ffmpeg", "bin/ffprobe", "lib/libwhisper.so.1", "lib/libggml-base.so", "lib/libggml-cpu-x64.so"} {
			if _, err := os.Stat(filepath.Join(b, want)); err != nil {
				t.Errorf("the bundle lacks %s", want)
			}
		}
	})

	t.Run("gpu-check-all: every GPU row unavailable, with the reason", func(t *testing.T) {
		out, err := run(9*time.Minute, filepath.Join(b, "bin", "gpu-check-all"))
		t.Logf("gpu-check-all:\n%s", out)
		if err != nil {
			t.Fatalf("gpu-check-all: %v", err)
		}
		if !strings.Contains(out, "ffmpeg: "+b+"/bin/ffmpeg") {
			t.Errorf("gpu-check-all did not use the bundle's ffmpeg")
		}
		if !strings.Contains(out, "skipped: no nvcc") || !strings.Contains(out, "CUDA backend: none") {
			t.Errorf("without nvcc the CUDA backend build should be skipped, saying so")
		}
		if !strings.Contains(out, "gpu-check finished") {
			t.Fatalf("gpu-check did not finish")
		}
		gpuRows, cpuRows := 0, 0
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 3 || !strings.Contains(line, "  ") {
				continue
			}
			switch {
			case strings.HasPrefix(strings.TrimSpace(line), "\""), strings.HasPrefix(strings.TrimSpace(line), "{"):
				// The detection JSON above the table.
			case regexp.MustCompile(`\b(nvdec|nvenc|scale_cuda|h264_cuvid)\b`).MatchString(line):
				if strings.Contains(line, "GPU vs CPU") {
					continue
				}
				gpuRows++
				if !regexp.MustCompile(`unavailable: \S+ \(.+\)`).MatchString(line) {
					t.Errorf("GPU row without \"unavailable: <what> (<reason>)\": %s", line)
				}
			case strings.Contains(line, " cpu"):
				if strings.Contains(line, "failed") {
					t.Errorf("CPU row failed: %s", line)
				}
				cpuRows++
			}
		}
		if gpuRows < 5 || cpuRows < 4 {
			t.Errorf("%d GPU rows and %d CPU rows in the table; want at least 5 and 4", gpuRows, cpuRows)
		}
		if _, err := os.Stat(filepath.Join(b, "bin", "whisper-model-gen")); err == nil {
			// model  where  settings  streams  ×RT total  ×RT/stream …
			if !regexp.MustCompile(`(?m)^\S+\s+CPU\s+.*\s1\s+[0-9.]+\s+[0-9.]+\s`).MatchString(out) {
				t.Errorf("no whisper speed on the CPU in the output")
			}
		}
	})

	t.Run("the bundled worker finishes a video task", func(t *testing.T) { videoTask(t, b, sysbin) })
}

func videoTask(t *testing.T, b, sysbin string) {
	work := t.TempDir()
	whisper := false
	var workerArgs []string
	if _, err := os.Stat(filepath.Join(b, "bin", "whisper-model-gen")); err == nil {
		whisper = true
		model := filepath.Join(work, "ggml-gen-tiny.en.bin")
		cmd := exec.Command(filepath.Join(b, "bin", "whisper-model-gen"), "-size", "tiny.en", "-o", model)
		cmd.Env = append(os.Environ(), env(sysbin)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("whisper-model-gen: %v\n%s", err, out)
		}
		workerArgs = append(workerArgs, "-whisper-model", model)
	}
	// The input, made by the bundle's own ffmpeg (libx264 + aac).
	video := filepath.Join(work, "talk.mp4")
	ff := exec.Command(filepath.Join(b, "bin", "ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", video)
	ff.Env = append(os.Environ(), env(sysbin)...)
	if out, err := ff.CombinedOutput(); err != nil {
		t.Fatalf("the bundle's ffmpeg cannot make the test video: %v\n%s", err, out)
	}
	if !whisper {
		// Without a transcriber a video with sound is forwarded; a silent one is done here.
		silent := filepath.Join(work, "silent.mp4")
		ff := exec.Command(filepath.Join(b, "bin", "ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-i", video, "-an", "-c", "copy", silent)
		ff.Env = append(os.Environ(), env(sysbin)...)
		if out, err := ff.CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg -an: %v\n%s", err, out)
		}
		video = silent
	}

	r := testenv.StartRedis(t)
	pool, err := protocol.NewPool(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, _, err := auth.NewKeyService(pool).Create(ctx, "alice", "bundle", 1)
	if err != nil {
		t.Fatalf("create alice's key: %v", err)
	}
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	gw := testenv.Start(t, work, env(sysbin, "REDIS_URL="+r.URL(), "MORAG_ADMIN_TOKEN=bundle-admin-token-0123456789abcdef"),
		filepath.Join(b, "bin", "start-gateway"), "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-upload-dir", filepath.Join(work, "uploads"),
		"-public-url", base, "-wait-timeout", "3m")
	if !gw.WaitOutput("gateway listening", 60*time.Second) {
		t.Fatalf("the bundled gateway did not start:\n%s", gw.Output())
	}
	worker := testenv.Start(t, work, env(sysbin, "REDIS_URL="+r.URL(), "MORAG_API_KEY="+key),
		filepath.Join(b, "bin", "start-worker"),
		append([]string{"-redis", r.URL(), "-queues", "gpu-tasks-alice", "-hostname", "alice-gpu@%h", "-forward-unknown", "celery", "-loglevel", "info"}, workerArgs...)...)
	if !worker.WaitOutput(`"ready."`, 90*time.Second) {
		t.Fatalf("the bundled worker did not become ready:\n%s", worker.Output())
	}
	if whisper && !worker.WaitOutput("whisper.cpp", time.Second) {
		t.Errorf("the bundled worker did not report whisper.cpp as its transcriber:\n%s", worker.Output())
	}
	deadline := time.Now().Add(60 * time.Second)
	for !workerListed(base) {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never listed the bundled worker on gpu-tasks-alice")
		}
		time.Sleep(250 * time.Millisecond)
	}

	res := processFile(t, base, key, video)
	meta := res.Metadata
	if !res.Success || res.ErrorMessage != nil {
		t.Fatalf("success %v error %v\nworker:\n%s", res.Success, res.ErrorMessage, worker.Output())
	}
	if meta["processed_by"] != "morag-gpu" {
		t.Fatalf("processed_by %v, want morag-gpu (the bundled worker itself)\nworker:\n%s", meta["processed_by"], worker.Output())
	}
	if r, _ := meta["routing"].(map[string]any); r["queue"] != "gpu-tasks-alice" {
		t.Errorf("routing %v, want gpu-tasks-alice", meta["routing"])
	}
	for k, want := range map[string]any{"resolution": "320x240", "thumbnails_count": 5.0} {
		if meta[k] != want {
			t.Errorf("metadata[%q] = %v, want %v", k, meta[k], want)
		}
	}
	if len(res.Thumbnails) != 5 {
		t.Errorf("%d thumbnails, want 5", len(res.Thumbnails))
	}
	if !strings.Contains(res.Content, "# Video Analysis") {
		t.Errorf("content:\n%s", res.Content)
	}
	t.Logf("video task done by the bundled worker (whisper %v): decode %v, %d bytes of markdown", whisper, meta["decode"], len(res.Content))
}

type result struct {
	Success      bool           `json:"success"`
	Content      string         `json:"content"`
	Metadata     map[string]any `json:"metadata"`
	ErrorMessage *string        `json:"error_message"`
	Thumbnails   []string       `json:"thumbnails"`
}

func processFile(t *testing.T, base, key, path string) result {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part, _ := mw.CreateFormFile("file", filepath.Base(path))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	part.Write(data)
	mw.WriteField("options", `{"include_thumbnails": true}`)
	mw.WriteField("gpu", "true")
	mw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/process/file", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /process/file: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /process/file: HTTP %d: %s", resp.StatusCode, raw)
	}
	var res result
	if err := json.Unmarshal(raw, &res); err != nil || res.Metadata == nil {
		t.Fatalf("not MoRAG's result (%v): %s", err, raw)
	}
	return res
}

func workerListed(base string) bool {
	resp, err := http.Get(base + "/api/v1/status/workers")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return bytes.Contains(raw, []byte("alice-gpu@")) && bytes.Contains(raw, []byte("gpu-tasks-alice"))
}

func isELF(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	magic := make([]byte, 4)
	_, err = io.ReadFull(bufio.NewReader(f), magic)
	return err == nil && string(magic) == "\x7fELF"
}

// lddLine splits "libfoo.so.1 => /path/libfoo.so.1 (0x...)" or
// "/lib64/ld-linux-x86-64.so.2 (0x...)" into the library's name and where
// it resolved.
func lddLine(line string) (name, target string) {
	if l, r, ok := strings.Cut(line, "=>"); ok {
		name = strings.TrimSpace(l)
		target = strings.TrimSpace(r)
	} else {
		target = strings.TrimSpace(line)
		name = filepath.Base(strings.Fields(target)[0])
	}
	if i := strings.Index(target, " ("); i >= 0 {
		target = target[:i]
	}
	if target != "" {
		if p, err := filepath.EvalSymlinks(target); err == nil {
			target = p
		}
	}
	return name, target
}
