package bench

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

// benchRow is one sub-benchmark and the table rows it fills.
type benchRow struct {
	name string
	keys func() []string
	run  func(*testing.B, *env)
}

// BenchmarkSideBySide is `make bench`. Run it once:
//
//	go test ./test/bench -run '^$' -bench '^BenchmarkSideBySide$' -benchtime 1x
//
// Each sub-benchmark runs its row once, however often the testing package
// calls it, so a larger -benchtime only repeats nothing.
func BenchmarkSideBySide(b *testing.B) {
	cfg, err := loadConfig()
	if err != nil {
		b.Fatal(err)
	}
	e := &env{
		cfg:    cfg,
		redis:  testenv.StartRedis(b),
		root:   testenv.RepoRoot(b),
		bins:   b.TempDir(),
		gocmd:  goTool(),
		tab:    &table{},
		builds: map[string]error{},
	}
	declareProtocolRows(e.tab, cfg)
	declareWorkerRows(e.tab)
	declareDrainRows(e.tab)
	declareGatewayRows(e.tab)
	declareUploadRows(e.tab, cfg)

	rows := []benchRow{
		{"publish", func() []string { return []string{"pub1", "pubN"} }, benchPublish},
		{"e2e", func() []string { return []string{"e2e"} }, benchE2E},
		{"echo", func() []string { return echoKeys }, benchEcho},
		{"drain", func() []string { return drainKeys }, benchDrain},
		{"gateway", gatewayKeys, benchGateway},
		{"upload", func() []string { return uploadKeys }, benchUpload},
		{"media", func() []string { return nil }, benchMedia},
		{"remote", func() []string { return nil }, benchRemote},
		{"whisper", func() []string { return nil }, benchWhisper},
	}
	start := time.Now()
	for _, r := range rows {
		ran := false
		ok := b.Run(r.name, func(b *testing.B) {
			if ran {
				return
			}
			ran = true
			r.run(b, e)
		})
		if !ok {
			e.tab.goNA("the "+r.name+" sub-benchmark failed; see its log", r.keys()...)
			e.tab.pyNA("the "+r.name+" sub-benchmark failed; see its log", r.keys()...)
		}
	}

	e.tab.note("same private redis-server %s for every row; %d CPUs shared by the servers, workers, publisher, reader and load generator",
		e.redis.Addr(), runtime.NumCPU())
	e.tab.note("tasks/s = N / (first send → last result published); N: publish Go %d / Python %d, e2e Go %d / Python %d, echo Go %d / Python %d; latency over %d tasks",
		cfg.PublishGoN, cfg.PublishPyN, cfg.E2EGoN, cfg.E2EPyN, cfg.EchoGoN, cfg.EchoPyN, cfg.LatencyN)
	e.tab.note("e2e: a Go consumer process (this test binary re-executed) with %d goroutines (FetchN up to 32, one Commit of their SUCCESS+ack; no start count and no STARTED, as the worker for a first delivery that ends before its start goes out) vs `celery -A wireapp worker -P prefork -c 2` (wire.noop); echo and drain: `worker -concurrency %d -diagnostics` at its defaults (task events off, log level warn, as Celery's) vs `celery -A diagapp worker -P prefork -c 2` (Celery's default WARNING log level, no -E; its diag.echo also INCRs diag:runs:<id>); drain: Go %d / Python %d tasks pre-filled, rate from first to last result (the mixed row: %d); both are fed by the Go client from %d goroutines (pre-filled from %d)",
		cfg.GoConsumers, cfg.GoConcurrency, cfg.DrainGoN, cfg.DrainN, cfg.DrainN, cfg.Feeders, cfg.Publishers)
	e.tab.note("gateway: loadgen, %d clients for %s per route and server, keep-alive, loopback; the Python peer is test/python/fastapi_app.py under one uvicorn worker (MoRAG's default)",
		cfg.HTTPClients, cfg.HTTPDuration)

	var out bytes.Buffer
	e.tab.print(&out, fmt.Sprintf("make bench: Go vs Python, side by side (%s, took %s)", time.Now().Format("2006-01-02 15:04"), time.Since(start).Round(time.Second)))
	// scripts/bench prints the file after go test's own output, so that
	// the table comes last; run by hand, the table goes to stdout.
	if path := os.Getenv("BENCH_TABLE_FILE"); path != "" {
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			b.Errorf("write BENCH_TABLE_FILE: %v", err)
			os.Stdout.Write(out.Bytes())
		}
		return
	}
	os.Stdout.Write(out.Bytes())
}
