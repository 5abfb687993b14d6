// Command gateway is MoRAG's HTTP API in Go: it enqueues Celery tasks on
// Redis for Python and Go workers and routes gpu=true to the caller's GPU
// queue. See `gateway -h`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/gateway/httpapi"
	"morag-gpu/protocol"
)

// gcPercent is the gateway's GOGC when the environment sets none. Its live
// heap is small (the routing tables, the pools, the requests in flight),
// and each request allocates a few KiB: at Go's default of 100 a loaded
// gateway collects dozens of times a second. 200 halves that; test/bench's
// gateway rows gained 2-8% in each of three alternating rounds.
const gcPercent = 200

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	cfg := httpapi.Config{}
	flag.StringVar(&cfg.Addr, "addr", ":8000", "listen address")
	flag.StringVar(&cfg.RedisURL, "redis", envOr("REDIS_URL", "redis://localhost:6379/0"), "Redis URL: broker, results and API keys (env REDIS_URL)")
	masterName := flag.String("redis-master-name", os.Getenv("REDIS_MASTER_NAME"), "Sentinel master name for a sentinel:// -redis URL that has no ?master_name= (env REDIS_MASTER_NAME)")
	flag.StringVar(&cfg.UploadDir, "upload-dir", "", "where uploads are stored (default $TMPDIR/morag-uploads)")
	flag.StringVar(&cfg.PublicURL, "public-url", "", "URL workers use to reach this gateway (default http://127.0.0.1:<port>)")
	maxUpload := flag.Int64("max-upload", 2<<30, "largest accepted upload in bytes")
	flag.DurationVar(&cfg.WaitTimeout, "wait-timeout", 2*time.Hour, "how long synchronous /process requests wait for a result")
	flag.StringVar(&cfg.FileTransfer, "file-transfer", "shared", "how CPU workers get uploads: shared (a path on a shared disk) or http (a signed URL)")
	flag.StringVar(&cfg.AdminToken, "admin-token", os.Getenv("MORAG_ADMIN_TOKEN"), "token for key management (env MORAG_ADMIN_TOKEN); empty disables it")
	flag.StringVar(&cfg.URLSecret, "url-secret", os.Getenv("MORAG_URL_SECRET"), "secret for signed file URLs (env MORAG_URL_SECRET); empty shares one through Redis")
	flag.DurationVar(&cfg.URLTTL, "url-ttl", 0, "validity of signed file URLs (default wait-timeout + 1h)")
	flag.DurationVar(&cfg.TaskTimeLimit.Base, "task-time-limit", 30*time.Minute, "default hard time limit of a task, plus -task-time-limit-per-gib of upload")
	flag.DurationVar(&cfg.TaskTimeLimit.PerGiB, "task-time-limit-per-gib", 2*time.Hour, "added to a task's default time limit per GiB of upload")
	flag.DurationVar(&cfg.TaskTimeLimit.Max, "task-time-limit-max", 6*time.Hour, "largest time limit, default or asked for with time_limit")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	cors := flag.String("cors-origins", "*", "comma-separated origins browsers may call the API from (* any, as MoRAG; empty none)")
	flag.StringVar(level, "loglevel", "info", "same as -log-level (the worker's and Celery's spelling)")
	flag.StringVar(&cfg.KeyPrefix, "key-prefix", os.Getenv("MORAG_KEY_PREFIX"), "broker_transport_options global_keyprefix (queues, events, remote control); must match every worker's (env MORAG_KEY_PREFIX)")
	flag.StringVar(&cfg.ResultKeyPrefix, "result-key-prefix", os.Getenv("MORAG_RESULT_KEY_PREFIX"), "result_backend_transport_options global_keyprefix (Celery 5.3+); must match every worker's (env MORAG_RESULT_KEY_PREFIX)")
	flag.DurationVar(&cfg.ResultExpires, "result-expires", 24*time.Hour, "result_expires for states the gateway stores; task owners are kept this plus -wait-timeout")
	flag.DurationVar(&cfg.VisibilityTimeout, "visibility-timeout", time.Hour, "broker visibility_timeout: the lease of messages held for gateway-mediated workers; must equal every worker's")
	flag.DurationVar(&cfg.WorkerMaxWait, "worker-max-wait", 25*time.Second, "longest long poll of a gateway-mediated worker's fetch")
	afterParse := limitFlags(&cfg)
	flag.IntVar(&cfg.MinReplicas, "redis-min-replicas", 0, "each publish waits until this many Redis replicas hold the task (WAIT), so a Sentinel failover cannot lose it (default 0: no wait)")
	flag.DurationVar(&cfg.ReplicaWait, "redis-replica-wait", time.Second, "longest a publish waits for -redis-min-replicas")
	flag.Parse()
	afterParse()
	cfg.MaxUpload = *maxUpload
	cfg.RedisURL = protocol.WithMasterName(cfg.RedisURL, *masterName)
	cfg.CORSOrigins = []string{}
	for _, o := range strings.Split(*cors, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.CORSOrigins = append(cfg.CORSOrigins, o)
		}
	}

	lvl, err := zerolog.ParseLevel(*level)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gateway: -log-level %q: %v\n", *level, err)
		os.Exit(2)
	}
	cfg.Logger = zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Str("service", "gateway").Logger()
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "admin-token" {
			cfg.Logger.Warn().Msg("-admin-token on the command line is visible to every local user (ps, /proc); use -admin-token-file or MORAG_ADMIN_TOKEN")
		}
	})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := httpapi.Run(ctx, cfg); err != nil {
		cfg.Logger.Error().Err(err).Msg("gateway stopped")
		stop()
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
