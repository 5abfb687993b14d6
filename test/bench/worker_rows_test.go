package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

// Row 3: diag.echo through the Go worker process against a Python prefork
// worker running test/python/diagapp.py's diag.echo.

func declareWorkerRows(t *table) {
	t.add("echo", "diag.echo end-to-end (tasks/s)", fmtRate, atLeast(20))
	t.add("echo_idle", "worker RSS idle", fmtMiB, atMost(0.25))
	t.add("echo_loaded", "worker RSS loaded (peak during the run)", fmtMiB, atMost(0.25))
	t.add("echo_p50", "publish-to-result latency p50 (one at a time)", fmtMs, goal{})
	t.add("echo_p99", "publish-to-result latency p99 (one at a time)", fmtMs, goal{})
}

var echoKeys = []string{"echo", "echo_idle", "echo_loaded", "echo_p50", "echo_p99"}

func echoArgs(i int) ([]any, map[string]any) {
	return []any{i, "bench"}, map[string]any{"n": i}
}

func benchEcho(b *testing.B, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := e.flush(); err != nil {
		b.Fatalf("flush redis: %v", err)
	}
	g, err := e.goProtocol()
	if err != nil {
		e.tab.goNA(err.Error(), echoKeys...)
		e.tab.pyNA("needs the Go publisher, "+err.Error(), echoKeys...)
		return
	}
	defer g.close()
	rr, err := newResultReader(ctx, e.redis.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer rr.close()

	err = func() error {
		bin, err := e.build(ctx, "worker")
		if err != nil {
			return err
		}
		const queue = "bench.diag.go"
		// Defaults: task events off and log level warn, as a Python
		// worker started without -E at Celery's default WARNING.
		p := testenv.Start(b, "", []string{"REDIS_URL=" + e.redis.URL()}, bin,
			"-queues", queue, "-concurrency", strconv.Itoa(e.cfg.GoConcurrency), "-diagnostics",
			"-redis", e.redis.URL(), "-hostname", "bench-go@%h")
		defer p.Kill()
		return e.measureEcho(ctx, b, g, rr, p, queue, e.cfg.EchoGoN, true)
	}()
	if err != nil {
		e.tab.goNA(err.Error(), echoKeys...)
	}

	err = func() error {
		if _, err := os.Stat(filepath.Join(e.root, "test", "python", "diagapp.py")); err != nil {
			return errors.New("test/python/diagapp.py (the Python diag.echo) is missing")
		}
		const queue = "bench.diag.py"
		p, err := e.startCelery(b, "diagapp", queue, "bench-py@%h")
		if err != nil {
			return err
		}
		defer p.Kill()
		return e.measureEcho(ctx, b, g, rr, p, queue, e.cfg.EchoPyN, false)
	}()
	if err != nil {
		e.tab.pyNA(err.Error(), echoKeys...)
	}
}

// measureEcho fills the echo rows for one worker process: RSS after the
// first task, throughput with the peak RSS during it, then latency.
func (e *env) measureEcho(ctx context.Context, b *testing.B, g *goSide, rr *resultReader, p *testenv.Process, queue string, n int, goSide bool) error {
	side := "Python worker (-c 2 prefork)"
	set := e.tab.setPy
	if goSide {
		side = fmt.Sprintf("Go worker (-concurrency %d)", e.cfg.GoConcurrency)
		set = e.tab.setGo
	}
	if err := waitReady(ctx, g, rr, p, "diag.echo", queue, []any{"ready"}); err != nil {
		return err
	}
	time.Sleep(e.cfg.Settle)
	idle, procs, err := treeRSS(p.Pid())
	if err != nil {
		return fmt.Errorf("read RSS of pid %d: %w", p.Pid(), err)
	}
	set("echo_idle", idle)

	progress("echo: %d diag.echo tasks through the %s", n, side)
	sampler := sampleRSS(p.Pid(), 100*time.Millisecond)
	st, err := throughput(ctx, g, rr, "diag.echo", queue, n, e.cfg.Feeders, echoArgs, p.Done())
	loaded := sampler.stop()
	if err != nil {
		return err
	}
	if st.failed > 0 {
		return fmt.Errorf("%d of %d diag.echo tasks failed: %s", st.failed, n, st.firstFail)
	}
	if err := checkEcho(st.sample); err != nil {
		return err
	}
	set("echo", st.rate())
	set("echo_loaded", max(loaded, idle))
	if goSide {
		b.ReportMetric(st.rate(), "go-echo/s")
	} else {
		b.ReportMetric(st.rate(), "py-echo/s")
	}
	if !goSide {
		e.tab.note("Python RSS sums the prefork parent and its children (%d processes); pages they share are counted in each", procs)
	}

	progress("echo: latency, %d tasks one at a time through the %s", e.cfg.LatencyN, side)
	p50, p99, err := latencies(ctx, g, rr, "diag.echo", queue, e.cfg.LatencyN, echoArgs, p.Done())
	if err != nil {
		return err
	}
	set("echo_p50", p50)
	set("echo_p99", p99)
	return nil
}

// checkEcho verifies one diag.echo result has the promised shape, so a
// worker that answers fast but wrong does not get a number.
func checkEcho(raw []byte) error {
	var meta struct {
		Status string `json:"status"`
		Result struct {
			Args   []any          `json:"args"`
			Kwargs map[string]any `json:"kwargs"`
			Worker string         `json:"worker"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return fmt.Errorf("diag.echo result is not JSON: %v", err)
	}
	r := meta.Result
	if len(r.Args) != 2 || r.Args[1] != "bench" || r.Kwargs["n"] == nil || r.Worker == "" {
		return fmt.Errorf("diag.echo result lacks args/kwargs/worker: %s", oneLine(string(raw), 200))
	}
	return nil
}
