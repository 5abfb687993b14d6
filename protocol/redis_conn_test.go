package protocol_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// startPool is a private redis-server and the package's pool on it.
func startPool(tb testing.TB) (*testenv.Redis, *redis.Pool) {
	s := newBrStack(tb, protocol.BrokerOptions{})
	return s.r, s.pool
}

// infoInt is the integer field of one section of Redis's INFO.
func infoInt(t *testing.T, r *testenv.Redis, section, field string) int {
	t.Helper()
	info, err := redis.String(r.Do("INFO", section), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s:%s: %v", field, v, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in INFO %s:\n%s", field, section, info)
	return 0
}

func waitNoBlockedClients(t *testing.T, r *testenv.Redis) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for infoInt(t, r, "clients", "blocked_clients") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("Redis still has a client blocked in BLPOP: the interrupted command's connection was not closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The pool's connections run a command on the caller's goroutine; the
// context must still cut it short, and the connection it used must not
// go back to the pool.
func TestCommandContextEndsABlockedCommand(t *testing.T) {
	r, pool := startPool(t)

	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(150*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 150*time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			c := pool.Get()
			t0 := time.Now()
			_, err := redis.DoContext(c, ctx, "BLPOP", "never-pushed", 0)
			if !errors.Is(err, tc.want) {
				t.Fatalf("BLPOP ended with %v, want %v", err, tc.want)
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Fatalf("BLPOP took %s to notice its context", d)
			}
			if c.Err() == nil {
				t.Fatal("the interrupted connection reports no error: the pool would reuse it")
			}
			c.Close()
			waitNoBlockedClients(t, r)

			c = pool.Get()
			defer c.Close()
			if _, err := redis.DoContext(c, context.Background(), "PING"); err != nil {
				t.Fatalf("the pool's next connection: %v", err)
			}
		})
	}

	t.Run("receive", func(t *testing.T) {
		c := pool.Get()
		defer c.Close()
		if err := c.Send("BLPOP", "never-pushed", 0); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		_, err := redis.ReceiveContext(c, ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("receive ended with %v, want %v", err, context.DeadlineExceeded)
		}
		if c.Err() == nil {
			t.Fatal("the interrupted connection reports no error")
		}
		waitNoBlockedClients(t, r)
	})
}

// A context that ended before the command sends nothing, and leaves the
// connection usable; one that stays alive leaves it usable after many
// commands (the interrupt is disarmed after each).
func TestCommandContextKeepsGoodConnections(t *testing.T) {
	_, pool := startPool(t)
	c := pool.Get()
	defer c.Close()

	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := redis.DoContext(c, done, "INCR", "n"); !errors.Is(err, context.Canceled) {
		t.Fatalf("INCR under an ended context: %v, want context.Canceled", err)
	}
	if c.Err() != nil {
		t.Fatalf("a command never sent broke the connection: %v", c.Err())
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 1; i <= 100; i++ {
		n, err := redis.Int(redis.DoContext(c, ctx, "INCR", "n"))
		if err != nil || n != i {
			t.Fatalf("INCR #%d = %d, %v", i, n, err)
		}
	}
	if c.Err() != nil {
		t.Fatalf("connection broken after 100 commands: %v", c.Err())
	}
}

// BenchmarkCommandContext is one command at a time under a cancellable
// context, as every request path runs them; cpu-µs/op is this process's
// CPU (redigo's own DoContext started a goroutine per command).
func BenchmarkCommandContext(b *testing.B) {
	_, pool := startPool(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	c0 := processCPU()
	for b.Loop() {
		c := pool.Get()
		if _, err := redis.DoContext(c, ctx, "PING"); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.ReportMetric(float64((processCPU()-c0).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
