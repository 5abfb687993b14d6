package protocol_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/clock"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

type brStack struct {
	r      *testenv.Redis
	pool   *redis.Pool
	broker *protocol.Broker
}

func newBrStack(t testing.TB, opts protocol.BrokerOptions) *brStack {
	t.Helper()
	r := testenv.StartRedis(t)
	pool, err := protocol.NewPool(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	return &brStack{r: r, pool: pool, broker: protocol.NewBroker(pool, opts)}
}

func (s *brStack) publish(t testing.TB, queue, task string, pri int) *protocol.Message {
	t.Helper()
	m := &protocol.Message{Task: task, RoutingKey: queue, Priority: pri, Args: []any{pri}}
	if err := s.broker.PublishMessage(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func fetch(t testing.TB, c *protocol.Consumer) *protocol.Delivery {
	t.Helper()
	d, err := c.Fetch(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestQueueForPriority(t *testing.T) {
	b := protocol.NewBroker(nil, protocol.BrokerOptions{})
	for pri, want := range map[int]string{0: "q", 2: "q", 3: "q\x06\x163", 5: "q\x06\x163", 6: "q\x06\x166", 8: "q\x06\x166", 9: "q\x06\x169", 42: "q\x06\x169", -1: "q"} {
		if got := b.QueueForPriority("q", pri); got != want {
			t.Errorf("QueueForPriority(q, %d) = %q, want %q", pri, got, want)
		}
	}
}

// TestFetchOrderIsKombus publishes mixed priorities to two queues before any
// consumer starts and checks the exact order kombu's BRPOP would serve:
// band-major, round robin across queues within a band, FIFO per list.
func TestFetchOrderIsKombus(t *testing.T) {
	s := newBrStack(t, protocol.BrokerOptions{})
	type pub struct {
		q   string
		pri int
	}
	pubs := []pub{{"a", 9}, {"a", 0}, {"b", 5}, {"a", 3}, {"b", 0}, {"a", 0}, {"b", 6}, {"b", 0}, {"a", 6}}
	ids := map[string]pub{}
	for _, p := range pubs {
		m := s.publish(t, p.q, "wire.noop", p.pri)
		ids[m.ID] = p
	}
	// The bytes land on kombu's list names.
	if n := s.r.Do("LLEN", "a\x06\x169").(int64); n != 1 {
		t.Fatalf("LLEN a<SEP>9 = %d, want 1", n)
	}
	if n := s.r.Do("LLEN", "b\x06\x163").(int64); n != 1 {
		t.Fatalf("LLEN b<SEP>3 = %d, want 1", n)
	}
	if n := s.r.Do("SISMEMBER", "_kombu.binding.a", "a\x06\x16\x06\x16a").(int64); n != 1 {
		t.Fatal("publish did not declare the kombu binding of queue a")
	}
	c := s.broker.NewConsumer("a", "b")
	var got []string
	for range pubs {
		d := fetch(t, c)
		if d == nil || d.Err != nil {
			t.Fatalf("fetch: %+v", d)
		}
		p := ids[d.Message.ID]
		got = append(got, fmt.Sprintf("%s%d", p.q, p.pri))
		if _, err := s.broker.Ack(context.Background(), d.Tag); err != nil {
			t.Fatal(err)
		}
	}
	// Band 0 alternates a, b, a, b; each hit rotates the served queue to the
	// end, so band 3 starts with a again (a3, then b5), and so on.
	if want := "a0 b0 a0 b0 a3 b5 a6 b6 a9"; strings.Join(got, " ") != want {
		t.Fatalf("fetch order = %q, want %q", strings.Join(got, " "), want)
	}
	if d, _ := c.Fetch(context.Background(), 100*time.Millisecond); d != nil {
		t.Fatalf("queue should be empty, got %s", d.Raw)
	}
}

func TestUnackedBookkeeping(t *testing.T) {
	ctx := context.Background()
	s := newBrStack(t, protocol.BrokerOptions{})
	m := s.publish(t, "q", "wire.add", 0)
	c := s.broker.NewConsumer("q")
	d := fetch(t, c)
	if d.Message.ID != m.ID || d.Queue != "q" || d.Tag != m.DeliveryTag {
		t.Fatalf("delivery %+v does not match message %s", d, m.ID)
	}
	entry, err := redis.Bytes(s.r.Conn().Do("HGET", "unacked", d.Tag))
	if err != nil {
		t.Fatal(err)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(entry, &parts); err != nil || len(parts) != 3 {
		t.Fatalf("unacked entry %s is not [payload, exchange, rk]", entry)
	}
	if string(parts[0]) != string(d.Raw) || string(parts[1]) != `""` || string(parts[2]) != `"q"` {
		t.Fatalf("unacked entry = %s", entry)
	}
	if held, _ := s.broker.Held(ctx, d.Tag); !held {
		t.Fatal("fetched message is not in unacked_index")
	}
	// Requeue: back of the line (LPUSH), nothing left in unacked.
	s.publish(t, "q", "wire.other", 0)
	if err := s.broker.Requeue(ctx, d.Tag); err != nil {
		t.Fatal(err)
	}
	if n := s.r.Do("HLEN", "unacked").(int64); n != 0 {
		t.Fatalf("unacked has %d entries after requeue", n)
	}
	first := fetch(t, c)
	if first.Message.Task != "wire.other" {
		t.Fatalf("requeued message jumped the queue: got %s first", first.Message.Task)
	}
	second := fetch(t, c)
	if second.Message.ID != m.ID {
		t.Fatal("requeued message was lost")
	}
	// Restore: head of the line (RPUSH) with the redelivered flags.
	s.publish(t, "q", "wire.third", 0)
	if err := s.broker.Restore(ctx, second.Tag); err != nil {
		t.Fatal(err)
	}
	restored := fetch(t, c)
	if restored.Message.ID != m.ID || !restored.Message.Redelivered {
		t.Fatalf("restore: got %s redelivered=%v, want %s redelivered", restored.Message.ID, restored.Message.Redelivered, m.ID)
	}
	// Ack removes both; a second ack reports the message was not held.
	if held, err := s.broker.Ack(ctx, restored.Tag); err != nil || !held {
		t.Fatalf("ack: held=%v err=%v", held, err)
	}
	if held, _ := s.broker.Ack(ctx, restored.Tag); held {
		t.Fatal("second ack claims the message was still held")
	}
	if n := s.r.Do("ZCARD", "unacked_index").(int64); n != 1 { // `first` is still held
		t.Fatalf("unacked_index has %d entries, want 1", n)
	}
	if n, _ := s.broker.QueueLength(ctx, "q"); n != 1 {
		t.Fatalf("QueueLength = %d, want 1 (wire.third)", n)
	}
}

func TestRestoreExpiredAndTouch(t *testing.T) {
	ctx := context.Background()
	// A fake clock writes the lease scores and the restore ceiling, so a
	// lease lapses exactly when the clock passes it, however slow the machine.
	clk := clock.NewFake(time.Now())
	s := newBrStack(t, protocol.BrokerOptions{VisibilityTimeout: time.Second, Clock: clk})
	a := s.publish(t, "q", "wire.a", 0)
	b := s.publish(t, "q", "wire.b", 0)
	c := s.broker.NewConsumer("q")
	da, db := fetch(t, c), fetch(t, c)
	for range 8 { // 2.4 s in 300 ms steps: a's lease lapses, b's never does
		if err := s.broker.Touch(ctx, db.Tag); err != nil { // only b's lease is kept alive
			t.Fatal(err)
		}
		clk.Advance(300 * time.Millisecond)
	}
	n, err := s.broker.RestoreExpired(ctx)
	if err != nil || n != 1 {
		t.Fatalf("RestoreExpired = %d, %v; want 1 (only the untouched message)", n, err)
	}
	got := fetch(t, c)
	if got.Message.ID != a.ID || da.Message.ID != a.ID {
		t.Fatalf("restored %s, want %s", got.Message.ID, a.ID)
	}
	if held, _ := s.broker.Held(ctx, db.Tag); !held {
		t.Fatalf("touched message %s was restored", b.ID)
	}
	// The mutex is kombu's: while someone else holds it, nobody restores.
	s.r.Do("SET", "unacked_mutex", "python-token", "PX", 10000)
	clk.Advance(1100 * time.Millisecond) // both leases lapse: only the mutex keeps them
	if n, err := s.broker.RestoreExpired(ctx); err != nil || n != 0 {
		t.Fatalf("RestoreExpired under a held mutex = %d, %v; want 0", n, err)
	}
	if v, _ := redis.String(s.r.Conn().Do("GET", "unacked_mutex")); v != "python-token" {
		t.Fatal("RestoreExpired released a mutex it did not own")
	}
}

func TestBadInputIsDeadLettered(t *testing.T) {
	ctx := context.Background()
	s := newBrStack(t, protocol.BrokerOptions{})
	good := &protocol.Message{Task: "wire.add", RoutingKey: "q"}
	env, err := protocol.Encode(good)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(env, &m)
	m["content-type"] = "application/x-yaml"
	m["properties"].(map[string]any)["delivery_tag"] = "yaml-tag"
	yaml, _ := json.Marshal(m)
	delete(m["properties"].(map[string]any), "delivery_tag")
	m["content-type"] = "application/json"
	notag, _ := json.Marshal(m)
	for _, raw := range [][]byte{[]byte("\x00garbage\xff"), env[:len(env)/2], yaml, notag, env} {
		s.r.Do("LPUSH", "q", raw)
	}
	c := s.broker.NewConsumer("q")
	var bad int
	for i := 0; i < 5; i++ {
		d := fetch(t, c)
		if d == nil {
			t.Fatalf("fetch %d: nothing", i)
		}
		if d.Err != nil {
			bad++
			if err := s.broker.DeadLetter(ctx, d, d.Err.Error()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if d.Message.ID != good.ID {
			t.Fatalf("unexpected message %s", d.Raw)
		}
		_, _ = s.broker.Ack(ctx, d.Tag)
	}
	if bad != 4 {
		t.Fatalf("%d bad messages reported, want 4", bad)
	}
	entries, _ := redis.ByteSlices(s.r.Conn().Do("LRANGE", "celery.deadletter", 0, -1))
	if len(entries) != 4 {
		t.Fatalf("dead-letter list has %d entries, want 4", len(entries))
	}
	for _, e := range entries {
		var dl map[string]any
		if err := json.Unmarshal(e, &dl); err != nil || dl["reason"] == "" || dl["queue"] != "q" || dl["raw"] == "" {
			t.Fatalf("dead-letter entry %s lacks reason/queue/raw", e)
		}
	}
	if n := s.r.Do("HLEN", "unacked").(int64); n != 0 {
		t.Fatalf("unacked has %d entries, want 0", n)
	}
}

func TestFetchSurvivesRedisRestart(t *testing.T) {
	s := newBrStack(t, protocol.BrokerOptions{})
	c := s.broker.NewConsumer("q")
	s.r.Stop()
	if _, err := c.Fetch(context.Background(), 200*time.Millisecond); err == nil {
		t.Fatal("Fetch with Redis down returned no error")
	}
	s.r.Restart()
	m := s.publish(t, "q", "wire.add", 0)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d, err := c.Fetch(context.Background(), 200*time.Millisecond)
		if err == nil && d != nil {
			if d.Message.ID != m.ID {
				t.Fatal("wrong message after restart")
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("consumer never recovered after Redis restarted")
}

// TestFetchBlocksThenHolds covers the blocking path: a message that arrives
// while Fetch waits in BRPOP is held in unacked like one popped at once.
func TestFetchBlocksThenHolds(t *testing.T) {
	s := newBrStack(t, protocol.BrokerOptions{})
	c := s.broker.NewConsumer("q")
	got := make(chan *protocol.Delivery, 1)
	go func() {
		d, _ := c.Fetch(context.Background(), 5*time.Second)
		got <- d
	}()
	time.Sleep(300 * time.Millisecond)
	m := s.publish(t, "q", "wire.add", 0)
	d := <-got
	if d == nil || d.Message == nil || d.Message.ID != m.ID {
		t.Fatalf("blocking fetch returned %+v", d)
	}
	if held, _ := s.broker.Held(context.Background(), d.Tag); !held {
		t.Fatal("message fetched through BRPOP is not in unacked_index")
	}
	if n := s.r.Do("HEXISTS", "unacked", d.Tag).(int64); n != 1 {
		t.Fatal("message fetched through BRPOP is not in unacked")
	}
}

// A lease refresh delayed in the network (computed before a partition,
// delivered after another worker holds the message again) must not write
// its old time over the newer lease: a restorer would then take the
// message from its new holder.
func TestStaleTouchDoesNotAgeANewerLease(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Now())
	s := newBrStack(t, protocol.BrokerOptions{VisibilityTimeout: 2 * time.Second, Clock: clk})
	s.publish(t, "touchq", "wire.sleep", 0)
	d := fetch(t, s.broker.NewConsumer("touchq"))
	score := func() float64 {
		v, err := redis.Float64(s.r.Do("ZSCORE", "unacked_index", d.Tag), nil)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	held := score()
	// A broker whose clock is 3 s behind: the refresh that left before the
	// partition.
	stale := protocol.NewBroker(s.pool, protocol.BrokerOptions{VisibilityTimeout: 2 * time.Second, Clock: clock.NewFake(clk.Now().Add(-3 * time.Second))})
	if err := stale.Touch(ctx, d.Tag); err != nil {
		t.Fatal(err)
	}
	if got := score(); got != held {
		t.Fatalf("a stale refresh moved the lease from %f back to %f", held, got)
	}
	if n, err := s.broker.RestoreExpired(ctx); err != nil || n != 0 {
		t.Fatalf("RestoreExpired after the stale refresh = %d, %v; want 0", n, err)
	}
	// A current refresh still moves it forward; an unknown tag is not added.
	clk.Advance(time.Second)
	if err := s.broker.Touch(ctx, d.Tag, "not-held"); err != nil {
		t.Fatal(err)
	}
	if got := score(); got <= held {
		t.Fatalf("a current refresh left the lease at %f (was %f)", got, held)
	}
	if n, _ := redis.Int(s.r.Do("ZCARD", "unacked_index"), nil); n != 1 {
		t.Fatalf("unacked_index holds %d entries, want 1: Touch added a tag nobody holds", n)
	}
}

// SetFirstLease: a message fetched by such a consumer expires that long
// after the fetch unless refreshed, written in the step that holds it; a
// refresh gives it the whole visibility timeout.
func TestConsumerFirstLease(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Now())
	s := newBrStack(t, protocol.BrokerOptions{VisibilityTimeout: time.Hour, Clock: clk})
	s.publish(t, "firstq", "wire.sleep", 0)
	s.publish(t, "firstq", "wire.sleep", 0)
	c := s.broker.NewConsumer("firstq")
	c.SetFirstLease(time.Second)
	lost, kept := fetch(t, c), fetch(t, c)
	clk.Advance(500 * time.Millisecond)
	if err := s.broker.Touch(ctx, kept.Tag); err != nil { // the confirmation
		t.Fatal(err)
	}
	clk.Advance(500*time.Millisecond - time.Microsecond)
	if n, err := s.broker.RestoreExpired(ctx); err != nil || n != 0 {
		t.Fatalf("1 µs before the first lease ends RestoreExpired = %d, %v; want 0", n, err)
	}
	clk.Advance(time.Microsecond)
	if n, err := s.broker.RestoreExpired(ctx); err != nil || n != 1 {
		t.Fatalf("when the first lease ends RestoreExpired = %d, %v; want 1 (the unconfirmed one)", n, err)
	}
	if held, _ := s.broker.Held(ctx, lost.Tag); held {
		t.Error("the unconfirmed message is still held")
	}
	if held, _ := s.broker.Held(ctx, kept.Tag); !held {
		t.Error("the confirmed message was restored")
	}
}
