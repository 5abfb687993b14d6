// Command worker is the Go Celery worker: it consumes Celery task messages
// from Redis next to (or instead of) Python `celery worker` processes.
//
//	go run ./worker -queues gpu-tasks-alice,cpu-tasks-alice
//
// Flags accept Celery's spelling too (--queues=...). SIGINT/SIGTERM shut
// down gracefully; a second signal requeues running tasks and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/contract"
	"morag-gpu/protocol"
	"morag-gpu/worker/metrics"
	"morag-gpu/worker/runner"
	"morag-gpu/worker/tasks"
)

// gcPercent is the worker's GOGC when the environment sets none. A
// worker's live heap is small (a few MiB: the tasks in hand, the clients)
// and, draining short tasks, it allocates ~10 KiB per task: at Go's
// default of 100 it collects dozens of times a second. 200 halves that
// for ~4 MiB more RSS under load (`make bench`: 20.6 -> 24.7 MiB), and
// drains ~5% faster.
const gcPercent = 200

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	gpus := detectGPUs()
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	queues := fs.String("queues", contract.DefaultQueue, "comma-separated queues to consume from")
	concurrency := fs.Int("concurrency", max(1, len(gpus)), "tasks run at once (number of GPUs nvidia-smi lists within CUDA_VISIBLE_DEVICES, else 1)")
	prefetch := fs.Int("prefetch", 0, "fetched tasks that may wait for a free slot (0: same as -concurrency, -1: none)")
	hostname := fs.String("hostname", contract.WorkerHostname, "node name; %h, %n, %d expand as in Celery")
	redisURL := fs.String("redis", envOr("REDIS_URL", "redis://localhost:6379/0"), "Redis broker and result backend URL (env REDIS_URL)")
	masterName := fs.String("redis-master-name", os.Getenv("REDIS_MASTER_NAME"), "Sentinel master name for a sentinel:// -redis URL that has no ?master_name= (env REDIS_MASTER_NAME)")
	visibility := fs.Duration("visibility-timeout", time.Hour, "must equal broker_transport_options visibility_timeout of every Python worker")
	loglevel := fs.String("loglevel", "warn", "debug, info, warn or error (Celery's default is WARNING too)")
	fs.StringVar(loglevel, "log-level", "warn", "same as -loglevel (the gateway's spelling)")
	keyPrefix := fs.String("key-prefix", os.Getenv("MORAG_KEY_PREFIX"), "broker_transport_options global_keyprefix (queues, events, remote control); must match every participant's (env MORAG_KEY_PREFIX)")
	resultKeyPrefix := fs.String("result-key-prefix", os.Getenv("MORAG_RESULT_KEY_PREFIX"), "result_backend_transport_options global_keyprefix (Celery 5.3+); must match every participant's (env MORAG_RESULT_KEY_PREFIX)")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus metrics at http://<addr>/metrics, e.g. :9808 (empty: off)")
	events := fs.Bool("events", false, "send task events, as `celery worker -E` (worker events are always sent; enable_events turns them on at runtime)")
	fs.BoolVar(events, "E", false, "same as -events")
	maxDeliveries := fs.Int("max-deliveries", 3, "fail a message as a poison message (WorkerLostError, dead-lettered) once it has started this many times on Go workers without finishing; 0: never")
	countFirst := fs.Bool("count-before-run", false, "count every start for -max-deliveries before its handler runs, so that a task that kills the worker within a millisecond of its first start is counted there too (one more Redis round trip per task); by default only redeliveries wait for their count")
	autoscale := fs.String("autoscale", "", "max,min: let the pool size follow the work in hand, as celery worker --autoscale")
	grace := fs.Duration("shutdown-grace", 30*time.Second, "how long a graceful shutdown waits for running tasks")
	forward := fs.String("forward-unknown", contract.DefaultQueue, "queue that tasks with unregistered names are forwarded to (empty: fail them as NotRegistered)")
	forwardLive := fs.Bool("forward-only-to-live", true, "fail a task, saying what to start, rather than forward it to a queue no live worker consumes")
	diagnostics := fs.Bool("diagnostics", false, "register the diag.* tasks")
	expires := fs.Duration("result-expires", 24*time.Hour, "how long results are kept")
	mediaOpts := registerMediaFlags(fs)
	serverOpts := registerServerFlags(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; run with -h for the flags", fs.Args())
	}
	level, err := zerolog.ParseLevel(strings.ToLower(*loglevel))
	if err != nil || level == zerolog.NoLevel {
		return fmt.Errorf("-loglevel %q: use debug, info, warn or error", *loglevel)
	}

	if *maxDeliveries <= 0 {
		*maxDeliveries = -1
	}
	var scale runner.AutoscaleRange
	if *autoscale != "" {
		hi, lo, _ := strings.Cut(*autoscale, ",")
		var err1, err2 error
		scale.Max, err1 = strconv.Atoi(strings.TrimSpace(hi))
		if lo != "" {
			scale.Min, err2 = strconv.Atoi(strings.TrimSpace(lo))
		}
		if err1 != nil || err2 != nil || scale.Max < 1 || scale.Min < 0 || scale.Min > scale.Max {
			return fmt.Errorf("-autoscale %q: use max,min with 0 <= min <= max, as in -autoscale 10,3", *autoscale)
		}
	}

	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
	if err := serverOpts.check(fs, log); err != nil {
		return err
	}
	// Bound before anything starts, so a busy port fails the start.
	var obs runner.Observer = runner.NopObserver{}
	var metricsSrv *metrics.Server
	var workerMetrics *metrics.Metrics
	if *metricsAddr != "" {
		workerMetrics = metrics.New()
		if metricsSrv, err = metrics.Listen(*metricsAddr, workerMetrics, log); err != nil {
			return fmt.Errorf("-metrics-addr: %w", err)
		}
		defer metricsSrv.Close() // when the start fails before Serve
		obs = workerMetrics
	}
	info := map[string]any{}
	if len(gpus) > 0 {
		info["gpus"] = gpus // "gpu" holds the detected capabilities
	}
	mux := runner.NewMux()
	tasks.RegisterHealth(mux)
	if *diagnostics {
		tasks.RegisterDiagnostics(mux)
	}
	mediaInfo, cleanup, err := mediaOpts.setup(context.Background(), log, *concurrency, *forward, mux)
	if err != nil {
		return err
	}
	defer cleanup()
	maps.Copy(info, mediaInfo)
	if workerMetrics != nil {
		workerMetrics.SetMedia(mediaStatus(mediaInfo))
	}
	var liveConsumers func(context.Context, string) ([]runner.WorkerInfo, error)
	if *forwardLive && serverOpts.direct() {
		consumers, stopFleet, err := tasks.StartLiveFleet(protocol.WithMasterName(*redisURL, *masterName), *keyPrefix, contract.WorkerSWIdent, log)
		if err != nil {
			return err
		}
		defer stopFleet()
		liveConsumers = consumers
	}
	srv, err := runner.NewServer(runner.Config{
		Queues:            strings.Split(*queues, ","),
		Concurrency:       *concurrency,
		Prefetch:          *prefetch,
		Hostname:          *hostname,
		DefaultNodeName:   contract.WorkerNodeName,
		SWIdent:           contract.WorkerSWIdent,
		SWVersion:         contract.WorkerSWVersion,
		RedisURL:          protocol.WithMasterName(*redisURL, *masterName),
		NewTransport:      serverOpts.transport(log),
		VisibilityTimeout: *visibility,
		ShutdownGrace:     *grace,
		ResultExpires:     *expires,
		Events:            *events,
		MaxDeliveries:     *maxDeliveries,
		CountBeforeRun:    *countFirst,
		Autoscale:         scale,
		ForwardUnknown:    *forward,
		KeyPrefix:         *keyPrefix,
		ResultKeyPrefix:   *resultKeyPrefix,
		LiveConsumers:     liveConsumers,
		Logger:            log,
		Info:              info,
		Observer:          obs,
	}, mux)
	if err != nil {
		return err
	}
	if metricsSrv == nil {
		return srv.RunWithSignals(context.Background())
	}
	// The metrics server lives as long as the worker: it stops when the
	// worker has stopped, and run waits for it.
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { // owner: run, which stops and waits for it below
		err := metricsSrv.Serve(ctx)
		if err != nil {
			log.Error().Err(err).Msg("metrics server stopped; the worker goes on without it")
		}
		served <- err
	}()
	log.Info().Str("addr", metricsSrv.Addr()).Msg("metrics at http://" + metricsSrv.Addr() + "/metrics")
	err = srv.RunWithSignals(context.Background())
	stop()
	if serr := <-served; serr != nil && err == nil {
		err = fmt.Errorf("metrics server: %w", serr)
	}
	return err
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// detectGPUs lists the GPUs `nvidia-smi -L` reports that this process
// may use (CUDA_VISIBLE_DEVICES); none when it is missing or fails.
func detectGPUs() []string {
	env, set := os.LookupEnv("CUDA_VISIBLE_DEVICES")
	return visibleGPUs(listGPUs(), env, set)
}

// visibleGPUs keeps the GPUs of `nvidia-smi -L` that CUDA_VISIBLE_DEVICES
// lets CUDA see, in its order, as CUDA reads it: indices or GPU-/MIG-
// UUID prefixes, separated by commas, up to the first entry that names
// no device; set but empty hides them all. nvidia-smi itself ignores
// the variable.
func visibleGPUs(all []string, env string, set bool) []string {
	if !set {
		return all
	}
	var out []string
	for _, e := range strings.Split(env, ",") {
		e = strings.TrimSpace(e)
		i, err := strconv.Atoi(e)
		switch {
		case err == nil && i >= 0 && i < len(all):
			out = append(out, all[i])
			continue
		case err == nil || (!strings.HasPrefix(e, "GPU-") && !strings.HasPrefix(e, "MIG-")):
			return out
		}
		found := false
		for _, g := range all {
			if strings.Contains(g, "UUID: "+e) {
				out, found = append(out, g), true
				break
			}
		}
		if !found {
			return out
		}
	}
	return out
}

// listGPUs lists the GPUs `nvidia-smi -L` reports; none when it is
// missing or fails.
func listGPUs() []string {
	if _, err := exec.LookPath("nvidia-smi"); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nvidia-smi", "-L").Output()
	if err != nil {
		return nil
	}
	var gpus []string
	for _, line := range strings.Split(string(out), "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "GPU ") {
			gpus = append(gpus, line)
		}
	}
	return gpus
}
