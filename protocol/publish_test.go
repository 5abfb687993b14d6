package protocol_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/protocol"
)

// Many concurrent publishers through one lane: every message is queued
// exactly once with its own bookkeeping, and they all went over the one
// connection a lane uses at a time, in batches, instead of one
// connection each.
func TestPublishLanesBatchConcurrentPublishes(t *testing.T) {
	s := newBrStack(t, protocol.BrokerOptions{PublishLanes: 1})
	ctx := context.Background()
	// Declare the queue first, so both kinds of publish are in the batches
	// below: plain LPUSHes and MULTI/EXEC with an owner key.
	if err := s.broker.Publish(ctx, "q", []byte("first"), 0); err != nil {
		t.Fatal(err)
	}
	before := infoInt(t, s.r, "stats", "total_connections_received")
	const publishers, each = 32, 40
	var wg sync.WaitGroup
	errs := make(chan error, publishers*each)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("%d-%d", p, i)
				var also []protocol.Command
				if i%2 == 0 {
					also = append(also, protocol.Command{Name: "SET", Args: []any{"owner:" + id, "user-" + id}})
				}
				if err := s.broker.PublishWith(ctx, "q", []byte(id), 0, also...); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	made := infoInt(t, s.r, "stats", "total_connections_received") - before
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := redis.Strings(s.r.Do("LRANGE", "q", 0, -1), nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, m := range got {
		seen[m]++
	}
	if len(got) != publishers*each+1 || seen["first"] != 1 {
		t.Fatalf("queue holds %d messages, want %d", len(got), publishers*each+1)
	}
	for p := range publishers {
		for i := range each {
			id := fmt.Sprintf("%d-%d", p, i)
			if seen[id] != 1 {
				t.Fatalf("message %s queued %d times, want once", id, seen[id])
			}
			owner, _ := redis.String(s.r.Do("GET", "owner:"+id), nil)
			if want := "user-" + id; i%2 == 0 && owner != want {
				t.Fatalf("owner of %s = %q, want %q", id, owner, want)
			}
		}
	}
	if made > 2 {
		t.Fatalf("%d publishes through one lane opened %d connections; want at most 2 (one lane, plus this test's INFO)", publishers*each, made)
	}
}

// A batch carries each publish's own outcome: a publish whose command
// Redis refuses fails alone, and the others in its batches succeed.
func TestPublishLanesKeepOutcomesApart(t *testing.T) {
	s := newBrStack(t, protocol.BrokerOptions{PublishLanes: 1})
	ctx := context.Background()
	s.r.Do("SET", "not-a-list", "x") // LPUSH onto it: WRONGTYPE
	s.r.Do("LPUSH", "a-list", "x")   // INCR of it: WRONGTYPE inside EXEC
	type outcome struct {
		kind string
		err  error
	}
	out := make(chan outcome, 300)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(3)
		go func() {
			defer wg.Done()
			out <- outcome{"good", s.broker.PublishWith(ctx, "good", []byte(fmt.Sprint(i)), 0,
				protocol.Command{Name: "SET", Args: []any{fmt.Sprint("owner:", i), "u"}})}
		}()
		go func() {
			defer wg.Done()
			out <- outcome{"wrong-list", s.broker.Publish(ctx, "not-a-list", []byte("m"), 0)}
		}()
		go func() {
			defer wg.Done()
			out <- outcome{"failing-command", s.broker.PublishWith(ctx, "good2", []byte("m"), 0,
				protocol.Command{Name: "INCR", Args: []any{"a-list"}})}
		}()
	}
	wg.Wait()
	close(out)
	for o := range out {
		switch {
		case o.kind == "good" && o.err != nil:
			t.Fatalf("a good publish failed next to failing ones: %v", o.err)
		case o.kind != "good" && (o.err == nil || !strings.Contains(o.err.Error(), "WRONGTYPE")):
			t.Fatalf("%s publish: %v, want its WRONGTYPE error", o.kind, o.err)
		}
	}
	if n, _ := redis.Int(s.r.Do("LLEN", "good"), nil); n != 100 {
		t.Fatalf("%d good messages queued, want 100", n)
	}
	// MULTI/EXEC runs the LPUSH of a transaction whose other command
	// failed at run time, as it always did: the error is reported.
	if n, _ := redis.Int(s.r.Do("LLEN", "good2"), nil); n != 100 {
		t.Fatalf("good2 holds %d, want 100", n)
	}
}

// A publish waiting for a lane gives up when its context ends, and
// nothing of it is written; the publish holding the lane and those that
// keep waiting go through once Redis answers again.
func TestPublishLanesContextWhileWaiting(t *testing.T) {
	s := newBrStack(t, protocol.BrokerOptions{PublishLanes: 1})
	ctx := context.Background()
	if err := s.broker.Publish(ctx, "q", []byte("declare"), 0); err != nil {
		t.Fatal(err)
	}
	// Writes stall for a second: the first publish holds the lane.
	s.r.Do("CLIENT", "PAUSE", 1000, "WRITE")
	first := make(chan error, 1)
	go func() { first <- s.broker.Publish(ctx, "q", []byte("holder"), 0) }()
	time.Sleep(100 * time.Millisecond)

	patient := make(chan error, 1)
	go func() { patient <- s.broker.Publish(ctx, "q", []byte("patient"), 0) }()
	gaveUp, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.broker.Publish(gaveUp, "q", []byte("gave-up"), 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a publish waiting for a lane past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 700*time.Millisecond {
		t.Fatalf("it gave up after %s, not at its deadline", took)
	}
	for name, ch := range map[string]chan error{"holder": first, "patient": patient} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("the %s publish: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the %s publish never finished", name)
		}
	}
	got, _ := redis.Strings(s.r.Do("LRANGE", "q", 0, -1), nil)
	if strings.Join(got, ",") != "patient,holder,declare" {
		t.Fatalf("queue = %v, want [patient holder declare]: the publish that gave up must not be queued", got)
	}
}

// With Redis gone, every publish in every batch fails promptly with the
// reason, and none hangs.
func TestPublishLanesRedisDown(t *testing.T) {
	s := newBrStack(t, protocol.BrokerOptions{PublishLanes: 1})
	s.r.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, 16)
	for range 16 {
		go func() { errs <- s.broker.Publish(ctx, "q", []byte("m"), 0) }()
	}
	for range 16 {
		select {
		case err := <-errs:
			if err == nil || ctx.Err() != nil {
				t.Fatalf("publish with Redis down: %v (context: %v), want a connection error", err, ctx.Err())
			}
		case <-ctx.Done():
			t.Fatal("publishes hung with Redis down")
		}
	}
}

// BenchmarkPublishParallel is sixteen goroutines publishing at once, as a
// loaded gateway's requests do, through each number of lanes (-1: none).
func BenchmarkPublishParallel(b *testing.B) {
	for _, lanes := range []int{-1, 1, 4, 8} {
		b.Run(fmt.Sprintf("lanes=%d", lanes), func(b *testing.B) {
			s := newBrStack(b, protocol.BrokerOptions{PublishLanes: lanes})
			env, err := protocol.Encode(&protocol.Message{Task: "wire.add", RoutingKey: "bench", Args: []any{1, 2}})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.SetParallelism(16 / runtime.GOMAXPROCS(0))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.broker.PublishWith(ctx, "bench", env, 0, protocol.Command{Name: "SET", Args: []any{"owner", "x"}}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
