package protocol

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/protocol/internal/fanout"
)

// Event is one Celery event: standard fields (type, hostname, timestamp,
// utcoffset, pid, clock) plus the event's own fields, in a map. Received
// events hold numbers as json.Number.
type Event map[string]any

// Type returns event["type"], e.g. "worker-heartbeat".
func (e Event) Type() string { s, _ := e["type"].(string); return s }

// Hostname returns the node name of the sender, e.g. "celery@host".
func (e Event) Hostname() string { s, _ := e["hostname"].(string); return s }

// timestamp returns the sender's event time in seconds since the epoch (0
// when missing). Python receivers correct it by utcoffset; this does not.
func (e Event) timestamp() float64 { f, _ := fanout.AsFloat(e["timestamp"]); return f }

// clock returns the sender's Lamport clock value (0 when missing).
func (e Event) clock() int64 { n, _ := fanout.AsInt(e["clock"]); return n }

// LamportClock is Celery's logical clock (kombu.clocks.LamportClock). A
// node's events, control replies and mingle share one, as app.clock does in
// Python. The zero value is ready to use; it is safe for concurrent use.
type LamportClock struct {
	mu    sync.Mutex
	value int64
}

// forward advances the clock for a local event and returns the new value.
func (c *LamportClock) forward() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.value++
	return c.value
}

// adjust merges a clock value received from another node: max(local,
// other) + 1.
func (c *LamportClock) adjust(other int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.value = max(c.value, other) + 1
	return c.value
}

// read is the current value.
func (c *LamportClock) read() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.value
}

// NodeOption configures an EventDispatcher, a Mailbox or ReceiveEvents.
type NodeOption func(*nodeConfig)

type nodeConfig struct {
	clock *LamportClock
	log   zerolog.Logger
}

func newNodeConfig(opts []NodeOption) nodeConfig {
	cfg := nodeConfig{log: zerolog.New(os.Stderr).With().Timestamp().Logger()}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if cfg.clock == nil {
		cfg.clock = new(LamportClock)
	}
	return cfg
}

// WithClock makes a node use clock, so that its events, control replies and
// received events advance one Lamport clock as Celery's app.clock does.
// Without it each gets a clock of its own.
func WithClock(clock *LamportClock) NodeOption {
	return func(c *nodeConfig) { c.clock = clock }
}

// WithLogger sets where dropped messages and reconnects are logged
// (default: JSON lines on stderr).
func WithLogger(log zerolog.Logger) NodeOption {
	return func(c *nodeConfig) { c.log = log }
}

// EventDispatcher publishes events on the celeryev fanout exchange
// (PUBLISH /{db}.celeryev/<group>.<action>), as celery.events.EventDispatcher
// does. It is safe for concurrent use and starts no goroutines.
type EventDispatcher struct {
	pool     *redis.Pool
	hostname string
	channel  string // keyPrefix + "/{db}.celeryev/"
	pid      int
	clock    *LamportClock
}

// NewEventDispatcher creates a dispatcher for the node hostname (e.g.
// "celery@host") on database db. keyPrefix is kombu's global_keyprefix.
func NewEventDispatcher(pool *redis.Pool, db int, hostname, keyPrefix string, opts ...NodeOption) *EventDispatcher {
	cfg := newNodeConfig(opts)
	return &EventDispatcher{
		pool:     pool,
		hostname: hostname,
		channel:  keyPrefix + eventChannel(db, ""),
		pid:      os.Getpid(),
		clock:    cfg.clock,
	}
}

// eventStandardFields are written first, in Python's order.
var eventStandardFields = [...]string{"hostname", "utcoffset", "pid", "clock"}

func isStandardEventField(k string) bool {
	for _, f := range eventStandardFields {
		if k == f {
			return true
		}
	}
	return false
}

// Send publishes an event of type typ (e.g. "task-started") with fields.
// The standard fields are added in Python's key order (hostname, utcoffset,
// pid, clock, fields sorted by name, timestamp, type); a standard field
// given in fields overrides the computed value (e.g. the pid of the process
// that ran a task), and a "timestamp" field (number or time.Time) replaces
// the current time. Floats are written with a fractional part.
func (d *EventDispatcher) Send(ctx context.Context, typ string, fields map[string]any) error {
	if d.pool == nil {
		return errors.New("protocol: send event: dispatcher has no redis pool")
	}
	channel, env, err := d.Encode(typ, fields)
	if err != nil {
		return err
	}
	conn, err := d.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("protocol: send event %s: get redis connection: %w", typ, err)
	}
	defer conn.Close()
	if _, err := redis.DoContext(conn, ctx, "PUBLISH", channel, env); err != nil {
		return fmt.Errorf("protocol: send event %s: PUBLISH %s: %w", typ, channel, err)
	}
	return nil
}

// Encode builds the event Send would publish and returns its channel and
// envelope, for callers that publish it in a batch of their own (a worker's
// group commit). It advances the clock.
func (d *EventDispatcher) Encode(typ string, fields map[string]any) (channel string, envelope []byte, err error) {
	if typ == "" {
		return "", nil, errors.New("protocol: send event: empty event type")
	}
	now := time.Now()
	std := [len(eventStandardFields)]any{d.hostname, pythonUTCOffset(now), d.pid, d.clock.forward()}
	ev := make(fanoutObject, 0, len(eventStandardFields)+len(fields)+2)
	for i, k := range eventStandardFields {
		v := std[i]
		if fv, ok := fields[k]; ok {
			v = fv
		}
		ev = append(ev, fanoutField{k, v})
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if !isStandardEventField(k) && k != "timestamp" && k != "type" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		ev = append(ev, fanoutField{k, fields[k]})
	}
	ts := fanout.Float(float64(now.UnixMicro()) / 1e6)
	if v, ok := fields["timestamp"]; ok {
		if t, isTime := v.(time.Time); isTime {
			ts = fanout.Float(float64(t.UnixMicro()) / 1e6)
		} else if f, isNum := fanout.AsFloat(v); isNum {
			ts = fanout.Float(f)
		}
	}
	ev = append(ev, fanoutField{"timestamp", ts}, fanoutField{"type", typ})

	body, err := fanout.Marshal(ev)
	if err != nil {
		return "", nil, fmt.Errorf("protocol: send event %s: encode fields: %w", typ, err)
	}
	routingKey := strings.ReplaceAll(typ, "-", ".")
	env, err := fanout.Envelope(body, fanoutObject{{"hostname", d.hostname}}, 1, eventExchange, routingKey)
	if err != nil {
		return "", nil, fmt.Errorf("protocol: send event %s: %w", typ, err)
	}
	return d.channel + routingKey, env, nil
}

// Clock is the current value of the dispatcher's Lamport clock.
func (d *EventDispatcher) Clock() int64 { return d.clock.read() }

// adjust merges a clock value received from another node.
func (d *EventDispatcher) adjust(other int64) { d.clock.adjust(other) }

// ReceiveEvents PSUBSCRIBEs /{db}.celeryev/<pattern> (pattern "*" for all
// events, "worker.*" for worker events; kombu's "#" is accepted as "*") and
// calls fn for each event until ctx is done; a list body (Python's buffered
// task.multi) is split into its events. keyPrefix is kombu's
// global_keyprefix. fn runs on the receiving goroutine, so it should return
// quickly. Undecodable messages are logged and skipped. With WithClock,
// each event's clock is merged into the given clock, as Python's
// EventReceiver does. Connection loss is retried with backoff; events
// published meanwhile are lost, as with any Redis pub/sub. It returns nil
// when ctx is done, and an error only for invalid arguments.
func ReceiveEvents(ctx context.Context, pool *redis.Pool, db int, keyPrefix, pattern string, fn func(Event), opts ...NodeOption) error {
	if pool == nil || fn == nil {
		return errors.New("protocol: receive events: nil pool or handler")
	}
	if pattern == "" {
		pattern = "*"
	}
	cfg := newNodeConfig(opts)
	log := cfg.log.With().Str("component", "events").Logger()
	sub := fanoutSubscriber{
		pool:    pool,
		pattern: keyPrefix + eventChannel(db, "") + strings.ReplaceAll(pattern, "#", "*"),
		log:     log,
		onMessage: func(_ context.Context, channel string, data []byte) {
			events, err := decodeEvents(data)
			if err != nil {
				log.Warn().Err(err).Str("channel", channel).Msg("dropping undecodable event message")
			}
			for _, e := range events {
				if c, ok := fanout.AsInt(e["clock"]); ok {
					cfg.clock.adjust(c)
				}
				fn(e)
			}
		},
	}
	sub.run(ctx)
	return nil
}

// decodeEvents returns the events in one celeryev message. Elements of a
// list body that are not events are skipped.
func decodeEvents(data []byte) ([]Event, error) {
	msg, err := fanout.ParseEnvelope(data)
	if err != nil {
		return nil, err
	}
	asEvent := func(v any) (Event, bool) {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if _, ok := m["type"].(string); !ok {
			return nil, false
		}
		return Event(m), true
	}
	switch body := msg.Body.(type) {
	case map[string]any:
		if e, ok := asEvent(body); ok {
			return []Event{e}, nil
		}
		return nil, errors.New("event body has no string \"type\"")
	case []any:
		events := make([]Event, 0, len(body))
		for _, v := range body {
			if e, ok := asEvent(v); ok {
				events = append(events, e)
			}
		}
		if len(events) < len(body) {
			return events, fmt.Errorf("%d of %d events in a list body are not events", len(body)-len(events), len(body))
		}
		return events, nil
	default:
		return nil, fmt.Errorf("event body is a JSON %s, want an object or a list", fanout.Kind(msg.Body))
	}
}

// pythonUTCOffset is Celery's utcoffset(): hours WEST of UTC (time.timezone
// or time.altzone), floor-divided, so UTC+2 is -2 and UTC+5:30 is -6.
func pythonUTCOffset(t time.Time) int {
	_, east := t.Zone()
	west := -east
	q := west / 3600
	if west%3600 != 0 && west < 0 {
		q--
	}
	return q
}

// fanoutField and fanoutObject are a JSON object whose keys keep their order
// (fanout.Ordered): Python writes dict keys in insertion order and some
// readers (people, byte-level tests) expect the same order.
type fanoutField struct {
	Key   string
	Value any
}

type fanoutObject []fanoutField

func (o fanoutObject) Len() int                  { return len(o) }
func (o fanoutObject) Field(i int) (string, any) { return o[i].Key, o[i].Value }
