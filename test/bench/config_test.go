package bench

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// config holds the sizes of one run. Every field has a BENCH_* variable;
// the defaults keep `make bench` under about ten minutes on two cores.
type config struct {
	PublishGoN    int // BENCH_PUBLISH_GO_N: tasks the Go client sends
	PublishPyN    int // BENCH_PUBLISH_PY_N: tasks Python's apply_async sends
	Publishers    int // BENCH_PUBLISHERS: goroutines for the concurrent publish row and for pre-filling queues
	Feeders       int // BENCH_FEEDERS: goroutines publishing the tasks of the e2e, echo and mixed rows
	E2EGoN        int // BENCH_E2E_GO_N: no-op tasks through the Go consumer process
	E2EPyN        int // BENCH_E2E_PY_N: no-op tasks through the Python worker
	GoConsumers   int // BENCH_GO_CONSUMERS: goroutines of the Go consumer process
	EchoGoN       int // BENCH_ECHO_GO_N: diag.echo tasks through the Go worker
	EchoPyN       int // BENCH_ECHO_PY_N: diag.echo tasks through the Python worker
	GoConcurrency int // BENCH_GO_CONCURRENCY: the Go worker's -concurrency
	DrainGoN      int // BENCH_DRAIN_GO_N: pre-filled diag.echo tasks per Go drain
	DrainN        int // BENCH_DRAIN_N: pre-filled diag.echo tasks per Python drain, and tasks in the mixed row
	LatencyN      int // BENCH_LATENCY_N: one-at-a-time tasks for p50/p99
	Settle        time.Duration
	HTTPClients   int           // BENCH_HTTP_CLIENTS: loadgen clients
	HTTPDuration  time.Duration // BENCH_HTTP_SECONDS: loadgen duration per route and server
	UploadMB      int           // BENCH_UPLOAD_MB: size of the uploaded file, MiB
	MediaTimeout  time.Duration // BENCH_MEDIA_SECONDS: bound on the media benchmarks
}

func loadConfig() (config, error) {
	c := config{}
	var errs []error
	num := func(name string, def, lo, hi int) int {
		s := os.Getenv(name)
		if s == "" {
			return def
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s=%q: want an integer in [%d, %d]", name, s, lo, hi))
			return def
		}
		return v
	}
	c.PublishGoN = num("BENCH_PUBLISH_GO_N", 20000, 1, 10_000_000)
	c.PublishPyN = num("BENCH_PUBLISH_PY_N", 5000, 1, 1_000_000)
	c.Publishers = num("BENCH_PUBLISHERS", 4, 1, 256)
	// Each feeder waits a round trip per Send, and on two cores that
	// round trip is mostly waiting for a CPU (~200 µs under load): four
	// feeders capped the Go rows near 20k tasks/s with the consumer
	// under test idle part of the time. Sixteen keep its queue non-empty,
	// as a gateway's sixteen HTTP clients would; the Python rows, bound
	// by their worker, are the same with four or sixteen.
	c.Feeders = num("BENCH_FEEDERS", 16, 1, 1024)
	c.E2EGoN = num("BENCH_E2E_GO_N", 20000, 1, 10_000_000)
	c.E2EPyN = num("BENCH_E2E_PY_N", 5000, 1, 1_000_000)
	// Two fetching goroutines, as the worker runs two fetch loops: eight
	// of them, each taking what is waiting, split a queue that is being
	// filled into fetches of a message or two, a round trip each.
	c.GoConsumers = num("BENCH_GO_CONSUMERS", 2, 1, 1024)
	c.EchoGoN = num("BENCH_ECHO_GO_N", 20000, 1, 10_000_000)
	c.EchoPyN = num("BENCH_ECHO_PY_N", 5000, 1, 1_000_000)
	c.GoConcurrency = num("BENCH_GO_CONCURRENCY", 8, 1, 1024)
	// A Go drain of 8000 is over in under half a second, start-up
	// included; 40000 measures it over about two, as 8000 does Python's
	// over about eight.
	c.DrainGoN = num("BENCH_DRAIN_GO_N", 40000, 2, 10_000_000)
	c.DrainN = num("BENCH_DRAIN_N", 8000, 2, 10_000_000)
	c.LatencyN = num("BENCH_LATENCY_N", 300, 10, 100_000)
	c.Settle = time.Duration(num("BENCH_SETTLE_MS", 2000, 0, 60_000)) * time.Millisecond
	c.HTTPClients = num("BENCH_HTTP_CLIENTS", 16, 1, 1024)
	c.HTTPDuration = time.Duration(num("BENCH_HTTP_SECONDS", 5, 1, 600)) * time.Second
	c.UploadMB = num("BENCH_UPLOAD_MB", 1024, 1, 16384)
	c.MediaTimeout = time.Duration(num("BENCH_MEDIA_SECONDS", 300, 10, 3600)) * time.Second
	if len(errs) > 0 {
		return c, fmt.Errorf("bench: bad settings: %v", errs)
	}
	return c, nil
}
