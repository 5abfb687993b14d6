package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/fleet"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// liveFleetRefresh is how often the worker's fleet directory asks every
// worker for its queues; heartbeats and new hosts keep it current between,
// and a dead end is confirmed afresh before a task fails on it.
const liveFleetRefresh = 15 * time.Second

// StartLiveFleet starts a fleet directory on redisURL for
// runner.Config.LiveConsumers, and returns that function and a stop that
// ends the directory and waits for it. Liveness is the fleet package's:
// heartbeats within 10 s and pidbox active_queues, confirmed once more
// before a task is failed. Peers with sw_ident swIdent are Go workers like
// this one, whose Capabilities the accept functions read.
func StartLiveFleet(redisURL, keyPrefix, swIdent string, log zerolog.Logger) (consumers func(context.Context, string) ([]runner.WorkerInfo, error), stop func(), err error) {
	pool, err := protocol.NewPool(redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: redis URL %q: %w", protocol.RedactURL(redisURL), err)
	}
	db, err := protocol.ParseDB(redisURL)
	if err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("fleet: redis URL %q: %w", protocol.RedactURL(redisURL), err)
	}
	dir := fleet.New(pool, fleet.Options{DB: db, KeyPrefix: keyPrefix, Refresh: liveFleetRefresh, Logger: log,
		GoSWIdents: []string{swIdent}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // owner: stop, which cancels and waits for it
		defer close(done)
		_ = dir.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
		pool.Close()
	}
	return LiveConsumers(dir), stop, nil
}

// LiveConsumers adapts dir to runner.Config.LiveConsumers: the live workers
// consuming a queue, confirmed afresh when none is known, each with its
// fleet.Worker as the Detail that the accept functions read.
func LiveConsumers(dir *fleet.Directory) func(context.Context, string) ([]runner.WorkerInfo, error) {
	return func(ctx context.Context, queue string) ([]runner.WorkerInfo, error) {
		list, err := dir.Consumers(ctx, queue, true)
		out := make([]runner.WorkerInfo, len(list))
		for i, w := range list {
			out[i] = runner.WorkerInfo{Hostname: w.Hostname, Detail: w}
		}
		return out, err
	}
}

// acceptFleet turns a test on a fleet.Worker into a ForwardError.Accept.
// A consumer reported without one (not from LiveConsumers) is taken for a
// Python worker, as the fleet takes a worker it knows nothing else of.
func acceptFleet(accept func(fleet.Worker) (bool, string)) func(runner.WorkerInfo) (bool, string) {
	if accept == nil {
		return nil
	}
	return func(w runner.WorkerInfo) (bool, string) {
		fw, ok := w.Detail.(fleet.Worker)
		if !ok {
			fw = fleet.Worker{Hostname: w.Hostname}
		}
		return accept(fw)
	}
}
