// Package runner is a Celery worker runtime in Go: it consumes task messages
// from the kombu Redis transport, runs registered handlers and behaves the way
// Python Celery workers, `celery inspect/control`, `celery events` and Flower
// expect a worker to behave. It knows nothing about any particular
// application: handlers are registered on a Mux by task name, in the style of
// net/http.
//
//	mux := runner.NewMux()
//	mux.HandleFunc("proj.add", func(ctx context.Context, t *runner.Task) (any, error) { ... })
//	mux.HandleFunc("proj.fetch", fetch, runner.RateLimit("10/m"), runner.TimeLimit(time.Minute, 0))
//	srv, err := runner.NewServer(runner.Config{Queues: []string{"celery"}}, mux)
//	err = srv.RunWithSignals(ctx)
//
// Semantics, in the order a message meets them:
//
//   - Fetching is bounded: the server only fetches while fewer than
//     Config.Prefetch fetched messages wait for a free slot, and at most
//     Config.Concurrency handlers run at once (pool_grow, pool_shrink and
//     autoscale change both at runtime, see pool.go). A fetch takes all
//     the room there is in one Lua call.
//   - STARTED, results with their acks, and task events go to Redis in
//     group commits (commit.go): one Lua call for whatever queued up
//     during the previous one. A first delivery's start (its count and
//     STARTED) is committed while its handler runs, and withdrawn if the
//     task ends before a commit takes it; a redelivered message's start is
//     counted before its handler runs (every message's with
//     Config.CountBeforeRun), and its STARTED follows while it runs. A
//     message that already started Config.MaxDeliveries times without
//     finishing is failed as a poison message instead (poison.go).
//   - Every fetched message stays in kombu's unacked bookkeeping until its
//     outcome is stored (late ack), and its lease is refreshed every
//     VisibilityTimeout/3, so no Python restorer re-delivers a task that is
//     still running or waiting for its ETA (the kombu#337 duplicate runs).
//   - Revoked and expired tasks are stored as REVOKED and not run; ETA tasks
//     wait in memory and are checked against the broker before they run;
//     tasks over their rate limit wait in memory too, counted against the
//     prefetch limit as in Python.
//   - Handlers get a context that is cancelled on revoke(terminate=True),
//     on the soft time limit (cause ErrSoftTimeLimit) and on forced shutdown.
//     A hard time limit abandons the handler and frees its slot.
//   - Results, failures, retries and canvas continuations (link, link_error,
//     chain, chord joins) are written exactly as a Python worker writes
//     them; a failure's traceback is its Go error chain or panic stack in
//     the shape of a Python traceback. celery.map, celery.starmap,
//     celery.chunks and celery.accumulate run here when the inner task
//     does.
//   - Unknown task names are forwarded unchanged to Config.ForwardUnknown, or
//     failed as NotRegistered when that would loop.
//
// The server also answers the pidbox mailbox (ping, inspect, revoke, ...) and
// sends worker and task events. Config.Observer is told about tasks, held
// messages, lease refreshes and dead letters as they happen, for metrics
// (worker/metrics implements it for Prometheus).
//
// Everything the server does outside its process goes through one
// Transport (transport.go): the Redis one by default, or another from
// Config.NewTransport, such as package remote's client, which reaches
// Redis only through a gateway with an API key. Handlers cannot tell
// which one runs them.
//
// The worker's identity is the application's to choose: Config.SWIdent and
// Config.SWVersion go into worker events and `inspect stats` (where
// monitors tell implementations apart; default "go-celery"), and
// Config.DefaultNodeName names the node when Config.Hostname does not
// (default "celery", so "celery@<host>" as `celery worker`).
package runner
