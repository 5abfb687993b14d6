package remote_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/contract"
	"morag-gpu/protocol"
	"morag-gpu/remote"
	"morag-gpu/worker/runner"
)

// BenchmarkTaskOverhead measures what a task costs besides its handler,
// with a worker on direct Redis and one through the gateway, on loopback
// (in-process worker and gateway, real redis-server):
//
//	go test ./remote -run '^$' -bench TaskOverhead -benchtime 2000x
//
// drain: b.N no-op tasks pre-filled, drained with concurrency 8; ns/op is
// the wall time per task from the first task done (stored and acked) to
// the last.
// serial: one task at a time, publish to result (the latency of one task).
func BenchmarkTaskOverhead(b *testing.B) {
	for _, mode := range []string{"direct", "gateway"} {
		b.Run(mode+"/drain", func(b *testing.B) { benchOverhead(b, mode, 8, false) })
		b.Run(mode+"/serial", func(b *testing.B) { benchOverhead(b, mode, 1, true) })
	}
}

func benchOverhead(b *testing.B, mode string, concurrency int, serial bool) {
	e := start(b, time.Hour, 0)
	q := contract.GPUQueue("alice")
	pool, err := protocol.NewPool(e.r.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	broker := protocol.NewBroker(pool, protocol.BrokerOptions{})
	backend := protocol.NewBackend(pool, protocol.BackendOptions{})
	client := protocol.NewClient(broker, backend)
	ctx := context.Background()

	mux := runner.NewMux()
	mux.HandleFunc("bench.noop", func(context.Context, *runner.Task) (any, error) { return 1, nil })
	obs := &doneCounter{first: make(chan struct{}), all: make(chan struct{}), want: int64(b.N)}
	cfg := runner.Config{Queues: []string{q}, Concurrency: concurrency, Hostname: "bench-" + mode + "@%h",
		RedisURL: e.r.URL(), Logger: zerolog.Nop(), Observer: obs}
	if mode == "gateway" {
		cfg.NewTransport = func(tc runner.TransportConfig) (runner.Transport, error) {
			c, err := remote.NewClient(remote.ClientOptions{Server: e.url, APIKey: e.keys["alice"], Hostname: tc.Hostname,
				Queues: tc.Queues, Wait: 5 * time.Second, Logger: zerolog.Nop()})
			if err != nil {
				return nil, err
			}
			_, err = c.Hello(ctx)
			return c, err
		}
	}
	send := func() *protocol.AsyncResult {
		r, err := client.Send(ctx, "bench.noop", nil, nil, protocol.SendOptions{Queue: q})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	if !serial {
		for range b.N {
			send()
		}
	}
	srv, err := runner.NewServer(cfg, mux)
	if err != nil {
		b.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Run(rctx); close(done) }()
	defer func() { stop(); <-done }()

	wait := func(r *protocol.AsyncResult) {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := r.Get(wctx); err != nil {
			b.Fatal(err)
		}
	}
	if serial {
		wait(send()) // warm up: the worker is ready and connected
		b.ResetTimer()
		for range b.N {
			wait(send())
		}
		b.StopTimer()
		return
	}
	<-obs.first
	b.ResetTimer()
	select {
	case <-obs.all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d tasks done", obs.n.Load(), b.N)
	}
	b.StopTimer()
}

// doneCounter closes first at the first task done and all at the want-th.
type doneCounter struct {
	runner.NopObserver
	n          atomic.Int64
	want       int64
	first, all chan struct{}
}

func (d *doneCounter) TaskDone(string, protocol.State, time.Duration) {
	switch d.n.Add(1) {
	case 1:
		close(d.first)
		if d.want == 1 {
			close(d.all)
		}
	case d.want:
		close(d.all)
	}
}
