package protocol_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/clock"
	"morag-gpu/protocol"
)

// FetchN takes a batch in kombu's order: priority bands first, queues
// round-robin within a band, one message per queue turn.
func TestFetchNBatchOrder(t *testing.T) {
	t.Parallel()
	s := newBrStack(t, protocol.BrokerOptions{})
	var want []string
	for i := 0; i < 3; i++ {
		s.publish(t, "a", "t.a", 0)
		s.publish(t, "b", "t.b", 0)
	}
	s.publish(t, "a", "t.low", 9)
	c := s.broker.NewConsumer("a", "b")
	want = []string{"t.a", "t.b", "t.a", "t.b", "t.a"}
	ds, err := c.FetchN(context.Background(), time.Second, 5)
	if err != nil || len(ds) != 5 {
		t.Fatalf("FetchN(5) = %d deliveries, %v", len(ds), err)
	}
	for i, d := range ds {
		if d.Message.Task != want[i] || d.Tag == "" || d.Starts != 0 {
			t.Errorf("delivery %d = %s (tag %q, starts %d); want %s, held, 0 starts", i, d.Message.Task, d.Tag, d.Starts, want[i])
		}
	}
	ds, err = c.FetchN(context.Background(), time.Second, 10)
	if err != nil || len(ds) != 2 || ds[0].Message.Task != "t.b" || ds[1].Message.Task != "t.low" {
		t.Fatalf("second FetchN = %d deliveries (%v); want t.b then the priority-9 t.low", len(ds), err)
	}
	conn := s.pool.Get()
	defer conn.Close()
	if n, _ := redis.Int(conn.Do("HLEN", "unacked")); n != 7 {
		t.Errorf("unacked holds %d messages; want all 7", n)
	}
}

// A finish marked Uncounted acks without the DEL of a delivery count (the
// caller knows none was written); an ordinary finish drops it.
func TestCommitFinishUncountedSkipsTheCountDelete(t *testing.T) {
	t.Parallel()
	s := newBrStack(t, protocol.BrokerOptions{})
	be := protocol.NewBackend(s.pool, protocol.BackendOptions{})
	ctx := context.Background()
	s.publish(t, "q", "t.a", 0)
	s.publish(t, "q", "t.b", 0)
	ds, err := s.broker.NewConsumer("q").FetchN(ctx, time.Second, 2)
	if err != nil || len(ds) != 2 {
		t.Fatalf("FetchN = %d, %v", len(ds), err)
	}
	conn := s.pool.Get()
	defer conn.Close()
	for _, d := range ds {
		// A count that should not be there: it shows whether the ack
		// deleted it.
		if _, err := conn.Do("SET", "celery.deliveries."+d.Tag, 1); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.broker.Commit(ctx, be, []protocol.CommitOp{
		{Kind: protocol.CommitFinish, Tag: ds[0].Tag, Uncounted: true},
		{Kind: protocol.CommitFinish, Tag: ds[1].Tag},
	})
	if err != nil || len(st) != 2 || st[0] != protocol.CommitHeld || st[1] != protocol.CommitHeld {
		t.Fatalf("Commit = %v, %v; want both acked", st, err)
	}
	if n, _ := redis.Int(conn.Do("EXISTS", "celery.deliveries."+ds[0].Tag)); n != 1 {
		t.Errorf("the Uncounted finish deleted the count key")
	}
	if n, _ := redis.Int(conn.Do("EXISTS", "celery.deliveries."+ds[1].Tag)); n != 0 {
		t.Errorf("the ordinary finish left the count key")
	}
	if n, _ := redis.Int(conn.Do("HLEN", "unacked")); n != 0 {
		t.Errorf("%d messages still held; want both acked", n)
	}
}

// Commit: a start is counted only while held; a finish stores and acks and
// drops the count; a finish of a message restored by someone else after
// it started writes nothing; a give-back after a counted start uncounts.
func TestCommitCountsStartsAndGuardsResults(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Now()) // the lease lapses when told, not after a sleep
	s := newBrStack(t, protocol.BrokerOptions{VisibilityTimeout: time.Second, Clock: clk})
	be := protocol.NewBackend(s.pool, protocol.BackendOptions{})
	ctx := context.Background()
	conn := s.pool.Get()
	defer conn.Close()
	c := s.broker.NewConsumer("q")
	count := func(tag string) int {
		n, _ := redis.Int(conn.Do("GET", "celery.deliveries."+tag))
		return n
	}

	m1 := s.publish(t, "q", "t.one", 0)
	d := fetch(t, c)
	st, err := s.broker.Commit(ctx, be, []protocol.CommitOp{
		{Kind: protocol.CommitStart, Tag: d.Tag, Store: &protocol.StoreRequest{TaskID: m1.ID, State: protocol.StateStarted}},
		{Kind: protocol.CommitPublish, Channel: "events", Payload: []byte("x")},
	})
	if err != nil || st[0] != protocol.CommitHeld || st[1] != protocol.CommitHeld || count(d.Tag) != 1 {
		t.Fatalf("start = %v, %v, count %d; want held and counted once", st, err, count(d.Tag))
	}
	if meta, _ := be.Get(ctx, m1.ID); meta.Status != protocol.StateStarted {
		t.Errorf("after start the result is %s; want STARTED", meta.Status)
	}
	st, err = s.broker.Commit(ctx, be, []protocol.CommitOp{{Kind: protocol.CommitFinish, Tag: d.Tag,
		Store: &protocol.StoreRequest{TaskID: m1.ID, State: protocol.StateSuccess, Result: 1}}})
	if err != nil || st[0] != protocol.CommitHeld || count(d.Tag) != 0 {
		t.Fatalf("finish = %v, %v, count %d; want held and the count gone", st, err, count(d.Tag))
	}
	if n, _ := redis.Int(conn.Do("HLEN", "unacked")); n != 0 {
		t.Errorf("unacked holds %d after the finish; want 0", n)
	}

	// Started here, then restored by a restorer (its lease lapsed): the
	// redelivery reports the start, and this run's finish writes nothing.
	m2 := s.publish(t, "q", "t.two", 0)
	d2 := fetch(t, c)
	if _, err := s.broker.Commit(ctx, be, []protocol.CommitOp{{Kind: protocol.CommitStart, Tag: d2.Tag}}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second) // exactly one visibility timeout: the lease has lapsed
	if n, err := s.broker.RestoreExpired(ctx); err != nil || n != 1 {
		t.Fatalf("RestoreExpired = %d, %v; want 1", n, err)
	}
	st, err = s.broker.Commit(ctx, be, []protocol.CommitOp{{Kind: protocol.CommitFinish, Tag: d2.Tag,
		Store: &protocol.StoreRequest{TaskID: m2.ID, State: protocol.StateSuccess, Result: 2}}})
	if err != nil || st[0] != protocol.CommitElsewhere {
		t.Fatalf("finish after a restore = %v, %v; want CommitElsewhere", st, err)
	}
	if meta, _ := be.Get(ctx, m2.ID); meta.Status != protocol.StatePending {
		t.Errorf("a run whose message was restored elsewhere wrote %s", meta.Status)
	}
	again := fetch(t, c)
	if again == nil || again.Tag != d2.Tag || again.Starts != 1 {
		t.Fatalf("redelivery = %+v; want the same tag with 1 start", again)
	}
	// Given back alive after a counted start: uncounted.
	if _, err := s.broker.Commit(ctx, be, []protocol.CommitOp{{Kind: protocol.CommitStart, Tag: again.Tag, Starts: again.Starts}}); err != nil {
		t.Fatal(err)
	}
	if err := s.broker.RestoreStarted(ctx, again.Tag); err != nil {
		t.Fatal(err)
	}
	if got := fetch(t, c); got == nil || got.Starts != 1 {
		t.Fatalf("after a give-back the redelivery reports %+v; want 1 start (the lapsed one only)", got)
	}
}

// Poison: FAILURE stored, envelope dead-lettered with the reason, ack and
// count gone, in one step; nothing when no longer held.
func TestPoisonDeadLettersAndFails(t *testing.T) {
	t.Parallel()
	s := newBrStack(t, protocol.BrokerOptions{})
	be := protocol.NewBackend(s.pool, protocol.BackendOptions{})
	ctx := context.Background()
	conn := s.pool.Get()
	defer conn.Close()
	m := s.publish(t, "q", "t.crash", 0)
	d := fetch(t, s.broker.NewConsumer("q"))
	req := &protocol.StoreRequest{TaskID: m.ID, State: protocol.StateFailure,
		Result: protocol.NewTaskError("WorkerLostError", "billiard.exceptions", "boom")}
	held, err := s.broker.Poison(ctx, be, d, req, "poison: test")
	if err != nil || !held {
		t.Fatalf("Poison = %v, %v", held, err)
	}
	meta, _ := be.Get(ctx, m.ID)
	if meta.Status != protocol.StateFailure || !strings.Contains(string(meta.Result), "WorkerLostError") {
		t.Errorf("poison result = %s %s", meta.Status, meta.Result)
	}
	raw, _ := redis.Bytes(conn.Do("LINDEX", "celery.deadletter", 0))
	var dl struct{ Reason, Queue, Raw string }
	if json.Unmarshal(raw, &dl) != nil || dl.Reason != "poison: test" || dl.Queue != "q" || !strings.Contains(dl.Raw, m.ID) {
		t.Errorf("dead letter = %s", raw)
	}
	if n, _ := redis.Int(conn.Do("HLEN", "unacked")); n != 0 {
		t.Errorf("unacked holds %d; want 0", n)
	}
	if held, err := s.broker.Poison(ctx, be, d, req, "again"); err != nil || held {
		t.Errorf("second Poison = %v, %v; want false (not held)", held, err)
	}
	if n, _ := redis.Int(conn.Do("LLEN", "celery.deadletter")); n != 1 {
		t.Errorf("%d dead letters; want 1", n)
	}
}

// BenchmarkBatchLifecycle is one task's Redis life on the worker's hot
// path, in batches of 32: FetchN (pop and hold), a Commit of the starts
// with STARTED, a Commit of the results with acks. It reports allocations
// per task; the time includes the real redis-server's share.
//
//	go test ./protocol -run '^$' -bench BatchLifecycle -benchmem
func BenchmarkBatchLifecycle(b *testing.B) {
	s := newBrStack(b, protocol.BrokerOptions{})
	be := protocol.NewBackend(s.pool, protocol.BackendOptions{})
	ctx := context.Background()
	cl := protocol.NewClient(s.broker, be)
	for i := 0; i < b.N; i++ {
		if _, err := cl.Send(ctx, "t.echo", []any{i, "bench"}, map[string]any{"n": i}, protocol.SendOptions{Queue: "q"}); err != nil {
			b.Fatal(err)
		}
	}
	c := s.broker.NewConsumer("q")
	started := map[string]any{"pid": 1, "hostname": "bench@host"}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		ds, err := c.FetchN(ctx, time.Second, 32)
		if err != nil || len(ds) == 0 {
			b.Fatalf("FetchN: %d, %v", len(ds), err)
		}
		starts := make([]protocol.CommitOp, 0, len(ds))
		finishes := make([]protocol.CommitOp, 0, len(ds))
		for _, d := range ds {
			m := d.Message
			starts = append(starts, protocol.CommitOp{Kind: protocol.CommitStart, Tag: d.Tag, Starts: d.Starts,
				Store: &protocol.StoreRequest{TaskID: m.ID, State: protocol.StateStarted, Result: started, Message: m}})
			finishes = append(finishes, protocol.CommitOp{Kind: protocol.CommitFinish, Tag: d.Tag,
				Store: &protocol.StoreRequest{TaskID: m.ID, State: protocol.StateSuccess, Result: m.Args, Message: m}})
		}
		if _, err := s.broker.Commit(ctx, be, starts); err != nil {
			b.Fatal(err)
		}
		if _, err := s.broker.Commit(ctx, be, finishes); err != nil {
			b.Fatal(err)
		}
		done += len(ds)
	}
}
