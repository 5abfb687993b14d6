package protocol

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol/internal/kombujson"
)

const (
	// defaultResultExpires is Celery's result_expires default (1 day).
	defaultResultExpires = 24 * time.Hour
	// resultMaxSize is RedisBackend._MAX_STR_VALUE_SIZE: Redis refuses
	// larger strings, and Python refuses to store them.
	resultMaxSize = 512 * 1024 * 1024

	// A subscribed connection carries no traffic while it waits, so a dead
	// peer (NAT drop, failover) would go unnoticed: ping it, and treat a
	// silence much longer than the ping interval as a lost connection.
	resultPingInterval = 15 * time.Second
	resultReadTimeout  = 2*resultPingInterval + 5*time.Second

	resultBackoffMin = 50 * time.Millisecond
	resultBackoffMax = 5 * time.Second
)

// BackendOptions configure the Redis result backend. Every participant on
// one Redis must use the same KeyPrefix.
type BackendOptions struct {
	// Expires is result_expires: the TTL of stored results. Zero means the
	// default (24h); a negative value stores results without expiry.
	Expires time.Duration
	// KeyPrefix is result_backend_transport_options' global_keyprefix (Celery
	// 5.3+). As in Celery, "_" is appended unless it ends in one of ":_-.".
	KeyPrefix string
	// Extended writes the result_extended fields (name, args, kwargs,
	// worker, retries, queue) when StoreRequest.Message is set.
	Extended bool
	// Logger receives reconnect warnings; the zero value logs nothing.
	Logger zerolog.Logger
}

// Backend is Celery's Redis result backend: celery-task-meta-<id> keys,
// written with SETEX and PUBLISHed on a channel of the same name.
type Backend struct {
	pool     *redis.Pool
	expires  time.Duration // 0: no expiry
	prefix   string
	extended bool
	log      zerolog.Logger
}

// NewBackend wraps pool. It starts no goroutines.
func NewBackend(pool *redis.Pool, opts BackendOptions) *Backend {
	expires := opts.Expires
	switch {
	case expires == 0:
		expires = defaultResultExpires
	case expires < 0:
		expires = 0
	}
	return &Backend{
		pool:     pool,
		expires:  expires,
		prefix:   resultKeyPrefix(opts.KeyPrefix),
		extended: opts.Extended,
		log:      opts.Logger,
	}
}

// resultKeyPrefix applies Celery's global_keyprefix rule
// (BaseKeyValueStoreBackend._add_global_keyprefix).
func resultKeyPrefix(p string) string {
	if p != "" && !strings.ContainsAny(p[len(p)-1:], ":_-.") {
		p += "_"
	}
	return p
}

// taskKey is the Redis key (and pub/sub channel) of taskID's result.
func (b *Backend) taskKey(taskID string) string {
	return b.prefix + taskMetaKey(taskID)
}

// Store writes celery-task-meta-<id> with SETEX and PUBLISHes it, atomically,
// and never overwrites a stored SUCCESS (as Celery does; such a Store is a
// silent no-op).
//
// Result is encoded by state: for FAILURE, RETRY and REVOKED a *TaskError
// (or any error, stored as builtins.Exception) becomes Celery's
// {"exc_type", "exc_message", "exc_module"}; a nil STARTED result becomes
// {"pid", "hostname"} with this process's pid and req.Worker; anything else
// is encoded as kombu JSON.
func (b *Backend) Store(ctx context.Context, req StoreRequest) error {
	if req.TaskID == "" {
		return errors.New("protocol: Store needs a task id")
	}
	if req.State == "" {
		return fmt.Errorf("protocol: Store of task %s needs a state", req.TaskID)
	}
	payload, err := b.encodeMeta(req)
	if err != nil {
		return err
	}
	if len(payload) > resultMaxSize {
		return fmt.Errorf("protocol: result of task %s is %d bytes, over Redis' 512 MiB string limit", req.TaskID, len(payload))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, err := b.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("protocol: store result of task %s: %w", req.TaskID, err)
	}
	defer conn.Close()
	ttl := int64(0)
	if b.expires > 0 {
		ttl = int64(math.Ceil(b.expires.Seconds()))
	}
	stored, err := redis.Int(resultStoreScript.DoContext(ctx, conn, b.taskKey(req.TaskID), payload, ttl))
	if err != nil {
		return fmt.Errorf("protocol: store result of task %s: %w", req.TaskID, err)
	}
	if stored == 0 {
		b.log.Debug().Str("task_id", req.TaskID).Str("state", string(req.State)).
			Msg("result not stored: the task already has a SUCCESS result")
	}
	return nil
}

// EncodeMeta returns the meta JSON Store would write for req, for a
// writer that hands it to another process (StoreRequest.Encoded).
func (b *Backend) EncodeMeta(req StoreRequest) ([]byte, error) { return b.encodeMeta(req) }

// encodeMeta builds the meta JSON with _get_result_meta's key order:
// status, result, traceback, children, date_done, [group_id], [parent_id],
// [extended fields], task_id.
func (b *Backend) encodeMeta(req StoreRequest) ([]byte, error) {
	if req.Encoded != nil {
		return req.Encoded, nil
	}
	result, tb, err := encodeResultValue(req)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(result) + len(tb) + 256)
	field := func(name string, raw []byte) {
		if buf.Len() == 0 {
			buf.WriteByte('{')
		} else {
			buf.WriteByte(',')
		}
		buf.WriteByte('"')
		buf.WriteString(name)
		buf.WriteString(`":`)
		buf.Write(raw)
	}
	field("status", resultJSONString(string(req.State)))
	field("result", result)
	if tb == "" {
		field("traceback", []byte("null"))
	} else {
		field("traceback", resultJSONString(tb))
	}
	children := []byte("[]")
	if len(req.Children) > 0 {
		if children, err = resultMarshal(req.Children); err != nil {
			return nil, fmt.Errorf("protocol: encode children of task %s: %w", req.TaskID, err)
		}
	}
	field("children", children)
	if req.State.Ready() {
		now := req.Now
		if now.IsZero() {
			now = time.Now()
		}
		field("date_done", resultJSONString(pyfmt.ISOFormat(now.UTC())))
	} else {
		field("date_done", []byte("null"))
	}
	if m := req.Message; m != nil {
		if m.Group != "" {
			field("group_id", resultJSONString(m.Group))
		}
		if m.ParentID != "" {
			field("parent_id", resultJSONString(m.ParentID))
		}
		if b.extended {
			args, kwargs := m.Args, m.Kwargs
			if args == nil {
				args = []any{}
			}
			if kwargs == nil {
				kwargs = map[string]any{}
			}
			rawArgs, err := resultMarshal(args)
			if err != nil {
				return nil, fmt.Errorf("protocol: encode args of task %s: %w", req.TaskID, err)
			}
			rawKwargs, err := resultMarshal(kwargs)
			if err != nil {
				return nil, fmt.Errorf("protocol: encode kwargs of task %s: %w", req.TaskID, err)
			}
			field("name", resultJSONString(m.Task))
			field("args", rawArgs)
			field("kwargs", rawKwargs)
			field("worker", resultJSONString(req.Worker))
			field("retries", []byte(fmt.Sprint(m.Retries)))
			field("queue", resultJSONString(m.RoutingKey))
		}
	}
	field("task_id", resultJSONString(req.TaskID))
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// encodeResultValue returns the "result" JSON and the traceback for req.
func encodeResultValue(req StoreRequest) ([]byte, string, error) {
	tb := req.Traceback
	exceptionState := req.State == StateFailure || req.State == StateRetry || req.State == StateRevoked
	var te *TaskError
	switch v := req.Result.(type) {
	case *TaskError:
		te = v
	case error:
		if !errors.As(v, &te) && exceptionState {
			// A plain Go error: builtins.Exception is importable everywhere,
			// so Python's get() raises Exception(<message>).
			te = NewTaskError("Exception", "builtins", v.Error())
		}
	case nil:
		switch req.State {
		case StateFailure:
			return nil, "", fmt.Errorf("protocol: FAILURE of task %s needs a *TaskError or error result; Python's get() cannot raise a null exception", req.TaskID)
		case StateRevoked:
			te = NewTaskError("TaskRevokedError", "celery.exceptions", "revoked")
		case StateStarted:
			raw, err := resultMarshal(startedResultValue{PID: os.Getpid(), Hostname: req.Worker})
			return raw, tb, err
		}
	}
	if te != nil {
		if tb == "" {
			tb = te.Traceback
		}
		raw, err := encodeTaskError(te)
		if err != nil {
			return nil, "", fmt.Errorf("protocol: encode exception of task %s: %w", req.TaskID, err)
		}
		return raw, tb, nil
	}
	raw, err := resultMarshal(req.Result)
	if err != nil {
		return nil, "", fmt.Errorf("protocol: encode result of task %s: %w", req.TaskID, err)
	}
	return raw, tb, nil
}

// startedResultValue is what Celery stores with STARTED (task_track_started).
type startedResultValue struct {
	PID      int    `json:"pid"`
	Hostname string `json:"hostname"`
}

// encodeTaskError writes prepare_exception's dict in its key order.
func encodeTaskError(e *TaskError) ([]byte, error) {
	args := e.ExcMessage
	if args == nil {
		args = []any{}
	}
	rawArgs, err := resultMarshal(args)
	if err != nil {
		return nil, err
	}
	module := []byte("null")
	if e.ExcModule != "" {
		module = resultJSONString(e.ExcModule)
	}
	var buf bytes.Buffer
	buf.WriteString(`{"exc_type":`)
	buf.Write(resultJSONString(e.ExcType))
	buf.WriteString(`,"exc_message":`)
	buf.Write(rawArgs)
	buf.WriteString(`,"exc_module":`)
	buf.Write(module)
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// EncodeResult encodes a task's return value as the result backend stores
// it, in kombu's JSON: map keys sorted, time.Time as Python's isoformat,
// json.Number verbatim, canvas Signatures as Celery's dicts. A worker
// encodes before it stores, so that a value JSON cannot carry (NaN, a
// cycle, a bare {"__type__", "__value__"} object that kombu would take for
// a type envelope) fails the task with kombu's EncodeError; it then stores
// the bytes as a json.RawMessage StoreRequest.Result.
func EncodeResult(v any) ([]byte, error) { return marshalJSON(v) }

// DecodeJSON reads JSON into the values encoding/json with UseNumber
// gives an `any` (maps, slices, strings, json.Number, bools, nil), with
// the same acceptance, in one scan: what Python's json.loads sees of an
// encoded result, for reprs and callbacks.
func DecodeJSON(data []byte) (any, error) { return kombujson.Parse(data) }

// resultMarshal encodes v as kombu JSON without the trailing newline an
// encoder may leave.
func resultMarshal(v any) ([]byte, error) {
	raw, err := marshalJSON(v)
	if err != nil {
		return nil, err
	}
	return bytes.TrimSpace(raw), nil
}

// resultJSONString quotes s; strings always encode.
func resultJSONString(s string) []byte {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if plain { // what encoding/json writes for it, in one allocation
		b := make([]byte, 0, len(s)+2)
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// Get reads the current meta; a missing key is PENDING (Celery never stores
// PENDING: it means "unknown").
func (b *Backend) Get(ctx context.Context, taskID string) (*ResultMeta, error) {
	meta, _, err := b.get(ctx, taskID)
	return meta, err
}

// get returns the meta and the raw stored bytes (nil when missing).
func (b *Backend) get(ctx context.Context, taskID string) (*ResultMeta, []byte, error) {
	conn, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("protocol: read result of task %s: %w", taskID, err)
	}
	defer conn.Close()
	raw, err := redis.Bytes(redis.DoContext(conn, ctx, "GET", b.taskKey(taskID)))
	if errors.Is(err, redis.ErrNil) {
		return pendingResultMeta(taskID), nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("protocol: read result of task %s: %w", taskID, err)
	}
	meta, err := parseResultMeta(taskID, raw)
	if err != nil {
		return nil, nil, err
	}
	return meta, raw, nil
}

// forget deletes the stored result.
func (b *Backend) forget(ctx context.Context, taskID string) error {
	conn, err := b.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("protocol: forget result of task %s: %w", taskID, err)
	}
	defer conn.Close()
	if _, err := redis.DoContext(conn, ctx, "DEL", b.taskKey(taskID)); err != nil {
		return fmt.Errorf("protocol: forget result of task %s: %w", taskID, err)
	}
	return nil
}

func pendingResultMeta(taskID string) *ResultMeta {
	return &ResultMeta{Status: StatePending, Result: json.RawMessage("null"), Children: []any{}, TaskID: taskID}
}

// parseResultMeta decodes a stored or published meta. Result stays raw JSON, so
// big integers and kombu type envelopes survive until DecodeResult.
func parseResultMeta(taskID string, raw []byte) (*ResultMeta, error) {
	var m ResultMeta
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, &badResultMetaError{fmt.Sprintf("protocol: result of task %s is not a Celery result meta (%v): %.200q", taskID, err, raw)}
	}
	if m.Status == "" {
		return nil, &badResultMetaError{fmt.Sprintf("protocol: result of task %s has no status: %.200q", taskID, raw)}
	}
	if len(m.Result) == 0 {
		m.Result = json.RawMessage("null")
	}
	if m.TaskID == "" {
		m.TaskID = taskID
	}
	return &m, nil
}

// DecodeResult unmarshals meta.Result into v (kombu JSON rules: numbers as
// json.Number, type envelopes as Go values).
func (m *ResultMeta) DecodeResult(v any) error {
	raw := m.Result
	if len(raw) == 0 {
		raw = json.RawMessage("null")
	}
	if err := kombujson.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("protocol: decode result of task %s: %w", m.TaskID, err)
	}
	return nil
}

// Err returns the *TaskError for FAILURE/REVOKED/RETRY metas, else nil. The
// TaskError's Traceback is the stored traceback.
func (m *ResultMeta) Err() error {
	switch m.Status {
	case StateFailure, StateRevoked, StateRetry:
	default:
		return nil
	}
	te := decodeTaskError(m.Status, m.Result)
	if m.Traceback != nil {
		te.Traceback = *m.Traceback
	}
	return te
}

// decodeTaskError reads exception_to_python's input leniently: any
// exc_message (list, string, missing) and even a non-dict result still give
// an error that says what was stored.
func decodeTaskError(state State, raw json.RawMessage) *TaskError {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if len(raw) == 0 || dec.Decode(&v) != nil || v == nil {
		switch state {
		case StateRetry:
			return &TaskError{ExcType: "Retry", ExcModule: "celery.exceptions", ExcMessage: []any{}}
		case StateRevoked:
			return NewTaskError("TaskRevokedError", "celery.exceptions", "revoked")
		default:
			return &TaskError{ExcType: "Exception", ExcModule: "builtins",
				ExcMessage: []any{"task failed without exception details"}}
		}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return &TaskError{ExcType: "Exception", ExcModule: "builtins", ExcMessage: []any{v}}
	}
	te := &TaskError{ExcMessage: []any{}}
	te.ExcType, _ = obj["exc_type"].(string)
	if te.ExcType == "" {
		te.ExcType = "Exception"
	}
	te.ExcModule, _ = obj["exc_module"].(string)
	switch msg := obj["exc_message"].(type) {
	case nil:
	case []any:
		te.ExcMessage = msg
	default:
		te.ExcMessage = []any{msg}
	}
	return te
}

// wait subscribes to the task's channel, then reads the key, and returns as
// soon as the state is ready (no polling). It survives reconnects. It holds
// one connection for the whole wait; for many concurrent waits use a
// ResultListener.
func (b *Backend) wait(ctx context.Context, taskID string) (*ResultMeta, error) {
	return b.watch(ctx, taskID, nil)
}

// watch is like wait but also delivers every intermediate state (STARTED,
// PROGRESS, RETRY, ...) to fn. It returns the ready meta. fn runs on the
// calling goroutine and sees each distinct stored value once.
func (b *Backend) watch(ctx context.Context, taskID string, fn func(*ResultMeta)) (*ResultMeta, error) {
	w := resultWatchState{taskID: taskID, fn: fn}
	backoff := newResultBackoff()
	for {
		meta, subscribed, err := b.watchOnce(ctx, &w)
		if meta != nil {
			return meta, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		var bad *badResultMetaError
		if errors.As(err, &bad) {
			return nil, err
		}
		if subscribed {
			backoff.reset()
		}
		d := backoff.next()
		b.log.Warn().Err(err).Str("task_id", taskID).Dur("retry_in", d).
			Msg("result wait lost its redis connection; resubscribing")
		if !resultSleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

// badResultMetaError is a stored or published value that is not a result meta:
// retrying cannot help.
type badResultMetaError struct{ msg string }

func (e *badResultMetaError) Error() string { return e.msg }

// resultWatchState is what a Watch remembers across reconnects.
type resultWatchState struct {
	taskID string
	fn     func(*ResultMeta)
	last   []byte // the last value handed to fn
}

// see handles one observed value; it returns the meta when it is ready.
func (w *resultWatchState) see(meta *ResultMeta, raw []byte) *ResultMeta {
	if meta.Status.Ready() {
		return meta
	}
	if w.fn != nil && raw != nil && !bytes.Equal(raw, w.last) {
		w.last = raw
		w.fn(meta)
	}
	return nil
}

// watchOnce runs one subscription: SUBSCRIBE, wait for the confirmation,
// GET, then read messages. It returns the ready meta, or the error that
// ended the connection and whether the subscription had been confirmed.
func (b *Backend) watchOnce(ctx context.Context, w *resultWatchState) (*ResultMeta, bool, error) {
	conn, err := b.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	// Closing the connection is what interrupts a blocked Receive.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	key := b.taskKey(w.taskID)
	psc := redis.PubSubConn{Conn: conn}
	if err := psc.Subscribe(key); err != nil {
		return nil, false, err
	}
	pinger := startResultKeepAlive(psc, nil)
	defer pinger.stop()

	subscribed := false
	for {
		switch v := psc.ReceiveWithTimeout(resultReadTimeout).(type) {
		case redis.Subscription:
			if v.Kind != "subscribe" || v.Channel != key || subscribed {
				continue
			}
			subscribed = true
			// Subscribed first, read second: a value stored before now is
			// in the key, anything later arrives as a message.
			meta, raw, err := b.get(ctx, w.taskID)
			if err != nil {
				return nil, true, err
			}
			if ready := w.see(meta, raw); ready != nil {
				return ready, true, nil
			}
		case redis.Message:
			meta, err := parseResultMeta(w.taskID, v.Data)
			if err != nil {
				b.log.Warn().Err(err).Str("task_id", w.taskID).Msg("ignoring an undecodable published result")
				continue
			}
			if ready := w.see(meta, v.Data); ready != nil {
				return ready, true, nil
			}
		case redis.Pong:
		case error:
			return nil, subscribed, v
		}
	}
}

// resultKeepAlive PINGs a subscribed connection so that a dead peer shows up as a
// read error instead of an endless wait.
type resultKeepAlive struct {
	quit chan struct{}
	done chan struct{}
}

// startResultKeepAlive pings psc until stop. mu, when set, serialises the PINGs
// with the connection's other writers (redigo allows one writer at a time).
func startResultKeepAlive(psc redis.PubSubConn, mu sync.Locker) *resultKeepAlive {
	k := &resultKeepAlive{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(k.done)
		t := time.NewTicker(resultPingInterval)
		defer t.Stop()
		for {
			select {
			case <-k.quit:
				return
			case <-t.C:
				if mu != nil {
					mu.Lock()
				}
				err := psc.Ping("")
				if mu != nil {
					mu.Unlock()
				}
				if err != nil {
					// The reader sees the broken connection too.
					return
				}
			}
		}
	}()
	return k
}

func (k *resultKeepAlive) stop() {
	close(k.quit)
	<-k.done
}

// dial opens a connection outside the pool: a subscribed connection must
// not go back to the pool, and closing it is how a wait is interrupted.
func (b *Backend) dial(ctx context.Context) (redis.Conn, error) {
	switch {
	case b.pool.DialContext != nil:
		return b.pool.DialContext(ctx)
	case b.pool.Dial != nil:
		return b.pool.Dial()
	default:
		return nil, errors.New("protocol: the redis pool has no Dial function; create it with NewPool")
	}
}

// backoff is a capped exponential delay.
type resultBackoff struct{ d time.Duration }

func newResultBackoff() *resultBackoff { return &resultBackoff{} }

func (b *resultBackoff) reset() { b.d = 0 }

func (b *resultBackoff) next() time.Duration {
	if b.d == 0 {
		b.d = resultBackoffMin
	} else {
		b.d = min(2*b.d, resultBackoffMax)
	}
	return b.d
}

// resultSleep sleeps for d unless ctx ends first; it reports whether it slept.
func resultSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ErrListenerClosed is returned by waits through a ResultListener
// (AsyncResult.Wait of a Client.WithListener) once its Run has returned.
var ErrListenerClosed = errors.New("protocol: result listener is not running (its Run returned); start Run before waiting")

// ResultListener waits for many results over one subscribed connection, as
// Python's ResultConsumer does: each waited-on task adds a SUBSCRIBE to the
// shared connection and its waiters are woken by the published values. Use
// it where many tasks are awaited at once (a gateway), through
// Client.WithListener; a plain Client holds a connection per wait.
//
// The caller owns the listener's goroutine: run Run(ctx) and cancel ctx to
// stop it. Waits may start before Run does; they block until it is
// connected.
type ResultListener struct {
	b *Backend

	mu      sync.Mutex
	conn    *redis.PubSubConn // nil while disconnected; writes under mu
	chans   map[string]*listenChan
	counts  map[string]*listenSubCount // this connection's SUBSCRIBE bookkeeping
	running bool

	done chan struct{} // closed when Run returns
}

// listenChan is one subscribed task key and its waiters.
type listenChan struct {
	waiters map[*listenWaiter]struct{}
	// needAck is how many subscribe confirmations for the key this
	// connection must have seen before the subscription is live; it tells
	// this chan's SUBSCRIBE from an earlier one whose UNSUBSCRIBE is in
	// flight.
	needAck int
	live    bool
}

type listenSubCount struct{ sent, acked int }

// listenWaiter is one Wait/Watch call.
type listenWaiter struct {
	msgs chan []byte   // published values
	sync chan struct{} // "the subscription is live: read the key"
}

// NewListener returns a listener on b's Redis. Nothing runs until Run.
func (b *Backend) NewListener() *ResultListener {
	return &ResultListener{
		b:     b,
		chans: make(map[string]*listenChan),
		done:  make(chan struct{}),
	}
}

// Run holds the subscribed connection, reconnecting with backoff (and
// re-reading every awaited key after a reconnect), until ctx is done. It
// returns nil then; a listener runs once.
func (l *ResultListener) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return errors.New("protocol: ResultListener.Run called twice")
	}
	l.running = true
	l.mu.Unlock()
	defer close(l.done)

	backoff := newResultBackoff()
	for {
		live, err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if live {
			backoff.reset()
		}
		d := backoff.next()
		l.b.log.Warn().Err(err).Dur("retry_in", d).Msg("result listener lost its redis connection; reconnecting")
		if !resultSleep(ctx, d) {
			return nil
		}
	}
}

// session runs one connection; it reports whether it got as far as reading.
func (l *ResultListener) session(ctx context.Context) (bool, error) {
	conn, err := l.b.dial(ctx)
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	psc := &redis.PubSubConn{Conn: conn}

	l.mu.Lock()
	l.conn = psc
	l.counts = make(map[string]*listenSubCount, len(l.chans))
	keys := make([]any, 0, len(l.chans))
	for key, ch := range l.chans {
		keys = append(keys, key)
		l.counts[key] = &listenSubCount{sent: 1}
		ch.needAck, ch.live = 1, false
	}
	var err2 error
	if len(keys) > 0 {
		err2 = psc.Subscribe(keys...)
	}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.conn = nil
		for _, ch := range l.chans {
			ch.live = false
		}
		l.mu.Unlock()
	}()
	if err2 != nil {
		return false, err2
	}
	pinger := startResultKeepAlive(*psc, &l.mu)
	defer pinger.stop()

	for {
		reply, err := redis.ReceiveWithTimeout(conn, resultReadTimeout)
		if err != nil {
			return true, err
		}
		// With no subscription left the connection is out of pub/sub mode
		// and a PING is answered with a plain reply: PONG, or the PING's
		// argument as a bulk string.
		switch reply.(type) {
		case string, []byte:
			continue
		}
		switch v := resultParsePush(reply).(type) {
		case redis.Message:
			l.deliver(v.Channel, v.Data)
		case redis.Subscription:
			if v.Kind == "subscribe" {
				l.confirm(v.Channel)
			}
		case redis.Pong:
		case error:
			return true, v
		}
	}
}

// resultParsePush turns a pub/sub reply into a redis.Message, Subscription, Pong
// or error, as PubSubConn.Receive does.
func resultParsePush(reply any) any {
	items, err := redis.Values(reply, nil)
	if err != nil {
		return err
	}
	var kind string
	rest, err := redis.Scan(items, &kind)
	if err != nil {
		return err
	}
	switch kind {
	case "message":
		var m redis.Message
		if _, err := redis.Scan(rest, &m.Channel, &m.Data); err != nil {
			return err
		}
		return m
	case "subscribe", "unsubscribe":
		var s redis.Subscription
		s.Kind = kind
		if _, err := redis.Scan(rest, &s.Channel, &s.Count); err != nil {
			return err
		}
		return s
	case "pong":
		return redis.Pong{}
	}
	return fmt.Errorf("protocol: unexpected pub/sub reply %q on the result listener", kind)
}

// confirm records a subscribe confirmation and, once the chan's own
// SUBSCRIBE is confirmed, tells its waiters to read the key.
func (l *ResultListener) confirm(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counts[key]
	if c == nil {
		return
	}
	c.acked++
	ch := l.chans[key]
	if ch == nil {
		if c.acked >= c.sent {
			delete(l.counts, key)
		}
		return
	}
	if !ch.live && c.acked >= ch.needAck {
		ch.live = true
		for w := range ch.waiters {
			w.resync()
		}
	}
}

// deliver hands a published value to the key's waiters without blocking:
// a waiter whose buffer is full is told to re-read the key instead, so it
// still sees the latest state.
func (l *ResultListener) deliver(key string, data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := l.chans[key]
	if ch == nil {
		return
	}
	for w := range ch.waiters {
		select {
		case w.msgs <- data:
		default:
			w.resync()
		}
	}
}

func (w *listenWaiter) resync() {
	select {
	case w.sync <- struct{}{}:
	default:
	}
}

// add registers w for key, subscribing when it is the key's first waiter.
func (l *ResultListener) add(key string, w *listenWaiter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := l.chans[key]
	if ch != nil {
		ch.waiters[w] = struct{}{}
		if ch.live {
			w.resync()
		}
		return
	}
	ch = &listenChan{waiters: map[*listenWaiter]struct{}{w: {}}}
	l.chans[key] = ch
	if l.conn == nil {
		return // session() subscribes every chan when it connects
	}
	c := l.counts[key]
	if c == nil {
		c = &listenSubCount{}
		l.counts[key] = c
	}
	c.sent++
	ch.needAck = c.sent
	if err := l.conn.Subscribe(key); err != nil {
		// The reader sees the broken connection and the next session
		// subscribes again.
		l.b.log.Debug().Err(err).Str("key", key).Msg("result listener subscribe failed")
	}
}

// remove drops w, unsubscribing when it was the key's last waiter.
func (l *ResultListener) remove(key string, w *listenWaiter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := l.chans[key]
	if ch == nil {
		return
	}
	delete(ch.waiters, w)
	if len(ch.waiters) > 0 {
		return
	}
	delete(l.chans, key)
	if l.conn != nil {
		if err := l.conn.Unsubscribe(key); err != nil {
			l.b.log.Debug().Err(err).Str("key", key).Msg("result listener unsubscribe failed")
		}
	}
}

// wait is Backend.wait over the shared connection.
func (l *ResultListener) wait(ctx context.Context, taskID string) (*ResultMeta, error) {
	return l.watch(ctx, taskID, nil)
}

// watch is Backend.watch over the shared connection. Under a burst of
// updates fn may miss an intermediate state (the latest one is re-read);
// the ready state is never missed.
func (l *ResultListener) watch(ctx context.Context, taskID string, fn func(*ResultMeta)) (*ResultMeta, error) {
	select {
	case <-l.done:
		return nil, ErrListenerClosed
	default:
	}
	key := l.b.taskKey(taskID)
	w := &listenWaiter{msgs: make(chan []byte, 16), sync: make(chan struct{}, 1)}
	l.add(key, w)
	defer l.remove(key, w)

	state := resultWatchState{taskID: taskID, fn: fn}
	backoff := newResultBackoff()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.done:
			return nil, ErrListenerClosed
		case data := <-w.msgs:
			meta, err := parseResultMeta(taskID, data)
			if err != nil {
				l.b.log.Warn().Err(err).Str("task_id", taskID).Msg("ignoring an undecodable published result")
				continue
			}
			if ready := state.see(meta, data); ready != nil {
				return ready, nil
			}
			continue
		case <-w.sync:
		case <-retry:
		}
		retry = nil
		meta, raw, err := l.b.get(ctx, taskID)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var bad *badResultMetaError
			if errors.As(err, &bad) {
				return nil, err
			}
			// The subscription may be fine while the read failed: read
			// again later rather than wait for a publish that may have
			// happened already.
			retry = time.After(backoff.next())
			continue
		}
		backoff.reset()
		if ready := state.see(meta, raw); ready != nil {
			return ready, nil
		}
	}
}
