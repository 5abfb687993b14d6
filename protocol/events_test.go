package protocol

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol/internal/fanout"
)

func TestFanoutJSON(t *testing.T) {
	type info struct {
		Start fanout.Float `json:"time_start"`
		Plain float64      `json:"plain"`
	}
	var nilSlice []string
	cases := []struct {
		in   any
		want string
	}{
		{fanout.Float(2), `2.0`},
		{2.0, `2.0`},
		{float32(0.5), `0.5`},
		{-3.0, `-3.0`},
		{1714564800.123456, `1714564800.123456`},
		{1e-7, `1e-07`},
		{1e21, `1e+21`},
		{math.NaN(), `null`},
		{math.Inf(1), `null`},
		{json.Number("12345678901234567890123"), `12345678901234567890123`},
		{map[string]any{"b": 1, "a": []any{2.0, "x<y>"}}, `{"a": [2.0, "x<y>"], "b": 1}`},
		{map[string]float64{"id": 1714564800}, `{"id": 1714564800.0}`},
		{[]float64{1, 2.5}, `[1.0, 2.5]`},
		{nilSlice, `[]`},
		{map[string]any(nil), `{}`},
		{(*int)(nil), `null`},
		{info{Start: 3, Plain: 3}, `{"time_start":3.0,"plain":3}`},
		{fanoutObject{{"z", 1}, {"a", nil}}, `{"z": 1, "a": null}`},
		{Event{"type": "x"}, `{"type": "x"}`},
		{[]byte("hi"), `"aGk="`},
	}
	for _, c := range cases {
		got, err := fanout.Marshal(c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("fanout.Marshal(%#v) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	if _, err := fanout.Marshal(json.Number("1; DROP")); err == nil {
		t.Errorf("invalid json.Number accepted")
	}
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	if _, err := fanout.Marshal(cyclic); err == nil {
		t.Errorf("cyclic value accepted")
	}
	if _, err := fanout.Marshal(map[string]any{"c": make(chan int)}); err == nil {
		t.Errorf("channel accepted")
	}
	if b, _ := json.Marshal(fanout.Float(7)); string(b) != "7.0" {
		t.Errorf("json.Marshal(Float(7)) = %s", b)
	}
}

func TestLamportClock(t *testing.T) {
	var c LamportClock
	if c.forward() != 1 || c.forward() != 2 {
		t.Fatal("Forward does not count up from 0")
	}
	if got := c.adjust(10); got != 11 || c.read() != 11 {
		t.Errorf("Adjust(10) from 2 = %d, want 11", got)
	}
	if got := c.adjust(3); got != 12 {
		t.Errorf("Adjust(3) from 11 = %d, want 12", got)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				c.forward()
			}
		})
	}
	wg.Wait()
	if c.read() != 8012 {
		t.Errorf("concurrent Forward lost updates: %d", c.read())
	}
}

func TestPythonUTCOffset(t *testing.T) {
	for _, c := range []struct {
		east int
		want int
	}{{0, 0}, {2 * 3600, -2}, {-5 * 3600, 5}, {5*3600 + 1800, -6}, {-(3*3600 + 1800), 3}} {
		tm := time.Date(2024, 5, 1, 12, 0, 0, 0, time.FixedZone("x", c.east))
		if got := pythonUTCOffset(tm); got != c.want {
			t.Errorf("offset east %ds: utcoffset %d, want %d", c.east, got, c.want)
		}
	}
}

func TestDecodeEvents(t *testing.T) {
	env := func(body string) []byte { b, _ := fanout.Envelope([]byte(body), nil, 1, "celeryev", "x"); return b }
	events, err := decodeEvents(env(`[{"type": "task-started", "uuid": "a"}, 5, {"type": "task-succeeded", "runtime": 0.5}]`))
	if len(events) != 2 || events[0]["uuid"] != "a" || events[1].Type() != "task-succeeded" || err == nil {
		t.Errorf("list body: %v, %v", events, err)
	}
	events, err = decodeEvents([]byte(`{"body": "{\"type\": \"worker-online\", \"hostname\": \"h\", \"clock\": 3, \"timestamp\": 1.5}", "properties": {"body_encoding": "utf-8"}}`))
	if err != nil || len(events) != 1 || events[0].Hostname() != "h" || events[0].clock() != 3 || events[0].timestamp() != 1.5 {
		t.Errorf("utf-8 body: %v, %v", events, err)
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write([]byte(`{"type": "worker-offline"}`))
	zw.Close()
	compressed := `{"body": "` + base64.StdEncoding.EncodeToString(z.Bytes()) + `", "headers": {"compression": "application/x-gzip"}, "properties": {"body_encoding": "base64"}}`
	if events, err = decodeEvents([]byte(compressed)); err != nil || len(events) != 1 || events[0].Type() != "worker-offline" {
		t.Errorf("zlib body: %v, %v", events, err)
	}
	for _, junk := range []string{"", "x", "[]", `{"body": ""}`, string(env(`"str"`)), string(env(`{"no": "type"}`)), string(env(`{`))} {
		if events, err := decodeEvents([]byte(junk)); err == nil || len(events) != 0 {
			t.Errorf("decodeEvents(%q) = %v, %v", junk, events, err)
		}
	}
}

// TestEventWireFormat checks the bytes a Go event puts on the wire.
func TestEventWireFormat(t *testing.T) {
	r := testenv.StartRedis(t)
	pool := newTestPool(t, r)
	c := r.Conn()
	defer c.Close()
	psc := redis.PubSubConn{Conn: c}
	if err := psc.PSubscribe("pfx:/3.celeryev/*"); err != nil {
		t.Fatal(err)
	}
	if _, ok := psc.ReceiveWithTimeout(5 * time.Second).(redis.Subscription); !ok {
		t.Fatal("no subscription confirmation")
	}
	var shared LamportClock
	d := NewEventDispatcher(pool, 3, testNode, "pfx:", WithClock(&shared))
	d.adjust(40)
	err := d.Send(t.Context(), "worker-heartbeat", map[string]any{
		"freq": 2.0, "active": 0, "processed": 5, "loadavg": []float64{0.1, 0.05, 0.01},
		"sw_ident": "go-celery", "sw_ver": "0.1.0", "sw_sys": "Linux",
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := psc.ReceiveWithTimeout(5 * time.Second).(redis.Message)
	if !ok {
		t.Fatal("no event published")
	}
	if msg.Channel != "pfx:/3.celeryev/worker.heartbeat" {
		t.Errorf("channel %q", msg.Channel)
	}
	var env struct {
		Body            string         `json:"body"`
		ContentEncoding string         `json:"content-encoding"`
		ContentType     string         `json:"content-type"`
		Headers         map[string]any `json:"headers"`
		Properties      map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(msg.Data, &env); err != nil {
		t.Fatal(err)
	}
	if env.ContentType != "application/json" || env.ContentEncoding != "utf-8" || env.Headers["hostname"] != testNode ||
		env.Properties["delivery_mode"] != 1.0 || env.Properties["body_encoding"] != "base64" ||
		!jsonEqual(env.Properties["delivery_info"], `{"exchange": "celeryev", "routing_key": "worker.heartbeat"}`) {
		t.Errorf("envelope %s", msg.Data)
	}
	body, err := base64.StdEncoding.DecodeString(env.Body)
	if err != nil {
		t.Fatal(err)
	}
	s := string(body)
	prefix := `{"hostname": "gotest@host", "utcoffset": `
	if !strings.HasPrefix(s, prefix) || !strings.HasSuffix(s, `, "type": "worker-heartbeat"}`) {
		t.Errorf("body order: %s", s)
	}
	order := []string{`"hostname"`, `"utcoffset"`, `"pid"`, `"clock": 42`, `"active": 0`, `"freq": 2.0`, `"loadavg": [0.1, 0.05, 0.01]`, `"processed": 5`, `"sw_ident"`, `"timestamp": `, `"type"`}
	last := -1
	for _, k := range order {
		i := strings.Index(s, k)
		if i <= last {
			t.Errorf("%s missing or out of order in %s", k, s)
		}
		last = i
	}
	var ev Event
	if err := fanout.Unmarshal(body, &ev); err != nil {
		t.Fatal(err)
	}
	if ts := ev["timestamp"].(json.Number).String(); !strings.Contains(ts, ".") || math.Abs(ev.timestamp()-float64(time.Now().Unix())) > 60 {
		t.Errorf("timestamp %s", ts)
	}
	if d.Clock() != 42 || shared.read() != 42 {
		t.Errorf("clock after Adjust(40)+Send = %d, want 42", d.Clock())
	}
	if err := d.Send(t.Context(), "", nil); err == nil {
		t.Errorf("empty type accepted")
	}
	if err := d.Send(t.Context(), "task-x", map[string]any{"bad": make(chan int)}); err == nil {
		t.Errorf("unencodable field accepted")
	}
}

// TestPythonReceiverSeesGoEvents runs Celery's EventReceiver and State
// against a Go EventDispatcher.
func TestPythonReceiverSeesGoEvents(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	d := NewEventDispatcher(newTestPool(t, r), 0, testNode, "")
	const taskID = "e3b0c442-98fc-4c14-9afb-f4c8996fb924"

	// The receiver subscribes at some point after it starts; keep sending
	// until it has seen what it waits for and exits.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = d.Send(ctx, "worker-heartbeat", map[string]any{"freq": 2.0, "active": 0, "processed": 1,
				"loadavg": []float64{0.1, 0.2, 0.3}, "sw_ident": "go-celery", "sw_ver": "0.1.0", "sw_sys": "Linux"})
			_ = d.Send(ctx, "task-succeeded", map[string]any{"uuid": taskID, "result": "4", "runtime": 2.0})
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	script := `
import json, socket, sys
from wireapp import app
want = sys.argv[1]
state = app.events.State()
seen = {}
def on_event(ev):
    state.event(ev)
    if ev.get("hostname") == want and ev["type"] in ("worker-heartbeat", "task-succeeded"):
        seen.setdefault(ev["type"], ev)
    if len(seen) == 2:
        recv.should_stop = True
with app.connection_for_read() as conn:
    recv = app.events.Receiver(conn, handlers={"*": on_event})
    try:
        recv.capture(limit=None, timeout=30, wakeup=False)
    except socket.timeout:
        pass
w = state.workers.get(want)
task = state.tasks.get("` + taskID + `")
print(json.dumps({
    "events": seen,
    "types": {t: {k: type(v).__name__ for k, v in e.items()} for t, e in seen.items()},
    "alive": bool(w and w.alive),
    "task_state": task.state if task else None,
    "task_worker": task.worker.hostname if task and task.worker else None,
}))
`
	out := testenv.RunPython(t, context.Background(), r.URL(), script, testNode)
	cancel()
	wg.Wait()
	var res struct {
		Events     map[string]map[string]any    `json:"events"`
		Types      map[string]map[string]string `json:"types"`
		Alive      bool                         `json:"alive"`
		TaskState  string                       `json:"task_state"`
		TaskWorker string                       `json:"task_worker"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	hb, ts := res.Events["worker-heartbeat"], res.Events["task-succeeded"]
	if hb == nil || ts == nil {
		t.Fatalf("receiver saw %v", res.Events)
	}
	if hb["sw_ident"] != "go-celery" || hb["freq"] != 2.0 || hb["hostname"] != testNode {
		t.Errorf("heartbeat %v", hb)
	}
	if ts["uuid"] != taskID || ts["result"] != "4" || ts["runtime"] != 2.0 {
		t.Errorf("task-succeeded %v", ts)
	}
	for typ, fields := range map[string][]string{"worker-heartbeat": {"freq", "timestamp"}, "task-succeeded": {"runtime", "timestamp"}} {
		for _, f := range fields {
			if got := res.Types[typ][f]; got != "float" {
				t.Errorf("%s.%s is a Python %s, want float", typ, f, got)
			}
		}
		if got := res.Types[typ]["clock"]; got != "int" {
			t.Errorf("%s.clock is a Python %s, want int", typ, got)
		}
	}
	if !res.Alive {
		t.Errorf("celery.events.state does not consider %s alive", testNode)
	}
	if res.TaskState != "SUCCESS" || res.TaskWorker != testNode {
		t.Errorf("state task: %s on %s", res.TaskState, res.TaskWorker)
	}
}

// TestReceiveEventsFromPythonWorker receives a real worker's heartbeats and
// its buffered task events (a list on task.multi).
func TestReceiveEventsFromPythonWorker(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	pool := newTestPool(t, r)
	const pyNode = "pyev@testhost"

	var mu sync.Mutex
	var got []Event
	var clock LamportClock
	find := func(pred func(Event) bool) Event {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range got {
			if pred(e) {
				return e
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ReceiveEvents(ctx, pool, 0, "", "*", func(e Event) {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
		}, WithLogger(testLogger(t)), WithClock(&clock))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ReceiveEvents: %v", err)
		}
	})
	testenv.StartCeleryWorker(t, r.URL(), "wireapp", "-E", "-P", "solo", "-n", pyNode)

	waitFor(t, 30*time.Second, "a worker-heartbeat from "+pyNode, func() bool {
		return find(func(e Event) bool { return e.Type() == "worker-heartbeat" && e.Hostname() == pyNode }) != nil
	})
	hb := find(func(e Event) bool { return e.Type() == "worker-heartbeat" && e.Hostname() == pyNode })
	if hb["sw_ident"] != "py-celery" || hb.clock() <= 0 || hb.timestamp() <= 0 {
		t.Errorf("heartbeat %v", hb)
	}
	if f, ok := hb["freq"].(json.Number); !ok || f.String() != "2.0" {
		t.Errorf("heartbeat freq %v", hb["freq"])
	}
	if clock.read() <= hb.clock() {
		t.Errorf("WithClock: receiver clock %d not past the event clock %d", clock.read(), hb.clock())
	}

	taskID := strings.TrimSpace(testenv.RunPython(t, t.Context(), r.URL(), `
from wireapp import add
res = add.delay(2, 3)
assert res.get(timeout=30) == 5
print(res.id)
`))
	waitFor(t, 20*time.Second, "task-succeeded for "+taskID, func() bool {
		return find(func(e Event) bool { return e.Type() == "task-succeeded" && e["uuid"] == taskID }) != nil
	})
	ev := find(func(e Event) bool { return e.Type() == "task-succeeded" && e["uuid"] == taskID })
	if ev["result"] != "5" || ev.Hostname() != pyNode {
		t.Errorf("task-succeeded %v", ev)
	}
}

// TestReceiveEventsSurvivesGarbageAndRestart publishes junk on celeryev and
// restarts Redis; a Go receiver must keep delivering events.
func TestReceiveEventsSurvivesGarbageAndRestart(t *testing.T) {
	r := testenv.StartRedis(t)
	pool := newTestPool(t, r)
	d := NewEventDispatcher(pool, 0, testNode, "")
	events := make(chan Event, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ReceiveEvents(ctx, pool, 0, "", "worker.#", func(e Event) {
			select {
			case events <- e:
			default:
			}
		}, WithLogger(testLogger(t)))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ReceiveEvents: %v", err)
		}
	})
	// expect sends a fresh event until one with that mark arrives.
	expect := func(mark string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if err := d.Send(t.Context(), "worker-heartbeat", map[string]any{"mark": mark, "freq": 2.0}); err != nil {
				time.Sleep(100 * time.Millisecond) // Redis may still be restarting
				continue
			}
			timeout := time.After(200 * time.Millisecond)
		drain:
			for {
				select {
				case e := <-events:
					if e["mark"] == mark {
						return
					}
				case <-timeout:
					break drain
				}
			}
		}
		t.Fatalf("event %q never received", mark)
	}
	expect("first")
	env := func(body string) string {
		b, _ := fanout.Envelope([]byte(body), nil, 1, "celeryev", "worker.x")
		return string(b)
	}
	for _, junk := range []string{"", "junk", "[1,2]", `{"body": 1}`, `{"body": "!!", "properties": {"body_encoding": "base64"}}`,
		env("nope"), env("[1, null, {}]"), env(`{"type": 5}`), env(`[{"type": "worker-x", "hostname": null, "clock": "x", "timestamp": "y"}]`)} {
		if n, _ := redis.Int(r.Do("PUBLISH", "/0.celeryev/worker.junk", junk), nil); n != 1 {
			t.Fatalf("PUBLISH reached %d subscribers", n)
		}
	}
	expect("after-garbage")
	r.Restart()
	expect("after-restart")
}
