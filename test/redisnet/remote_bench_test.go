package redisnet

import (
	"context"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/contract"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// BenchmarkRemoteOverhead measures what a no-op task costs besides its
// handler, for a worker on direct Redis and a gateway-mediated one, on
// loopback and 80 ms RTT away (the proxy, 40 ms each way, no loss, between
// the worker and what it talks to: Redis for direct, the gateway for
// gateway-mediated; the gateway and Redis share loopback):
//
//	go test ./test/redisnet -run '^$' -bench RemoteOverhead -benchtime 2s
//
// drain: b.N tasks pre-filled, drained with concurrency 8; ns/op is the
// wall time per task from the first task done (stored and acked) to the
// last. serial: one task at a time, publish to result.
func BenchmarkRemoteOverhead(b *testing.B) {
	for _, link := range []struct {
		name  string
		delay time.Duration
	}{{"loopback", 0}, {"rtt80", 40 * time.Millisecond}} {
		for _, mode := range []string{"direct", "gateway"} {
			b.Run(link.name+"/"+mode+"/drain", func(b *testing.B) { benchRemote(b, link.delay, mode, 8, false) })
			b.Run(link.name+"/"+mode+"/serial", func(b *testing.B) { benchRemote(b, link.delay, mode, 1, true) })
		}
	}
}

func benchRemote(b *testing.B, delay time.Duration, mode string, concurrency int, serial bool) {
	l := newRemoteLab(b, time.Hour, delay, 0)
	q := contract.GPUQueue("alice")
	client := l.client(b)
	ctx := context.Background()

	mux := runner.NewMux()
	mux.HandleFunc("bench.noop", func(context.Context, *runner.Task) (any, error) { return 1, nil })
	obs := &doneCounter{first: make(chan struct{}), all: make(chan struct{}), want: int64(b.N)}
	cfg := runner.Config{Queues: []string{q}, Concurrency: concurrency, Hostname: "bench-" + mode + "@%h",
		RedisURL: l.r.URL(), Logger: zerolog.Nop(), Observer: obs}
	switch {
	case mode == "gateway" && delay > 0:
		cfg.NewTransport = l.transport(l.url)
	case mode == "gateway":
		cfg.NewTransport = l.transport(l.direct)
	case delay > 0:
		// Direct Redis through a proxy of its own with the same delay.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		var d net.Dialer
		px := startProxy(b, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", l.r.Addr()) }, delay, 0)
		cfg.RedisURL = "redis://" + px.Addr() + "/0"
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
	go func() { _ = srv.Run(rctx); close(done) }() // owner: this benchmark; stopped below
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
	case <-time.After(10 * time.Minute):
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

// BenchmarkRemoteVideo measures upload -> remote worker -> result for a
// 100 MB video (made once with ffmpeg, kept in the temporary directory):
// the client uploads it to the gateway on loopback with
// /process/file?gpu=true&async=true; the gateway routes it to alice's
// gateway-mediated worker 80 ms RTT away (no loss, or 1 % loss), which
// downloads it through the signed URL, probes it (no audio: nothing to
// transcribe) and stores the result. ns/op is upload start to result;
// upload_s, download_s are the two transfers.
//
//	go test ./test/redisnet -run '^$' -bench RemoteVideo -benchtime 3x
//
// BENCH_VIDEO_MB changes the size (default 100).
func BenchmarkRemoteVideo(b *testing.B) {
	for _, link := range []struct {
		name string
		loss float64
	}{{"rtt80", 0}, {"rtt80-loss1", 0.01}} {
		b.Run(link.name, func(b *testing.B) { benchVideo(b, link.loss) })
	}
}

func benchVideo(b *testing.B, loss float64) {
	mb := 100
	if v := os.Getenv("BENCH_VIDEO_MB"); v != "" {
		var err error
		if mb, err = strconv.Atoi(v); err != nil {
			b.Fatalf("BENCH_VIDEO_MB=%q: %v", v, err)
		}
	}
	video := testVideo(b, mb)
	st, err := os.Stat(video)
	if err != nil {
		b.Fatal(err)
	}
	l := newRemoteLab(b, time.Hour, 40*time.Millisecond, loss)
	q := contract.GPUQueue("alice")
	mux := l.mediaTasks(b, l.url)
	cfg := runner.Config{Queues: []string{q}, Concurrency: 2, Hostname: "bench-video@%h", RedisURL: l.r.URL(),
		Logger: zerolog.Nop(), NewTransport: l.transport(l.url)}
	m := runner.NewMux()
	mux(m)
	srv, err := runner.NewServer(cfg, m)
	if err != nil {
		b.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(rctx); close(done) }() // owner: this benchmark; stopped below
	defer func() { stop(); <-done }()
	l.waitRemoteWorkerListed(b)
	b.SetBytes(st.Size())
	var upload, download time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		id, queue := l.uploadAsync(b, video)
		upload += time.Since(t0)
		if queue != q {
			b.Fatalf("the upload went to %q, want %s", queue, q)
		}
		meta := l.resultMeta(b, id, 10*time.Minute)
		if meta["status"] != "SUCCESS" {
			b.Fatalf("result %v", meta)
		}
		if d := downloadMeta(b, meta); d.Bytes != st.Size() || !d.Verified {
			b.Fatalf("download %+v, want %d bytes verified", d, st.Size())
		}
		download += time.Duration(timing(meta, "download") * float64(time.Second))
	}
	b.StopTimer()
	b.ReportMetric(upload.Seconds()/float64(b.N), "upload_s")
	b.ReportMetric(download.Seconds()/float64(b.N), "download_s")
	b.ReportMetric(float64(st.Size())/1e6, "MB")
}

// timing reads result.metadata.timings[stage] (seconds).
func timing(meta map[string]any, stage string) float64 {
	r, _ := meta["result"].(map[string]any)
	md, _ := r["metadata"].(map[string]any)
	tm, _ := md["timings"].(map[string]any)
	f, _ := tm[stage].(float64)
	return f
}
