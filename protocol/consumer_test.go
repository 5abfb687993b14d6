package protocol_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/clock"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

func TestParseDB(t *testing.T) {
	for url, want := range map[string]int{
		"redis://127.0.0.1:6379/3":        3,
		"redis://127.0.0.1:6379":          0,
		"redis://u:p@127.0.0.1:6379/0":    0,
		"rediss://host/12":                12,
		"unix:///run/redis.sock?db=2":     2,
		"unix://:secret@/run/redis.sock":  0,
		"redis://127.0.0.1:6379/":         0,
		"redis://127.0.0.1:6379/15?foo=1": 15,
	} {
		got, err := protocol.ParseDB(url)
		if err != nil || got != want {
			t.Errorf("ParseDB(%q) = %d, %v; want %d", url, got, err, want)
		}
	}
	for _, url := range []string{"http://127.0.0.1/0", "redis://127.0.0.1/x", "redis://127.0.0.1/-1", "unix:///s?db=one", "::"} {
		if _, err := protocol.ParseDB(url); err == nil {
			t.Errorf("ParseDB(%q) accepted a bad URL", url)
		}
		if _, err := protocol.NewPool(url); err == nil {
			t.Errorf("NewPool(%q) accepted a bad URL", url)
		}
	}
	if _, err := protocol.NewPool("unix://?db=1"); err == nil {
		t.Error("NewPool accepted a unix:// URL without a socket path")
	}
}

// TestNewPoolUnixSocket talks to a real redis-server over its unix socket,
// in the database the URL names.
func TestNewPoolUnixSocket(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("SKIP: redis-server not installed (%v)", err)
	}
	sock := filepath.Join(t.TempDir(), "redis.sock")
	testenv.Start(t, "", nil, "redis-server", "--port", "0", "--unixsocket", sock,
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	pool, err := protocol.NewPool("unix://" + sock + "?db=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := pool.Get()
		_, err = c.Do("SET", "unix-key", "1")
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s never answered: %v", sock, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := pool.Get()
	defer c.Close()
	if _, err := c.Do("SELECT", 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := redis.Int(c.Do("EXISTS", "unix-key")); n != 0 {
		t.Fatal("the key landed in database 0, not the ?db=2 of the URL")
	}
	if _, err := c.Do("SELECT", 2); err != nil {
		t.Fatal(err)
	}
	if n, _ := redis.Int(c.Do("EXISTS", "unix-key")); n != 1 {
		t.Fatal("the key is not in database 2")
	}
}

func TestBackoff(t *testing.T) {
	var zero protocol.Backoff
	var got []time.Duration
	for range 8 {
		got = append(got, zero.Next())
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(got, want) {
		t.Fatalf("zero Backoff waits %v, want %v", got, want)
	}
	zero.Reset()
	if d := zero.Next(); d != 100*time.Millisecond {
		t.Fatalf("after Reset the first wait is %v, want 100ms", d)
	}
	b := protocol.Backoff{Min: time.Second, Max: 3 * time.Second}
	for range 100 { // no overflow into negative or zero waits
		if d := b.Next(); d < time.Second || d > 3*time.Second {
			t.Fatalf("Backoff{1s, 3s} waited %v", d)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if b.Wait(ctx) {
		t.Fatal("Wait on a cancelled context reported it as live")
	}
}

// TestFetchOrderMatchesKombuConsumer publishes the same mixed-priority
// messages to two queues twice: a real kombu Consumer drains one copy, the
// Go consumer the other, and both must see the same order.
func TestFetchOrderMatchesKombuConsumer(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	type pub struct {
		q   string
		pri int
	}
	pubs := []pub{{"a", 9}, {"a", 0}, {"b", 5}, {"a", 3}, {"b", 0}, {"a", 0}, {"b", 6}, {"b", 0}, {"a", 6}, {"b", 3}, {"a", 4}, {"b", 9}, {"b", 1}}
	publishAll := func(db int) (*protocol.Broker, map[string]string) {
		pool, err := protocol.NewPool(r.URL(db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pool.Close() })
		b := protocol.NewBroker(pool, protocol.BrokerOptions{})
		labels := map[string]string{}
		for i, p := range pubs {
			m := &protocol.Message{Task: "wire.noop", RoutingKey: p.q, Priority: p.pri}
			if err := b.PublishMessage(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			labels[m.ID] = fmt.Sprintf("%s%d#%d", p.q, p.pri, i)
		}
		return b, labels
	}

	_, pyLabels := publishAll(0)
	out := testenv.RunPython(t, context.Background(), r.URL(0), `
import sys
from kombu import Connection, Consumer, Queue
n = int(sys.argv[1])
order = []
def on_message(body, message):
    order.append(message.headers["id"])
    message.ack()
with Connection(sys.argv[2]) as conn:
    ch = conn.channel()
    with Consumer(ch, queues=[Queue("a", routing_key="a"), Queue("b", routing_key="b")], callbacks=[on_message], accept=["json"]):
        # kombu keeps active queues in a set: its first cycle order is
        # whatever the set yields, so report it for the Go side to copy.
        print("cycle", " ".join(ch._queue_cycle.items))
        while len(order) < n:
            conn.drain_events(timeout=10)
print("order", " ".join(order))
`, fmt.Sprint(len(pubs)), r.URL(0))
	var cycle, pyOrder []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "cycle":
			cycle = f[1:]
		case len(f) > 0 && f[0] == "order":
			for _, id := range f[1:] {
				pyOrder = append(pyOrder, pyLabels[id])
			}
		}
	}
	if len(cycle) != 2 || len(pyOrder) != len(pubs) {
		t.Fatalf("unexpected kombu consumer output:\n%s", out)
	}

	b, goLabels := publishAll(1)
	c := b.NewConsumer(cycle...)
	var goOrder []string
	for range pubs {
		d := fetch(t, c)
		if d == nil || d.Err != nil {
			t.Fatalf("fetch: %+v", d)
		}
		goOrder = append(goOrder, goLabels[d.Message.ID])
		if _, err := b.Ack(context.Background(), d.Tag); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(goOrder, pyOrder) {
		t.Fatalf("fetch order differs from kombu's (initial cycle %v):\n  go:    %v\n  kombu: %v", cycle, goOrder, pyOrder)
	}
	t.Logf("kombu order (cycle %v): %v", cycle, pyOrder)
}

// TestPythonRestoresGoHeldMessage: a message a Go consumer fetched and
// holds past the visibility timeout is restored by a starting Python worker,
// which runs it exactly once.
func TestPythonRestoresGoHeldMessage(t *testing.T) {
	testenv.RequireCelery(t)
	ctx := context.Background()
	// The Go side holds the message on a clock 2.1 s behind: its lease is
	// already older than the worker's 2 s visibility timeout when Python
	// (which reads its own wall clock) looks, with no sleep to wait that out.
	clk := clock.NewFake(time.Now().Add(-2100 * time.Millisecond))
	s := newBrStack(t, protocol.BrokerOptions{Clock: clk})
	m := &protocol.Message{Task: "wire.add", RoutingKey: "restq", Args: []any{2, 3}}
	if err := s.broker.PublishMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	d := fetch(t, s.broker.NewConsumer("restq"))
	if d == nil || d.Message == nil || d.Message.ID != m.ID {
		t.Fatalf("fetch: %+v", d)
	}
	testenv.Start(t, "", testenv.PythonEnv(t, s.r.URL(), "VISIBILITY_TIMEOUT=2"), testenv.PythonBin,
		"-m", "celery", "-A", "wireapp", "worker", "-Q", "restq", "-c", "1", "--without-mingle", "--without-gossip", "--loglevel=INFO")
	deadline := time.Now().Add(60 * time.Second)
	var meta protocol.ResultMeta
	for {
		raw, err := redis.Bytes(s.r.Conn().Do("GET", "celery-task-meta-"+m.ID))
		if err == nil {
			if err := json.Unmarshal(raw, &meta); err != nil {
				t.Fatalf("result %s: %v", raw, err)
			}
			if meta.Status.Ready() {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Python worker never finished the restored task (last result %+v)", meta)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if meta.Status != protocol.StateSuccess || string(meta.Result) != "5" {
		t.Fatalf("result = %s %s, want SUCCESS 5", meta.Status, meta.Result)
	}
	time.Sleep(time.Second) // room for a second, wrong, execution
	if n, _ := redis.Int(s.r.Conn().Do("GET", "wire:runs:"+m.ID)); n != 1 {
		t.Fatalf("wire:runs = %d, want exactly 1", n)
	}
	if held, err := s.broker.Ack(ctx, d.Tag); err != nil || held {
		t.Fatalf("Go's late ack: held=%v err=%v; want held=false (Python restored it)", held, err)
	}
}

// TestRestoreResolvesBindings restores messages published through a named
// exchange the way kombu's _lookup does, and falls back to the routing key
// where kombu would lose the message.
func TestRestoreResolvesBindings(t *testing.T) {
	ctx := context.Background()
	s := newBrStack(t, protocol.BrokerOptions{})
	viaExchange := func(exchange, rk string) *protocol.Message {
		m := &protocol.Message{Task: "wire.add", RoutingKey: "srcq", Priority: 7}
		env, err := protocol.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		var top map[string]any
		_ = json.Unmarshal(env, &top)
		top["properties"].(map[string]any)["delivery_info"] = map[string]any{"exchange": exchange, "routing_key": rk}
		env, _ = json.Marshal(top)
		s.r.Do("LPUSH", "srcq\x06\x166", env)
		return m
	}
	s.r.Do("SADD", "_kombu.binding.ex1", "rk1\x06\x16\x06\x16dstq", "other\x06\x16\x06\x16nope")
	bound := viaExchange("ex1", "rk1")
	orphan := viaExchange("ghost", "rk2")
	c := s.broker.NewConsumer("srcq")
	for range 2 {
		d := fetch(t, c)
		entry, _ := redis.String(s.r.Conn().Do("HGET", "unacked", d.Tag))
		if !strings.HasSuffix(entry, `, "ex1", "rk1"]`) && !strings.HasSuffix(entry, `, "ghost", "rk2"]`) {
			t.Fatalf("unacked entry does not carry the exchange and routing key: %s", entry)
		}
		if err := s.broker.Restore(ctx, d.Tag); err != nil {
			t.Fatal(err)
		}
	}
	for key, want := range map[string]string{"dstq\x06\x166": bound.ID, "rk2\x06\x166": orphan.ID} {
		raw, err := redis.Bytes(s.r.Conn().Do("LINDEX", key, 0))
		if err != nil {
			t.Fatalf("nothing restored to %q: %v", key, err)
		}
		m, err := protocol.Decode(raw)
		if err != nil || m.ID != want || !m.Redelivered {
			t.Fatalf("%q holds %v (err %v), want redelivered %s", key, m, err, want)
		}
	}
	for _, key := range []string{"nope\x06\x166", "srcq\x06\x166", "unacked", "unacked_index"} {
		if n := s.r.Do("EXISTS", key).(int64); n != 0 {
			t.Fatalf("%q exists after the restores", key)
		}
	}
}

// TestKeyPrefixEverywhere: with global_keyprefix every key the transport
// touches is prefixed, and kombu configured with the same prefix restores a
// message the Go consumer holds.
func TestKeyPrefixEverywhere(t *testing.T) {
	ctx := context.Background()
	// The fake clock starts 2.2 s behind the wall clock: the Go restore
	// below sees the lease lapse after exactly 1.1 s of it, and the lease the
	// second fetch writes is still 1.1 s old by the wall clock kombu reads.
	clk := clock.NewFake(time.Now().Add(-2200 * time.Millisecond))
	s := newBrStack(t, protocol.BrokerOptions{KeyPrefix: "pfx:", VisibilityTimeout: time.Second, Clock: clk})
	m := &protocol.Message{Task: "wire.add", RoutingKey: "pq", Priority: 5}
	if err := s.broker.PublishMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	if n := s.r.Do("LLEN", "pfx:pq\x06\x163").(int64); n != 1 {
		t.Fatal("publish did not LPUSH onto the prefixed priority list")
	}
	c := s.broker.NewConsumer("pq")
	d := fetch(t, c)
	if d == nil || d.Queue != "pq" || d.Message.ID != m.ID {
		t.Fatalf("fetch: %+v", d)
	}
	clk.Advance(1100 * time.Millisecond)
	if n, err := s.broker.RestoreExpired(ctx); err != nil || n != 1 {
		t.Fatalf("RestoreExpired = %d, %v; want 1", n, err)
	}
	d = fetch(t, c)
	if d == nil || d.Message.ID != m.ID || !d.Message.Redelivered {
		t.Fatalf("after the Go restore: %+v", d)
	}
	keys, _ := redis.Strings(s.r.Conn().Do("KEYS", "*"))
	for _, k := range keys {
		if !strings.HasPrefix(k, "pfx:") {
			t.Fatalf("key %q lacks the prefix (all keys: %q)", k, keys)
		}
	}

	testenv.RequireCelery(t) // the kombu half; the lease is >= 1.1 s old by the wall clock
	testenv.RunPython(t, ctx, s.r.URL(), `
import sys
from kombu import Connection
with Connection(sys.argv[1], transport_options={"global_keyprefix": "pfx:", "visibility_timeout": 1}) as conn:
    conn.default_channel.qos.restore_visible()
`, s.r.URL())
	d = fetch(t, c)
	if d == nil || d.Message.ID != m.ID || !d.Message.Redelivered {
		t.Fatalf("kombu with global_keyprefix did not restore the Go-held message: %+v", d)
	}
	if held, _ := s.broker.Ack(ctx, d.Tag); !held {
		t.Fatal("the message fetched after kombu's restore is not held")
	}
}

// TestUnholdableMessagesNeverLeaveRedis: an envelope the transport cannot
// hold is in the dead-letter list the moment Fetch has popped it, and one
// Redis can hold but Go cannot decode comes back with its tag so that
// DeadLetter clears unacked.
func TestUnholdableMessagesNeverLeaveRedis(t *testing.T) {
	ctx := context.Background()
	s := newBrStack(t, protocol.BrokerOptions{})
	c := s.broker.NewConsumer("q")

	s.r.Do("LPUSH", "q", "\x00not json\xff")
	d := fetch(t, c)
	if d == nil || d.Err == nil || d.Tag != "" {
		t.Fatalf("garbage: %+v", d)
	}
	if n := s.r.Do("LLEN", "celery.deadletter").(int64); n != 1 {
		t.Fatalf("garbage is not in the dead-letter list right after the pop (LLEN %d)", n)
	}
	if err := s.broker.DeadLetter(ctx, d, "again"); err != nil {
		t.Fatal(err)
	}
	if n := s.r.Do("LLEN", "celery.deadletter").(int64); n != 1 {
		t.Fatal("DeadLetter of an already dead-lettered delivery added a second entry")
	}

	// Redis's cjson reads hexadecimal numbers; Go (like Python) does not.
	s.r.Do("LPUSH", "q", `{"body": "", "headers": {"x": 0x10}, "properties": {"delivery_tag": "hex-tag"}}`)
	d = fetch(t, c)
	if d == nil || d.Err == nil || d.Tag != "hex-tag" {
		t.Fatalf("hex envelope: %+v", d)
	}
	if held, _ := s.broker.Held(ctx, "hex-tag"); !held {
		t.Fatal("the hex envelope was not held")
	}
	if err := s.broker.DeadLetter(ctx, d, "undecodable"); err != nil {
		t.Fatal(err)
	}
	if n := s.r.Do("HLEN", "unacked").(int64); n != 0 {
		t.Fatalf("unacked holds %d entries after DeadLetter", n)
	}

	// Deeper than cjson's 1000 levels but within Go's parser: dead-lettered
	// at the pop, reported with an error.
	deep := `{"headers": ` + strings.Repeat("[", 1200) + strings.Repeat("]", 1200) + `, "properties": {"delivery_tag": "deep"}}`
	s.r.Do("LPUSH", "q", deep)
	d = fetch(t, c)
	if d == nil || d.Err == nil || d.Tag != "" {
		t.Fatalf("deep envelope: %+v", d)
	}
	entries, _ := redis.ByteSlices(s.r.Conn().Do("LRANGE", "celery.deadletter", 0, -1))
	if len(entries) != 3 {
		t.Fatalf("dead-letter list has %d entries, want 3", len(entries))
	}
	var dl struct{ Reason, Queue, Time, Raw string }
	if err := json.Unmarshal(entries[0], &dl); err != nil || dl.Raw != deep || dl.Queue != "q" || dl.Reason == "" || dl.Time == "" {
		t.Fatalf("dead-letter entry %.200s... (err %v)", entries[0], err)
	}
}

// TestConsumerQueuesConcurrent changes the consumed queues while Fetch
// runs (run with -race to check the locking) and checks that a removed
// queue is no longer served.
func TestConsumerQueuesConcurrent(t *testing.T) {
	s := newBrStack(t, protocol.BrokerOptions{})
	c := s.broker.NewConsumer("a", "b")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_, _ = c.Fetch(ctx, 10*time.Millisecond)
		}
	}()
	var mut sync.WaitGroup
	for g := range 4 {
		mut.Add(1)
		go func() {
			defer mut.Done()
			q := fmt.Sprintf("tmp%d", g)
			for range 200 {
				c.AddQueue(q)
				c.AddQueue(q) // idempotent
				_ = c.Queues()
				if !c.RemoveQueue(q) {
					t.Errorf("RemoveQueue(%s) did not find it", q)
					return
				}
			}
		}()
	}
	mut.Wait()
	cancel()
	wg.Wait()
	if got := c.Queues(); len(got) != 2 || !slices.Contains(got, "a") || !slices.Contains(got, "b") {
		t.Fatalf("Queues() = %v, want a and b", got)
	}
	if c.RemoveQueue("nope") {
		t.Fatal("RemoveQueue reported an unknown queue as consumed")
	}
	if !c.RemoveQueue("b") {
		t.Fatal("RemoveQueue(b) failed")
	}
	s.publish(t, "b", "wire.b", 0)
	if d, err := c.Fetch(context.Background(), 200*time.Millisecond); err != nil || d != nil {
		t.Fatalf("fetched %+v, %v from a removed queue", d, err)
	}
	c.AddQueue("b")
	if d := fetch(t, c); d == nil || d.Queue != "b" {
		t.Fatalf("re-added queue not served: %+v", d)
	}
}

func BenchmarkPublish(b *testing.B) {
	s := newBrStack(b, protocol.BrokerOptions{})
	env, err := protocol.Encode(&protocol.Message{Task: "wire.add", RoutingKey: "bench", Args: []any{1, 2}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.broker.Publish(ctx, "bench", env, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFetchAck is one Fetch (pop and hold) plus one Ack per message,
// the transport's share of running a task.
func BenchmarkFetchAck(b *testing.B) {
	s := newBrStack(b, protocol.BrokerOptions{})
	conn := s.r.Conn()
	defer conn.Close()
	for i := range b.N {
		env, err := protocol.Encode(&protocol.Message{Task: "wire.add", RoutingKey: "bench", Args: []any{i, 2}})
		if err != nil {
			b.Fatal(err)
		}
		_ = conn.Send("LPUSH", "bench", env)
		if i%1000 == 999 {
			if _, err := conn.Do(""); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := conn.Do(""); err != nil {
		b.Fatal(err)
	}
	c := s.broker.NewConsumer("bench")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		d, err := c.Fetch(ctx, time.Second)
		if err != nil || d == nil || d.Err != nil {
			b.Fatalf("fetch: %+v, %v", d, err)
		}
		if _, err := s.broker.Ack(ctx, d.Tag); err != nil {
			b.Fatal(err)
		}
	}
}
