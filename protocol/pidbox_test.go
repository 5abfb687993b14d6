package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol/internal/fanout"
)

const testNode = "gotest@host"

// newTestPool dials r with a read timeout shorter than the idle periods of
// the tests, so that subscriptions prove they do not depend on it.
func newTestPool(t *testing.T, r *testenv.Redis) *redis.Pool {
	t.Helper()
	p := &redis.Pool{
		Dial: func() (redis.Conn, error) {
			return redis.Dial("tcp", r.Addr(),
				redis.DialConnectTimeout(2*time.Second),
				redis.DialReadTimeout(2*time.Second),
				redis.DialWriteTimeout(2*time.Second))
		},
		// As a production pool should: drop connections a Redis restart
		// killed before handing them out.
		TestOnBorrow: func(c redis.Conn, _ time.Time) error {
			_, err := c.Do("PING")
			return err
		},
		MaxIdle:     8,
		IdleTimeout: time.Minute,
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testMailbox records what its handlers saw.
type testMailbox struct {
	*Mailbox
	pings   atomic.Int64
	mu      sync.Mutex
	revoked []any
	release chan struct{} // closes to let "slow" return
}

// startMailbox runs a Go mailbox for testNode with ping, revoke, active,
// stats, a failing, a panicking, a silent and a slow command, and waits
// until it has subscribed.
func startMailbox(t *testing.T, r *testenv.Redis, pool *redis.Pool) *testMailbox {
	t.Helper()
	tm := &testMailbox{Mailbox: NewMailbox(pool, 0, testNode, "", WithLogger(testLogger(t))), release: make(chan struct{})}
	tm.Handle("ping", func(context.Context, *ControlRequest) (any, error) {
		tm.pings.Add(1)
		return map[string]any{"ok": "pong"}, nil
	})
	tm.Handle("revoke", func(_ context.Context, req *ControlRequest) (any, error) {
		tm.mu.Lock()
		defer tm.mu.Unlock()
		tm.revoked = append(tm.revoked, req.Arguments["task_id"])
		return map[string]any{"ok": "tasks flagged as revoked"}, nil
	})
	tm.Handle("active", func(context.Context, *ControlRequest) (any, error) {
		return []map[string]any{{
			"id": "3f1c0e9a-0000-4000-8000-000000000001", "name": "wire.add", "type": "wire.add",
			"args": []any{2, 2}, "kwargs": map[string]any{}, "hostname": testNode,
			"time_start": 1714564800.0, "acknowledged": true, "worker_pid": 4242,
			"delivery_info": map[string]any{"exchange": "", "routing_key": "celery", "priority": 0, "redelivered": false},
		}}, nil
	})
	tm.Handle("hello", func(context.Context, *ControlRequest) (any, error) {
		return map[string]any{"revoked": map[string]any{"abc": 1714564800.0}, "clock": 7}, nil
	})
	tm.Handle("fail", func(context.Context, *ControlRequest) (any, error) { return nil, errors.New("boom's") })
	tm.Handle("crash", func(context.Context, *ControlRequest) (any, error) { panic("handler bug") })
	tm.Handle("shutdown", func(context.Context, *ControlRequest) (any, error) { return nil, ErrNoReply })
	tm.Handle("slow", func(ctx context.Context, _ *ControlRequest) (any, error) {
		select {
		case <-tm.release:
		case <-ctx.Done():
		}
		return "done", nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tm.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Mailbox.Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Mailbox.Run did not return after cancel")
		}
	})
	waitMailboxBound(t, r)
	return tm
}

func waitMailboxBound(t *testing.T, r *testenv.Redis) {
	t.Helper()
	waitFor(t, 15*time.Second, "the mailbox binding", func() bool {
		c := r.Conn()
		defer c.Close()
		n, _ := redis.Int(c.Do("SISMEMBER", "_kombu.binding.celery.pidbox", "\x06\x16\x06\x16"+testNode+".celery.pidbox"))
		return n == 1
	})
}

// runCelery runs the celery CLI against the wireapp fixture and returns its
// combined output and exit code.
func runCelery(t *testing.T, r *testenv.Redis, args ...string) (string, int) {
	t.Helper()
	testenv.RequireCelery(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.PythonBin, append([]string{"-m", "celery", "-A", "wireapp"}, args...)...)
	cmd.Dir = testenv.RepoRoot(t)
	cmd.Env = append(os.Environ(), testenv.PythonEnv(t, r.URL())...)
	out, err := cmd.CombinedOutput()
	t.Logf("celery %s:\n%s", strings.Join(args, " "), out)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("celery %v: %v\n%s", args, err, out)
	}
	return string(out), code
}

func TestPidboxSelects(t *testing.T) {
	s := func(v string) *string { return &v }
	cases := []struct {
		name string
		req  ControlRequest
		want bool
	}{
		{"no destination runs everywhere", ControlRequest{}, true},
		{"destination names the node", ControlRequest{Destination: []string{"a@b", testNode}}, true},
		{"destination names others", ControlRequest{Destination: []string{"a@b"}}, false},
		{"destination wins over pattern", ControlRequest{Destination: []string{"a@b"}, Pattern: s("*"), Matcher: s("glob")}, false},
		{"glob match", ControlRequest{Pattern: s("gotest@*"), Matcher: s("glob")}, true},
		{"glob question mark", ControlRequest{Pattern: s("g?test@hos?"), Matcher: s("glob")}, true},
		{"glob negated set", ControlRequest{Pattern: s("[!x]otest@host"), Matcher: s("glob")}, true},
		{"glob negated set excludes", ControlRequest{Pattern: s("[!g]otest@host"), Matcher: s("glob")}, false},
		{"glob is anchored", ControlRequest{Pattern: s("gotest"), Matcher: s("glob")}, false},
		{"glob dot is literal", ControlRequest{Pattern: s("gotest.host"), Matcher: s("glob")}, false},
		{"pcre anchored at start", ControlRequest{Pattern: s("gotest"), Matcher: s("pcre")}, true},
		{"pcre not searched", ControlRequest{Pattern: s("host"), Matcher: s("pcre")}, false},
		{"pcre alternation stays anchored", ControlRequest{Pattern: s("x|host"), Matcher: s("pcre")}, false},
		{"pcre invalid", ControlRequest{Pattern: s("("), Matcher: s("pcre")}, false},
		{"unknown matcher runs nothing", ControlRequest{Pattern: s("*"), Matcher: s("regex")}, false},
		{"pattern without matcher runs everywhere", ControlRequest{Pattern: s("nomatch")}, true},
	}
	for _, c := range cases {
		if got := pidboxSelects(testNode, &c.req); got != c.want {
			t.Errorf("%s: pidboxSelects = %v, want %v", c.name, got, c.want)
		}
	}
	if !pidboxSelects("a/b@host", &ControlRequest{Pattern: s("a*"), Matcher: s("glob")}) {
		t.Errorf("fnmatch's * must match '/' too")
	}
}

func TestParseControlRequest(t *testing.T) {
	var body any
	raw := `{"method": "revoke", "arguments": {"task_id": ["a", "b"], "terminate": false}, "destination": ["n1", "n2"], "pattern": null, "matcher": null, "ticket": "t1", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "oid"}}`
	if err := fanout.Unmarshal([]byte(raw), &body); err != nil {
		t.Fatal(err)
	}
	req, err := parseControlRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "revoke" || req.Ticket != "t1" || len(req.Destination) != 2 || req.ReplyTo == nil ||
		req.ReplyTo.Exchange != "reply.celery.pidbox" || req.ReplyTo.RoutingKey != "oid" || req.Pattern != nil {
		t.Errorf("parsed %+v", req)
	}
	if ids, _ := req.Arguments["task_id"].([]any); len(ids) != 2 {
		t.Errorf("arguments %v", req.Arguments)
	}
	req, err = parseControlRequest(map[string]any{"method": "ping", "arguments": nil})
	if err != nil || req.Arguments == nil {
		t.Errorf("null arguments: %+v, %v", req, err)
	}
	for _, bad := range []any{
		nil, "x", []any{1}, map[string]any{}, map[string]any{"method": 5},
		map[string]any{"method": "ping", "arguments": "x"},
		map[string]any{"method": "ping", "destination": 7},
		map[string]any{"method": "ping", "destination": []any{1, 2}},
		map[string]any{"method": "ping", "reply_to": "q"},
		map[string]any{"method": "ping", "reply_to": map[string]any{"exchange": 1}},
	} {
		if _, err := parseControlRequest(bad); err == nil {
			t.Errorf("parseControlRequest(%#v) accepted garbage", bad)
		}
	}
}

// TestMailboxCeleryCLI drives a Go mailbox with Celery's own CLI and
// app.control.
func TestMailboxCeleryCLI(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	mb := startMailbox(t, r, newTestPool(t, r))

	out, code := runCelery(t, r, "inspect", "ping", "-d", testNode, "--timeout", "5")
	if code != 0 || !strings.Contains(out, testNode) || !strings.Contains(out, "pong") {
		t.Fatalf("celery inspect ping -d %s: exit %d\n%s", testNode, code, out)
	}
	out, code = runCelery(t, r, "inspect", "ping", "--timeout", "3")
	if code != 0 || !strings.Contains(out, testNode) || !strings.Contains(out, "pong") {
		t.Fatalf("celery inspect ping (all nodes): exit %d\n%s", code, out)
	}

	const taskID = "9b2f4c1e-5d6a-4e7b-8c9d-0a1b2c3d4e5f"
	out, code = runCelery(t, r, "control", "revoke", taskID, "--timeout", "3")
	if code != 0 || !strings.Contains(out, testNode) {
		t.Fatalf("celery control revoke: exit %d\n%s", code, out)
	}
	mb.mu.Lock()
	got, _ := json.Marshal(mb.revoked)
	mb.mu.Unlock()
	if !strings.Contains(string(got), taskID) {
		t.Fatalf("revoke handler saw task_id %s, want %s", got, taskID)
	}

	pingsBefore := mb.pings.Load()
	script := `
import json
from wireapp import app
c = app.control
out = {
    "active": c.inspect(destination=["gotest@host"], timeout=5).active(),
    "hello": c.inspect(destination=["gotest@host"], timeout=5)._request("hello", from_node="x@y", revoked={}),
    "other": c.ping(destination=["other@host"], timeout=1),
    "glob": c.ping(pattern="gotest@*", matcher="glob", timeout=2),
    "pcre_miss": c.ping(pattern="host", matcher="pcre", timeout=1),
}
# Mingle feeds a hello reply to LimitedSet.update, which insists on floats.
from celery.utils.collections import LimitedSet
LimitedSet().update(out["hello"]["gotest@host"]["revoked"])
print(json.dumps(out))
`
	var res struct {
		Active   map[string][]map[string]any `json:"active"`
		Hello    map[string]map[string]any   `json:"hello"`
		Other    []any                       `json:"other"`
		Glob     []map[string]any            `json:"glob"`
		PcreMiss []any                       `json:"pcre_miss"`
	}
	pyOut := testenv.RunPython(t, context.Background(), r.URL(), script)
	if err := json.Unmarshal([]byte(pyOut), &res); err != nil {
		t.Fatalf("python output %q: %v", pyOut, err)
	}
	active := res.Active[testNode]
	if len(active) != 1 || active[0]["name"] != "wire.add" || active[0]["hostname"] != testNode {
		t.Errorf("inspect active = %v", res.Active)
	}
	if len(res.Other) != 0 || len(res.PcreMiss) != 0 {
		t.Errorf("requests for other nodes were answered: other=%v pcre=%v", res.Other, res.PcreMiss)
	}
	if len(res.Glob) != 1 || res.Glob[0][testNode] == nil {
		t.Errorf("glob ping = %v", res.Glob)
	}
	if n := mb.pings.Load() - pingsBefore; n != 1 {
		t.Errorf("ping handler ran %d times for one matching and two non-matching requests", n)
	}
}

// TestMailboxReplies checks reply shapes, error replies and concurrency
// with the Go client.
func TestMailboxReplies(t *testing.T) {
	r := testenv.StartRedis(t)
	pool := newTestPool(t, r)
	mb := startMailbox(t, r, pool)
	ctl := NewControl(pool, 0, "")
	ctx := t.Context()
	dest := []string{testNode}

	timeout := 5 * time.Second
	call := func(method string, args map[string]any) (any, bool) {
		t.Helper()
		replies, err := ctl.Broadcast(ctx, method, args, dest, timeout)
		if err != nil {
			t.Fatalf("Broadcast %s: %v", method, err)
		}
		v, ok := replies[testNode]
		return v, ok
	}
	if v, _ := call("ping", nil); !jsonEqual(v, `{"ok": "pong"}`) {
		t.Errorf("ping reply %v", v)
	}
	if v, _ := call("nope", nil); !jsonEqual(v, `{"error": "KeyError('nope')"}`) {
		t.Errorf("unknown method reply %v", v)
	}
	if v, _ := call("fail", nil); !jsonEqual(v, `{"error": "Error(\"boom's\")"}`) {
		t.Errorf("failing handler reply %v", v)
	}
	if v, _ := call("crash", nil); !strings.Contains(toJSON(v), "handler bug") {
		t.Errorf("panicking handler reply %v", v)
	}
	hello, _ := call("hello", nil)
	if s := toJSON(hello); !strings.Contains(s, `"abc":1714564800.0`) {
		t.Errorf("float in reply lost its fraction: %s", s)
	}
	timeout = 2 * time.Second
	start := time.Now()
	if v, ok := call("shutdown", nil); ok {
		t.Errorf("ErrNoReply still replied %v", v)
	}
	timeout = 5 * time.Second
	if time.Since(start) < 2*time.Second {
		t.Errorf("Broadcast returned before its timeout without a reply")
	}

	// A slow command must not hold up the next one.
	if _, err := ctl.Broadcast(ctx, "slow", nil, dest, 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := call("ping", nil); !jsonEqual(v, `{"ok": "pong"}`) {
		t.Errorf("ping while a slow command runs: %v", v)
	}
	close(mb.release)

	// A request for another node is ignored.
	before := mb.pings.Load()
	replies, err := ctl.Broadcast(ctx, "ping", nil, []string{"other@host"}, time.Second)
	if err != nil || len(replies) != 0 {
		t.Errorf("ping other@host: %v, %v", replies, err)
	}
	if mb.pings.Load() != before {
		t.Errorf("ping for other@host ran the handler")
	}

	// Reply lists and bindings are cleaned up.
	if n, _ := redis.Int(r.Do("SCARD", "_kombu.binding.reply.celery.pidbox"), nil); n != 0 {
		t.Errorf("%d reply bindings left", n)
	}
	if keys, _ := redis.Strings(r.Do("KEYS", "*reply.celery.pidbox*"), nil); len(keys) != 0 {
		t.Errorf("reply lists left: %q", keys)
	}
}

// TestMailboxExpiredRequest publishes a request whose expires header has
// passed: the node must neither run nor answer it.
func TestMailboxExpiredRequest(t *testing.T) {
	r := testenv.StartRedis(t)
	pool := newTestPool(t, r)
	mb := startMailbox(t, r, pool)

	publish := func(expires float64) {
		t.Helper()
		body, _ := fanout.Marshal(fanoutObject{{"method", "ping"}, {"arguments", map[string]any{}}, {"destination", nil}, {"pattern", nil}, {"matcher", nil},
			{"ticket", "t"}, {"reply_to", fanoutObject{{"exchange", "reply.celery.pidbox"}, {"routing_key", "oid"}}}})
		env, _ := fanout.Envelope(body, fanoutObject{{"clock", 1}, {"expires", fanout.Float(expires)}}, 2, "celery.pidbox", "")
		r.Do("SADD", "_kombu.binding.reply.celery.pidbox", "oid\x06\x16\x06\x16oid.reply.celery.pidbox")
		if n, _ := redis.Int(r.Do("PUBLISH", "/0.celery.pidbox", env), nil); n != 1 {
			t.Fatalf("PUBLISH reached %d subscribers", n)
		}
	}
	publish(float64(time.Now().Add(-10*time.Second).Unix()) + 0.5)
	publish(float64(time.Now().Add(30*time.Second).Unix()) + 0.5)
	waitFor(t, 10*time.Second, "the reply to the live request", func() bool {
		n, _ := redis.Int(r.Do("LLEN", "oid.reply.celery.pidbox"), nil)
		return n >= 1
	})
	time.Sleep(200 * time.Millisecond)
	if n, _ := redis.Int(r.Do("LLEN", "oid.reply.celery.pidbox"), nil); n != 1 {
		t.Errorf("%d replies, want 1 (the expired request was answered)", n)
	}
	if n := mb.pings.Load(); n != 1 {
		t.Errorf("ping handler ran %d times, want 1", n)
	}
	raw, _ := redis.Bytes(r.Do("RPOP", "oid.reply.celery.pidbox"), nil)
	msg, err := fanout.ParseEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Headers["ticket"] != "t" || msg.Exchange != "reply.celery.pidbox" || msg.RoutingKey != "oid" || !jsonEqual(msg.Body, `{"gotest@host": {"ok": "pong"}}`) {
		t.Errorf("reply envelope %+v", msg)
	}
	if c, ok := fanout.AsInt(msg.Headers["clock"]); !ok || c < 2 {
		t.Errorf("reply clock %v not adjusted past the request's", msg.Headers["clock"])
	}
}

// TestMailboxSurvivesGarbageAndRestart publishes junk on the pidbox channel
// and restarts Redis; the node must keep answering.
func TestMailboxSurvivesGarbageAndRestart(t *testing.T) {
	r := testenv.StartRedis(t)
	pool := newTestPool(t, r)
	mb := startMailbox(t, r, pool)
	ctl := NewControl(pool, 0, "")
	b64 := func(s string) string {
		env, _ := fanout.Envelope([]byte(s), nil, 2, "celery.pidbox", "")
		return string(env)
	}
	for _, junk := range []string{
		"", "not json", "[]", "null", "{}", `{"body": 5}`, `{"body": "%%%", "properties": {"body_encoding": "base64"}}`,
		`{"body": "eyJ9", "properties": {"body_encoding": "rot13"}}`,
		`{"body": "x", "content-type": "application/x-python-serialize"}`,
		`{"body": "x", "headers": {"compression": "application/x-gzip"}, "properties": {"body_encoding": "utf-8"}}`,
		`{"body": "{\"method\": \"ping\"}", "headers": [1], "properties": {}}`,
		b64("garbage"), b64(`"ping"`), b64(`{"method": 1}`), b64(`{"method": "ping", "arguments": [1]}`),
		b64(`{"method": "ping", "destination": {"a": 1}}`), b64(`{"method": "ping", "reply_to": {"exchange": "x"}}`),
		b64(`{"method": "ping", "destination": ["other@host"], "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "k"}}`),
		b64(`{"method": "nope", "arguments": {"a": [1, {"b": null}]}}`),
	} {
		if n, _ := redis.Int(r.Do("PUBLISH", "/0.celery.pidbox", junk), nil); n != 1 {
			t.Fatalf("PUBLISH reached %d subscribers", n)
		}
	}
	// Junk headers and properties around a valid request do not stop it,
	// as with kombu: this ping runs (without a reply).
	tolerable := `{"body": "{\"method\": \"ping\"}", "headers": {"clock": "x", "expires": "y"}, "properties": {"body_encoding": "utf-8", "delivery_info": 3}}`
	if n, _ := redis.Int(r.Do("PUBLISH", "/0.celery.pidbox", tolerable), nil); n != 1 {
		t.Fatalf("PUBLISH reached %d subscribers", n)
	}
	replies, err := ctl.Broadcast(t.Context(), "ping", nil, []string{testNode}, 5*time.Second)
	if err != nil || !jsonEqual(replies[testNode], `{"ok": "pong"}`) {
		t.Fatalf("ping after garbage: %v, %v", replies, err)
	}
	if n := mb.pings.Load(); n != 2 {
		t.Errorf("ping handler ran %d times, want 2 (garbage reached it, or a tolerable request did not)", n)
	}

	r.Restart()
	waitMailboxBound(t, r)
	replies, err = ctl.Broadcast(t.Context(), "ping", nil, []string{testNode}, 5*time.Second)
	if err != nil || !jsonEqual(replies[testNode], `{"ok": "pong"}`) {
		t.Fatalf("ping after a Redis restart: %v, %v", replies, err)
	}
}

// TestControlBroadcastPythonAndGo pings a real Python worker and a Go
// mailbox with one Go Broadcast.
func TestControlBroadcastPythonAndGo(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	pool := newTestPool(t, r)
	startMailbox(t, r, pool)
	const pyNode = "pyw@testhost"
	testenv.StartCeleryWorker(t, r.URL(), "wireapp", "-P", "solo", "-n", pyNode)
	ctl := NewControl(pool, 0, "")
	// Celery prints "ready." before its event loop has PSUBSCRIBEd the
	// pidbox, and fanout is at-most-once: wait until the worker answers,
	// as `celery inspect` users retry, before the asserted broadcast.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ := ctl.Broadcast(t.Context(), "ping", nil, []string{pyNode}, time.Second)
		if got[pyNode] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Python worker %s never answered a ping", pyNode)
		}
	}

	replies, err := ctl.Broadcast(t.Context(), "ping", nil, []string{pyNode, testNode}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{pyNode, testNode} {
		if !jsonEqual(replies[n], `{"ok": "pong"}`) {
			t.Errorf("reply of %s = %v (all: %v)", n, replies[n], replies)
		}
	}
	replies, err = ctl.Broadcast(t.Context(), "ping", nil, nil, 2*time.Second)
	if err != nil || len(replies) != 2 || replies[pyNode] == nil || replies[testNode] == nil {
		t.Errorf("ping all nodes: %v, %v", replies, err)
	}
	if n, _ := redis.Int(r.Do("SCARD", "_kombu.binding.reply.celery.pidbox"), nil); n != 0 {
		t.Errorf("%d reply bindings left", n)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// jsonEqual compares a decoded value with JSON text, numbers by value.
func jsonEqual(v any, want string) bool {
	var a, b any
	if json.Unmarshal([]byte(toJSON(v)), &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		return false
	}
	return toJSON(a) == toJSON(b)
}
