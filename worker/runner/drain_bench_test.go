package runner

import (
	"context"
	"io"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/internal/testenv"
)

// BenchmarkServerDrain is the runtime's cost per task: a Server at the
// worker's defaults (-concurrency 8, log level warn, no task events) on a
// private redis-server drains b.N no-op tasks that were queued before the
// timer started. One op is one task, so -benchmem's allocs/op is the
// allocations per task of the whole process while it drains (the runner,
// the protocol codec and redigo; the benchmark's own polling is a few
// allocations per millisecond). worker-cpu-µs/task (this process) and
// redis-cpu-µs/task (INFO cpu) say which side of the socket a task costs;
// both share the machine's cores.
//
//	go test ./worker/runner -run '^$' -bench ServerDrain -benchmem -benchtime 20000x
func BenchmarkServerDrain(b *testing.B) {
	r := testenv.StartRedis(b)
	const queue = "bench.drain"
	mux := NewMux()
	mux.HandleFunc("bench.noop", func(context.Context, *Task) (any, error) { return nil, nil })
	srv, err := NewServer(Config{
		Queues:      []string{queue},
		Concurrency: 8,
		RedisURL:    r.URL(),
		Logger:      zerolog.New(io.Discard).Level(zerolog.WarnLevel),
	}, mux)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run returned %v", err)
		}
	}()

	c := r.Conn()
	defer c.Close()
	// The tasks go to a staging list and are renamed onto the queue at
	// once, so the drain runs at full speed from its first task.
	const staging = "bench.drain.staging"
	for i := 0; i < b.N; i++ {
		_, env := encodedTask(b, "bench.noop", queue)
		if err := c.Send("LPUSH", staging, env); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := c.Do(""); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	redisCPU0 := redisCPU(b, c)
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	start := time.Now()
	if _, err := c.Do("RENAME", staging, queue); err != nil {
		b.Fatal(err)
	}
	for {
		n, err := redis.Int(c.Do("EVAL", "return redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])", 2, queue, "unacked_index"))
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%d tasks still queued or held after 5 minutes", n)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := func(ru syscall.Rusage) time.Duration {
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ReportMetric(float64((cpu(ru1)-cpu(ru0)).Microseconds())/float64(b.N), "worker-cpu-µs/task")
	b.ReportMetric((redisCPU(b, c)-redisCPU0)*1e6/float64(b.N), "redis-cpu-µs/task")
}

// redisCPU is the server's CPU time so far in seconds (INFO cpu, user plus
// system), so the benchmark can say which side of the socket a task costs.
func redisCPU(b *testing.B, c redis.Conn) float64 {
	info, err := redis.String(c.Do("INFO", "cpu"))
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s: %v", k, err)
			}
			total += f
		}
	}
	return total
}
