package protocol_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// bkPool is a plain redigo pool on r. Its short read timeout proves that
// waits do not depend on the pool's timeouts.
func bkPool(t testing.TB, r *testenv.Redis) *redis.Pool {
	t.Helper()
	p := &redis.Pool{
		MaxIdle:     32,
		IdleTimeout: time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", r.Addr(),
				redis.DialConnectTimeout(2*time.Second),
				redis.DialReadTimeout(2*time.Second),
				redis.DialWriteTimeout(5*time.Second))
		},
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func bkBackend(t testing.TB, opts protocol.BackendOptions) (*testenv.Redis, *protocol.Backend) {
	t.Helper()
	r := testenv.StartRedis(t)
	return r, protocol.NewBackend(bkPool(t, r), opts)
}

func bkCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// bkKeys returns the top-level keys of a JSON object in wire order.
func bkKeys(t testing.TB, raw []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", raw)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("bad JSON %s: %v", raw, err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("bad JSON %s: %v", raw, err)
		}
	}
	return keys
}

func bkGetRaw(t testing.TB, r *testenv.Redis, key string) []byte {
	t.Helper()
	v, err := redis.Bytes(r.Do("GET", key), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

// bkWaitSubscribed waits until key's channel has n subscribers, so a test
// knows a waiter is past its SUBSCRIBE.
func bkWaitSubscribed(t testing.TB, r *testenv.Redis, key string, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		vals, err := redis.Values(r.Do("PUBSUB", "NUMSUB", key), nil)
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB: %v", err)
		}
		got, _ := redis.Int64(vals[1], nil)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel %s has %d subscribers, want %d", key, got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBackendTaskKeyPrefix(t *testing.T) {
	cases := map[string]string{
		"":        "celery-task-meta-x",
		"tenant":  "tenant_celery-task-meta-x",
		"tenant:": "tenant:celery-task-meta-x",
		"tenant_": "tenant_celery-task-meta-x",
		"tenant-": "tenant-celery-task-meta-x",
		"tenant.": "tenant.celery-task-meta-x",
	}
	for prefix, want := range cases {
		b := protocol.NewBackend(&redis.Pool{}, protocol.BackendOptions{KeyPrefix: prefix})
		if got := b.TaskKey("x"); got != want {
			t.Errorf("prefix %q: key %q, want %q", prefix, got, want)
		}
	}
}

func TestResultMetaErr(t *testing.T) {
	tb := "Traceback ...\nValueError: bad\n"
	cases := []struct {
		meta       protocol.ResultMeta
		wantNil    bool
		wantType   string
		wantModule string
		wantMsg    []any
		wantTB     string
	}{
		{meta: protocol.ResultMeta{Status: protocol.StateSuccess, Result: json.RawMessage(`4`)}, wantNil: true},
		{meta: protocol.ResultMeta{Status: protocol.StateStarted, Result: json.RawMessage(`{"pid":1,"hostname":"h"}`)}, wantNil: true},
		{
			meta:     protocol.ResultMeta{Status: protocol.StateFailure, Result: json.RawMessage(`{"exc_type": "ValueError", "exc_message": ["bad", 2], "exc_module": "builtins"}`), Traceback: &tb},
			wantType: "ValueError", wantModule: "builtins", wantMsg: []any{"bad", json.Number("2")}, wantTB: tb,
		},
		{
			// Old Celery versions stored a plain string message.
			meta:     protocol.ResultMeta{Status: protocol.StateFailure, Result: json.RawMessage(`{"exc_type": "KeyError", "exc_message": "k", "exc_module": "builtins"}`)},
			wantType: "KeyError", wantModule: "builtins", wantMsg: []any{"k"},
		},
		{
			meta:     protocol.ResultMeta{Status: protocol.StateRevoked, Result: json.RawMessage(`{"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}`)},
			wantType: "TaskRevokedError", wantModule: "celery.exceptions", wantMsg: []any{"expired"},
		},
		{
			meta:     protocol.ResultMeta{Status: protocol.StateRevoked, Result: json.RawMessage(`null`)},
			wantType: "TaskRevokedError", wantModule: "celery.exceptions", wantMsg: []any{"revoked"},
		},
		{
			meta:     protocol.ResultMeta{Status: protocol.StateRetry, Result: json.RawMessage(`null`)},
			wantType: "Retry", wantModule: "celery.exceptions", wantMsg: []any{},
		},
		{
			meta:     protocol.ResultMeta{Status: protocol.StateFailure, Result: json.RawMessage(`"weird"`)},
			wantType: "Exception", wantModule: "builtins", wantMsg: []any{"weird"},
		},
	}
	for i, c := range cases {
		err := c.meta.Err()
		if c.wantNil {
			if err != nil {
				t.Errorf("case %d (%s): Err() = %v, want nil", i, c.meta.Status, err)
			}
			continue
		}
		var te *protocol.TaskError
		if !errors.As(err, &te) {
			t.Fatalf("case %d: Err() = %#v, want *TaskError", i, err)
		}
		if te.ExcType != c.wantType || te.ExcModule != c.wantModule || fmt.Sprint(te.ExcMessage) != fmt.Sprint(c.wantMsg) || te.Traceback != c.wantTB {
			t.Errorf("case %d: got %+v, want %s.%s%v tb=%q", i, te, c.wantModule, c.wantType, c.wantMsg, c.wantTB)
		}
	}
}

func TestBackendGetMissingIsPending(t *testing.T) {
	_, b := bkBackend(t, protocol.BackendOptions{})
	meta, err := b.Get(bkCtx(t, 10*time.Second), "nope")
	if err != nil {
		t.Fatal(err)
	}
	if meta.Status != protocol.StatePending || string(meta.Result) != "null" || meta.TaskID != "nope" {
		t.Fatalf("missing result: got %+v, want PENDING/null/nope", meta)
	}
	if meta.Err() != nil {
		t.Fatalf("PENDING has an error: %v", meta.Err())
	}
}

func TestBackendStoreSuccessShape(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{})
	ctx := bkCtx(t, 10*time.Second)
	now := time.Date(2024, 5, 1, 12, 0, 1, 512345000, time.UTC)
	msg := &protocol.Message{ID: "t1", Task: "x.add", Group: "g1", ParentID: "p1"}
	err := b.Store(ctx, protocol.StoreRequest{
		TaskID: "t1", State: protocol.StateSuccess, Now: now, Message: msg,
		Result: map[string]any{"text": "héllo ✓ <&>", "n": json.Number("1180591620717411303424")},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw := bkGetRaw(t, r, "celery-task-meta-t1")
	want := []string{"status", "result", "traceback", "children", "date_done", "group_id", "parent_id", "task_id"}
	if got := bkKeys(t, raw); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("key order %v, want %v\n%s", got, want, raw)
	}
	var v struct {
		Status    string
		Result    map[string]json.RawMessage
		Traceback *string
		Children  []any
		DateDone  string `json:"date_done"`
		GroupID   string `json:"group_id"`
		ParentID  string `json:"parent_id"`
		TaskID    string `json:"task_id"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if v.Status != "SUCCESS" || v.Traceback != nil || v.Children == nil || len(v.Children) != 0 ||
		v.GroupID != "g1" || v.ParentID != "p1" || v.TaskID != "t1" {
		t.Fatalf("bad meta %s", raw)
	}
	if string(v.Result["n"]) != "1180591620717411303424" {
		t.Fatalf("big int not exact: %s", v.Result["n"])
	}
	if !strings.HasPrefix(v.DateDone, "2024-05-01T12:00:01.512345") {
		t.Fatalf("date_done %q, want 2024-05-01T12:00:01.512345[+00:00]", v.DateDone)
	}

	meta, err := b.Get(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Text string
		N    json.Number
	}
	if err := meta.DecodeResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Text != "héllo ✓ <&>" || res.N.String() != "1180591620717411303424" || meta.Err() != nil {
		t.Fatalf("round trip: %+v err=%v", res, meta.Err())
	}
	if ttl := r.Do("TTL", "celery-task-meta-t1").(int64); ttl < 86300 || ttl > 86400 {
		t.Fatalf("TTL %d, want ~86400 (result_expires default)", ttl)
	}
}

func TestBackendStoreFailureShape(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{})
	ctx := bkCtx(t, 10*time.Second)
	te := protocol.NewTaskError("RuntimeError", "builtins", "boom")
	err := b.Store(ctx, protocol.StoreRequest{TaskID: "f1", State: protocol.StateFailure, Result: te, Traceback: "Traceback (most recent call last):\nRuntimeError: boom\n"})
	if err != nil {
		t.Fatal(err)
	}
	raw := bkGetRaw(t, r, "celery-task-meta-f1")
	if got := bkKeys(t, raw); fmt.Sprint(got) != "[status result traceback children date_done task_id]" {
		t.Fatalf("key order %v: %s", got, raw)
	}
	var v struct {
		Result    json.RawMessage
		Traceback string
		DateDone  *string `json:"date_done"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if got := bkKeys(t, v.Result); fmt.Sprint(got) != "[exc_type exc_message exc_module]" {
		t.Fatalf("exception key order %v: %s", got, v.Result)
	}
	if string(v.Result) != `{"exc_type":"RuntimeError","exc_message":["boom"],"exc_module":"builtins"}` {
		t.Fatalf("exception %s", v.Result)
	}
	if !strings.Contains(v.Traceback, "RuntimeError: boom") || v.DateDone == nil {
		t.Fatalf("traceback/date_done missing: %s", raw)
	}
	meta, err := b.Get(ctx, "f1")
	if err != nil {
		t.Fatal(err)
	}
	var got *protocol.TaskError
	if !errors.As(meta.Err(), &got) || got.ExcType != "RuntimeError" || got.Error() != "RuntimeError: boom" || !strings.Contains(got.Traceback, "boom") {
		t.Fatalf("Err() = %#v", meta.Err())
	}

	// A plain Go error is stored as builtins.Exception.
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "f2", State: protocol.StateFailure, Result: errors.New("disk full")}); err != nil {
		t.Fatal(err)
	}
	meta, _ = b.Get(ctx, "f2")
	if !errors.As(meta.Err(), &got) || got.ExcType != "Exception" || got.ExcModule != "builtins" || fmt.Sprint(got.ExcMessage) != "[disk full]" {
		t.Fatalf("plain error stored as %s", meta.Result)
	}

	// FAILURE without an exception is refused, not stored as null.
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "f3", State: protocol.StateFailure}); err == nil {
		t.Fatal("Store(FAILURE, nil) succeeded; Python's get() would raise TypeError on it")
	}
	if n := r.Do("EXISTS", "celery-task-meta-f3").(int64); n != 0 {
		t.Fatal("refused FAILURE was stored")
	}
}

func TestBackendStoreStartedAndProgressShape(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{})
	ctx := bkCtx(t, 10*time.Second)
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "s1", State: protocol.StateStarted, Worker: "celery@gohost"}); err != nil {
		t.Fatal(err)
	}
	raw := bkGetRaw(t, r, "celery-task-meta-s1")
	var v struct {
		Result   json.RawMessage
		DateDone *string `json:"date_done"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if got := bkKeys(t, v.Result); fmt.Sprint(got) != "[pid hostname]" || !strings.Contains(string(v.Result), `"celery@gohost"`) || v.DateDone != nil {
		t.Fatalf("STARTED meta %s", raw)
	}
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "s1", State: protocol.StateProgress, Result: map[string]any{"progress": 0.5, "message": "half"}}); err != nil {
		t.Fatal(err)
	}
	meta, err := b.Get(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Progress json.Number
		Message  string
	}
	if err := meta.DecodeResult(&p); err != nil || meta.Status != protocol.StateProgress || p.Progress.String() != "0.5" || p.Message != "half" || meta.DateDone != nil {
		t.Fatalf("PROGRESS meta %+v %+v %v", meta, p, err)
	}
}

func TestBackendStoreExtendedAndPrefix(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{Extended: true, KeyPrefix: "tenant"})
	ctx := bkCtx(t, 10*time.Second)
	msg := &protocol.Message{ID: "e1", Task: "x.add", Args: []any{json.Number("2"), json.Number("2")}, Retries: 1, RoutingKey: "q1"}
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "e1", State: protocol.StateSuccess, Result: 4, Message: msg, Worker: "celery@gohost"}); err != nil {
		t.Fatal(err)
	}
	raw := bkGetRaw(t, r, "tenant_celery-task-meta-e1")
	want := "[status result traceback children date_done name args kwargs worker retries queue task_id]"
	if got := bkKeys(t, raw); fmt.Sprint(got) != want {
		t.Fatalf("extended key order %v, want %v", got, want)
	}
	meta, err := b.Get(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	if meta.Name != "x.add" || meta.Worker != "celery@gohost" || meta.Queue != "q1" || meta.Retries == nil || *meta.Retries != 1 || len(meta.Args) != 2 || meta.Kwargs == nil {
		t.Fatalf("extended meta %+v", meta)
	}
}

func TestBackendStoreWithoutExpiry(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{Expires: -1})
	if err := b.Store(bkCtx(t, 10*time.Second), protocol.StoreRequest{TaskID: "n1", State: protocol.StateSuccess, Result: nil}); err != nil {
		t.Fatal(err)
	}
	if ttl := r.Do("TTL", "celery-task-meta-n1").(int64); ttl != -1 {
		t.Fatalf("TTL %d, want -1 (no expiry)", ttl)
	}
	b2 := protocol.NewBackend(bkPool(t, r), protocol.BackendOptions{Expires: 90 * time.Second})
	if err := b2.Store(bkCtx(t, 10*time.Second), protocol.StoreRequest{TaskID: "n2", State: protocol.StateSuccess}); err != nil {
		t.Fatal(err)
	}
	if ttl := r.Do("TTL", "celery-task-meta-n2").(int64); ttl < 80 || ttl > 90 {
		t.Fatalf("TTL %d, want ~90", ttl)
	}
}

func TestBackendStoreNeverOverwritesSuccess(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{})
	ctx := bkCtx(t, 10*time.Second)
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "k1", State: protocol.StateSuccess, Result: "first"}); err != nil {
		t.Fatal(err)
	}
	for _, st := range []protocol.State{protocol.StateFailure, protocol.StateStarted, protocol.StateSuccess, protocol.StateRevoked} {
		if err := b.Store(ctx, protocol.StoreRequest{TaskID: "k1", State: st, Result: protocol.NewTaskError("E", "builtins", "late")}); err != nil {
			t.Fatal(err)
		}
	}
	meta, err := b.Get(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if meta.Status != protocol.StateSuccess || string(meta.Result) != `"first"` {
		t.Fatalf("stored SUCCESS was overwritten: %+v", meta)
	}

	// A SUCCESS written by another client with status not first (the
	// script's decode fallback) is kept as well.
	r.Do("SET", "celery-task-meta-k2", `{"result": 1, "task_id": "k2", "status": "SUCCESS"}`)
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "k2", State: protocol.StateFailure, Result: errors.New("late")}); err != nil {
		t.Fatal(err)
	}
	if raw := bkGetRaw(t, r, "celery-task-meta-k2"); !strings.Contains(string(raw), `"result": 1`) {
		t.Fatalf("reordered SUCCESS overwritten: %s", raw)
	}

	// Non-final states are overwritten.
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "k3", State: protocol.StateStarted}); err != nil {
		t.Fatal(err)
	}
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "k3", State: protocol.StateFailure, Result: errors.New("x")}); err != nil {
		t.Fatal(err)
	}
	if meta, _ := b.Get(ctx, "k3"); meta.Status != protocol.StateFailure {
		t.Fatalf("STARTED not replaced by FAILURE: %s", meta.Status)
	}
}

func TestBackendStorePublishesSameBytes(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{})
	c := r.Conn()
	defer c.Close()
	psc := redis.PubSubConn{Conn: c}
	if err := psc.Subscribe("celery-task-meta-p1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := psc.ReceiveWithTimeout(5 * time.Second).(redis.Subscription); !ok {
		t.Fatal("no subscribe confirmation")
	}
	if err := b.Store(bkCtx(t, 10*time.Second), protocol.StoreRequest{TaskID: "p1", State: protocol.StateSuccess, Result: []any{1, "a"}}); err != nil {
		t.Fatal(err)
	}
	msg, ok := psc.ReceiveWithTimeout(5 * time.Second).(redis.Message)
	if !ok {
		t.Fatal("Store did not PUBLISH on the key's channel")
	}
	if stored := bkGetRaw(t, r, "celery-task-meta-p1"); !bytes.Equal(msg.Data, stored) {
		t.Fatalf("published %s, stored %s", msg.Data, stored)
	}
}

func TestBackendForget(t *testing.T) {
	_, b := bkBackend(t, protocol.BackendOptions{})
	ctx := bkCtx(t, 10*time.Second)
	if err := b.Store(ctx, protocol.StoreRequest{TaskID: "d1", State: protocol.StateSuccess, Result: 1}); err != nil {
		t.Fatal(err)
	}
	if err := b.Forget(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if meta, _ := b.Get(ctx, "d1"); meta.Status != protocol.StatePending {
		t.Fatalf("forgotten result is %s", meta.Status)
	}
}

func TestBackendCorruptResult(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{})
	r.Do("SET", "celery-task-meta-bad", "not json")
	ctx := bkCtx(t, 10*time.Second)
	if _, err := b.Get(ctx, "bad"); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("Get of garbage: %v", err)
	}
	// A wait on it fails at once instead of hanging.
	if _, err := b.Wait(ctx, "bad"); err == nil || ctx.Err() != nil {
		t.Fatalf("Wait of garbage: %v (ctx %v)", err, ctx.Err())
	}
}

// waiter abstracts Backend and ResultListener for the shared wait tests.
type bkWaiter interface {
	Wait(ctx context.Context, taskID string) (*protocol.ResultMeta, error)
	Watch(ctx context.Context, taskID string, fn func(*protocol.ResultMeta)) (*protocol.ResultMeta, error)
}

// bkWaiters runs fn against Backend.Wait and a ResultListener.
func bkWaiters(t *testing.T, fn func(t *testing.T, r *testenv.Redis, b *protocol.Backend, w bkWaiter)) {
	t.Run("Backend", func(t *testing.T) {
		r, b := bkBackend(t, protocol.BackendOptions{})
		fn(t, r, b, b)
	})
	t.Run("Listener", func(t *testing.T) {
		r, b := bkBackend(t, protocol.BackendOptions{})
		l := bkListener(t, b)
		fn(t, r, b, l)
	})
}

// bkListener runs a listener for the test's lifetime.
func bkListener(t testing.TB, b *protocol.Backend) *protocol.ResultListener {
	l := b.NewListener()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("listener Run: %v", err)
		}
	})
	return l
}

type bkWaitResult struct {
	meta *protocol.ResultMeta
	err  error
}

func bkWaitAsync(ctx context.Context, w bkWaiter, id string, fn func(*protocol.ResultMeta)) <-chan bkWaitResult {
	ch := make(chan bkWaitResult, 1)
	go func() {
		meta, err := w.Watch(ctx, id, fn)
		ch <- bkWaitResult{meta, err}
	}()
	return ch
}

func bkRecv(t testing.TB, ch <-chan bkWaitResult) bkWaitResult {
	t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(30 * time.Second):
		t.Fatal("wait did not return within 30s")
		return bkWaitResult{}
	}
}

func TestBackendWaitAlreadyStored(t *testing.T) {
	bkWaiters(t, func(t *testing.T, r *testenv.Redis, b *protocol.Backend, w bkWaiter) {
		ctx := bkCtx(t, 30*time.Second)
		if err := b.Store(ctx, protocol.StoreRequest{TaskID: "w1", State: protocol.StateSuccess, Result: 42}); err != nil {
			t.Fatal(err)
		}
		meta, err := w.Wait(ctx, "w1")
		if err != nil || meta.Status != protocol.StateSuccess || string(meta.Result) != "42" {
			t.Fatalf("Wait = %+v, %v", meta, err)
		}
	})
}

func TestBackendWaitStoredLater(t *testing.T) {
	bkWaiters(t, func(t *testing.T, r *testenv.Redis, b *protocol.Backend, w bkWaiter) {
		ctx := bkCtx(t, 30*time.Second)
		ch := bkWaitAsync(ctx, w, "w2", nil)
		bkWaitSubscribed(t, r, "celery-task-meta-w2", 1)
		if err := b.Store(ctx, protocol.StoreRequest{TaskID: "w2", State: protocol.StateFailure, Result: protocol.NewTaskError("ValueError", "builtins", "late")}); err != nil {
			t.Fatal(err)
		}
		res := bkRecv(t, ch)
		var te *protocol.TaskError
		if res.err != nil || res.meta.Status != protocol.StateFailure || !errors.As(res.meta.Err(), &te) || te.ExcType != "ValueError" {
			t.Fatalf("Wait = %+v, %v", res.meta, res.err)
		}
		// The wait's subscription is gone once it returned.
		bkWaitSubscribed(t, r, "celery-task-meta-w2", 0)
	})
}

func TestBackendWaitHonoursCancel(t *testing.T) {
	bkWaiters(t, func(t *testing.T, r *testenv.Redis, b *protocol.Backend, w bkWaiter) {
		ctx, cancel := context.WithCancel(context.Background())
		ch := bkWaitAsync(ctx, w, "w3", nil)
		bkWaitSubscribed(t, r, "celery-task-meta-w3", 1)
		cancel()
		res := bkRecv(t, ch)
		if !errors.Is(res.err, context.Canceled) {
			t.Fatalf("cancelled Wait = %+v, %v; want context.Canceled", res.meta, res.err)
		}
		bkWaitSubscribed(t, r, "celery-task-meta-w3", 0)

		// A deadline ends it as well.
		dctx, dcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer dcancel()
		if _, err := w.Wait(dctx, "w3"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait past deadline: %v", err)
		}
	})
}

func TestBackendWatchSeesStartedThenSuccess(t *testing.T) {
	bkWaiters(t, func(t *testing.T, r *testenv.Redis, b *protocol.Backend, w bkWaiter) {
		ctx := bkCtx(t, 30*time.Second)
		var mu sync.Mutex
		var seen []protocol.State
		got := make(chan protocol.State, 10)
		ch := bkWaitAsync(ctx, w, "w4", func(m *protocol.ResultMeta) {
			mu.Lock()
			seen = append(seen, m.Status)
			mu.Unlock()
			got <- m.Status
		})
		bkWaitSubscribed(t, r, "celery-task-meta-w4", 1)
		steps := []protocol.StoreRequest{
			{TaskID: "w4", State: protocol.StateStarted, Worker: "celery@gohost"},
			{TaskID: "w4", State: protocol.StateProgress, Result: map[string]any{"progress": 0.5}},
		}
		for _, s := range steps {
			if err := b.Store(ctx, s); err != nil {
				t.Fatal(err)
			}
			// Wait for each state to be seen, so that none is coalesced.
			select {
			case st := <-got:
				if st != s.State {
					t.Fatalf("Watch saw %s, want %s", st, s.State)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("Watch did not report %s", s.State)
			}
		}
		if err := b.Store(ctx, protocol.StoreRequest{TaskID: "w4", State: protocol.StateSuccess, Result: "done"}); err != nil {
			t.Fatal(err)
		}
		res := bkRecv(t, ch)
		if res.err != nil || res.meta.Status != protocol.StateSuccess || string(res.meta.Result) != `"done"` {
			t.Fatalf("Watch = %+v, %v", res.meta, res.err)
		}
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(seen) != "[STARTED PROGRESS]" {
			t.Fatalf("intermediate states %v, want [STARTED PROGRESS]", seen)
		}
	})
}

func TestBackendWaitSurvivesRedisRestart(t *testing.T) {
	bkWaiters(t, func(t *testing.T, r *testenv.Redis, b *protocol.Backend, w bkWaiter) {
		ctx := bkCtx(t, 60*time.Second)
		ch := bkWaitAsync(ctx, w, "w5", nil)
		bkWaitSubscribed(t, r, "celery-task-meta-w5", 1)
		r.Restart()
		// The result lands while the waiter may still be reconnecting: the
		// read after resubscribing must find it.
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := b.Store(ctx, protocol.StoreRequest{TaskID: "w5", State: protocol.StateSuccess, Result: "after restart"})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Store after restart: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		res := bkRecv(t, ch)
		if res.err != nil || res.meta.Status != protocol.StateSuccess || string(res.meta.Result) != `"after restart"` {
			t.Fatalf("Wait across restart = %+v, %v", res.meta, res.err)
		}

		// And a wait that began before the restart sees a publish made after
		// it resubscribed.
		ch = bkWaitAsync(ctx, w, "w6", nil)
		bkWaitSubscribed(t, r, "celery-task-meta-w6", 1)
		r.Restart()
		bkWaitSubscribed(t, r, "celery-task-meta-w6", 1)
		if err := b.Store(ctx, protocol.StoreRequest{TaskID: "w6", State: protocol.StateSuccess, Result: 6}); err != nil {
			t.Fatal(err)
		}
		if res := bkRecv(t, ch); res.err != nil || string(res.meta.Result) != "6" {
			t.Fatalf("Wait after resubscribe = %+v, %v", res.meta, res.err)
		}
	})
}

func TestResultListenerManyWaitersOneConnection(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{})
	l := bkListener(t, b)
	ctx := bkCtx(t, 60*time.Second)
	const n = 200
	chans := make([]<-chan bkWaitResult, n)
	for i := range n {
		chans[i] = bkWaitAsync(ctx, l, fmt.Sprintf("m%d", i), nil)
	}
	// Two waiters on one task share its subscription.
	dup := bkWaitAsync(ctx, l, "m0", nil)
	for i := range n {
		bkWaitSubscribed(t, r, fmt.Sprintf("celery-task-meta-m%d", i), 1)
	}
	if got := bkPubsubClients(t, r); got != 1 {
		t.Fatalf("%d pub/sub connections for %d waits, want 1", got, n+1)
	}
	for i := range n {
		if err := b.Store(ctx, protocol.StoreRequest{TaskID: fmt.Sprintf("m%d", i), State: protocol.StateSuccess, Result: i}); err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range chans {
		res := bkRecv(t, ch)
		if res.err != nil || string(res.meta.Result) != fmt.Sprint(i) {
			t.Fatalf("wait %d = %+v, %v", i, res.meta, res.err)
		}
	}
	if res := bkRecv(t, dup); res.err != nil || string(res.meta.Result) != "0" {
		t.Fatalf("second wait on m0 = %+v, %v", res.meta, res.err)
	}
	// Every subscription was dropped.
	deadline := time.Now().Add(10 * time.Second)
	for {
		chs, _ := redis.Values(r.Do("PUBSUB", "CHANNELS", "celery-task-meta-*"), nil)
		if len(chs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d channels still subscribed after all waits returned", len(chs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bkPubsubClients counts connections in pub/sub mode.
func bkPubsubClients(t testing.TB, r *testenv.Redis) int {
	list, err := redis.String(r.Do("CLIENT", "LIST"), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " sub=") && !strings.Contains(line, " sub=0 ") {
			n++
		}
	}
	return n
}

// A wait that starts while an earlier wait on the same task is unsubscribing
// must not mistake the old subscription's confirmation for its own.
func TestResultListenerResubscribeChurn(t *testing.T) {
	r, b := bkBackend(t, protocol.BackendOptions{})
	l := bkListener(t, b)
	ctx := bkCtx(t, 60*time.Second)
	for round := range 20 {
		id := fmt.Sprintf("c%d", round)
		for range 20 {
			short, cancel := context.WithCancel(ctx)
			ch := bkWaitAsync(short, l, id, nil)
			cancel()
			<-ch
		}
		ch := bkWaitAsync(ctx, l, id, nil)
		bkWaitSubscribed(t, r, "celery-task-meta-"+id, 1)
		if err := b.Store(ctx, protocol.StoreRequest{TaskID: id, State: protocol.StateSuccess, Result: round}); err != nil {
			t.Fatal(err)
		}
		if res := bkRecv(t, ch); res.err != nil || string(res.meta.Result) != fmt.Sprint(round) {
			t.Fatalf("round %d: %+v, %v", round, res.meta, res.err)
		}
	}
}

func TestResultListenerStopped(t *testing.T) {
	_, b := bkBackend(t, protocol.BackendOptions{})
	l := b.NewListener()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	waitCtx := bkCtx(t, 30*time.Second)
	ch := bkWaitAsync(waitCtx, l, "x", nil)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if res := bkRecv(t, ch); !errors.Is(res.err, protocol.ErrListenerClosed) {
		t.Fatalf("wait on a stopped listener: %v", res.err)
	}
	if _, err := l.Wait(waitCtx, "y"); !errors.Is(err, protocol.ErrListenerClosed) {
		t.Fatalf("new wait on a stopped listener: %v", err)
	}
	if err := l.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}
