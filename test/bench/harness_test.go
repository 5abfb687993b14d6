package bench

// Light tests of the harness itself; they run under plain `go test`.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

func TestTablePrintsRatiosGoalsAndReasons(t *testing.T) {
	tab := &table{}
	tab.add("rate", "rate (tasks/s)", fmtRate, atLeast(20))
	tab.add("rss", "rss", fmtMiB, atMost(0.25))
	tab.add("gone", "missing", fmtRate, atLeast(10))
	tab.add("idle", "never run", fmtRate, goal{})
	tab.setGo("rate", 42000)
	tab.setPy("rate", 2000)
	tab.setGo("rss", 30)
	tab.setPy("rss", 100)
	tab.goNA("worker\ndoes   not build", "gone")
	tab.setGo("gone", 5) // a value set later wins over the reason
	tab.pyNA("fastapi missing", "gone")
	tab.note("a note")
	tab.section("media", []string{"BenchmarkX 1 2 ns/op"})
	var b strings.Builder
	tab.print(&b, "title")
	out := b.String()
	for _, want := range []string{
		"42,000", "2,000", "21.00×", "≥ 20× met",
		"0.30×", "≤ 0.25× MISSED",
		"n/a (fastapi missing)", "not run",
		"-- media", "BenchmarkX 1 2 ns/op", "  - a note",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "does   not") || strings.Contains(out, "worker\n") {
		t.Errorf("reasons must be squeezed onto one line:\n%s", out)
	}
	// Every table line has the same number of column separators.
	re := regexp.MustCompile(`^(metric|rate|rss|missing|never run) `)
	for _, l := range strings.Split(out, "\n") {
		if re.MatchString(l) && strings.Count(l, "|") != 4 {
			t.Errorf("row %q does not have 5 columns", l)
		}
	}
}

func TestProtectNamesTheStubThatPanicked(t *testing.T) {
	err := protect(func() error { stubLike(); return nil })
	if err == nil || !strings.Contains(err.Error(), "stubLike is still a stub") {
		t.Fatalf("protect = %v, want the stub's name", err)
	}
	err = protect(func() error { return errors.New("plain") })
	if err == nil || err.Error() != "plain" {
		t.Fatalf("protect must pass errors through, got %v", err)
	}
	g, _ := newGroup(context.Background())
	g.do(func() error { panic("boom") })
	g.do(func() error { return nil })
	if err := g.wait(); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("group.wait = %v, want the goroutine's panic", err)
	}
}

func stubLike() { panic("stub") }

func TestTreeRSSSumsChildren(t *testing.T) {
	self, n, err := treeRSS(os.Getpid())
	if err != nil || self <= 0 || n < 1 {
		t.Fatalf("treeRSS(self) = %v MiB, %d processes, %v", self, n, err)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("SKIP: cannot start sleep: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, n2, _ := treeRSS(os.Getpid()); n2 >= n+1 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("treeRSS does not count the child process %d", cmd.Process.Pid)
}

func TestLoadConfigRejectsBadValues(t *testing.T) {
	t.Setenv("BENCH_UPLOAD_MB", "lots")
	if _, err := loadConfig(); err == nil || !strings.Contains(err.Error(), "BENCH_UPLOAD_MB") {
		t.Fatalf("loadConfig = %v, want an error naming BENCH_UPLOAD_MB", err)
	}
	t.Setenv("BENCH_UPLOAD_MB", "8")
	cfg, err := loadConfig()
	if err != nil || cfg.UploadMB != 8 {
		t.Fatalf("loadConfig = %+v, %v", cfg, err)
	}
}

func TestNewTaskIDIsUUID4(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if id := newTaskID(); !re.MatchString(id) {
		t.Fatalf("newTaskID() = %q, not a uuid4", id)
	}
}

func TestStreamUploadSendsFieldsThenTheWholeFile(t *testing.T) {
	const size = 3<<20 + 17
	file := filepath.Join(t.TempDir(), "f.bin")
	if err := os.WriteFile(file, bytes.Repeat([]byte{7}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	var fields atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("async") != "true" {
			http.Error(w, "no async", 400)
			return
		}
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if p.FormName() == "file" {
				n, _ := io.Copy(io.Discard, p)
				got.Store(n)
			} else if got.Load() == 0 {
				fields.Add(1)
			}
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"task_id": "t1", "status_url": "/api/v1/status/t1"}`)
	}))
	defer srv.Close()
	if _, err := streamUpload(context.Background(), srv.URL+"/process/file?async=true", file); err != nil {
		t.Fatal(err)
	}
	if got.Load() != size || fields.Load() != 3 {
		t.Fatalf("server read %d file bytes after %d fields, want %d after 3", got.Load(), fields.Load(), size)
	}

	// A gateway that refuses without reading: an error, and no stuck writer.
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"detail": "too large"}`, http.StatusRequestEntityTooLarge)
	}))
	defer refuse.Close()
	done := make(chan error, 1)
	go func() {
		_, err := streamUpload(context.Background(), refuse.URL+"/process/file?async=true", file)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("streamUpload accepted a 413")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("streamUpload hung on a gateway that answered early")
	}
}

// The e2e row's Go consumer is this test binary re-executed: it must
// consume and store results, end cleanly on SIGTERM, and say when it is
// started wrongly.
func TestGoConsumerProcess(t *testing.T) {
	r := testenv.StartRedis(t)
	e := &env{redis: r, cfg: config{GoConsumers: 2}}
	p := e.startGoConsumer(t, "bench.consumer.test")
	g, err := e.goProtocol()
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rr, err := newResultReader(ctx, r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer rr.close()
	if err := waitReady(ctx, g, rr, p, "wire.noop", "bench.consumer.test", nil); err != nil {
		t.Fatal(err)
	}
	st, err := throughput(ctx, g, rr, "wire.noop", "bench.consumer.test", 200, 4, func(int) ([]any, map[string]any) { return nil, nil }, p.Done())
	if err != nil || st.failed != 0 {
		t.Fatalf("200 tasks through the consumer process: %v, %d failed", err, st.failed)
	}
	if err := stopGoConsumer(p); err != nil {
		t.Fatal(err)
	}

	bad := testenv.Start(t, "", []string{consumerEnv + "=redis://127.0.0.1:1/0"}, os.Args[0])
	if code, ok := bad.Wait(30 * time.Second); !ok || code != 2 || !strings.Contains(bad.Output(), "want") {
		t.Fatalf("a malformed %s: exit %d (exited %v), output %q; want exit 2 saying what it wants", consumerEnv, code, ok, bad.Output())
	}
}
