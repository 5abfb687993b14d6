package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/internal/clock"
	"morag-gpu/internal/pyfmt"
)

// unackedMutexTTL is kombu's unacked_mutex_expire.
const unackedMutexTTL = 300 * time.Second

// BrokerOptions mirror kombu's broker_transport_options. Every participant
// on one Redis must use the same values.
type BrokerOptions struct {
	VisibilityTimeout time.Duration // default 1h
	PrioritySteps     []int         // default [0 3 6 9]
	KeyPrefix         string        // global_keyprefix, default ""
	// DeadLetterKey is the list undecodable messages are moved to, default
	// "celery.deadletter".
	DeadLetterKey string
	// DeliveryCountTTL bounds how long the start count of an unfinished
	// message is kept (it must outlive the redeliveries it counts).
	// Default: the larger of 24h and 4 visibility timeouts.
	DeliveryCountTTL time.Duration
	// Logger receives transport warnings (dead letters, double deliveries).
	// The zero value discards them.
	Logger zerolog.Logger
	// Clock supplies the times written as lease scores into unacked_index
	// (fetch, Touch), the restore ceiling (RestoreExpired) and dead-letter
	// timestamps. The Lua scripts never read Redis's TIME, so scores and the
	// ceiling always come from this one clock; tests pass a clock.Fake to
	// expire or keep a lease exactly. Default: the wall clock. Python peers
	// read their own wall clock, so production must keep the default.
	Clock clock.Clock
	// MinReplicas > 0 makes every publish wait (Redis WAIT) until that
	// many replicas hold it, at most ReplicaWait (default 1s): Redis
	// replicates asynchronously, so without it a message the caller was
	// told is queued can vanish when Sentinel fails over to a replica that
	// had not received it yet. A publish that times out returns a
	// *ReplicationError. Results and acks need no wait: a lost ack only
	// redelivers.
	MinReplicas int
	ReplicaWait time.Duration
	// PublishLanes bounds the publishes in flight at once (default 4).
	// Publishes that find every lane busy wait for the first to come
	// free and then go together, pipelined on one connection in one
	// round trip, each still its own LPUSH or MULTI/EXEC with its own
	// outcome: a burst costs Redis and the publisher a read and a write
	// per batch instead of per message. Up to PublishLanes concurrent
	// publishers never wait for one another. Negative: no bound, every
	// publish on its own connection.
	PublishLanes int
}

// ReplicationError is a publish that reached the master but fewer
// replicas than BrokerOptions.MinReplicas within ReplicaWait. The message
// is queued and will run unless the master is lost before it replicates;
// publishing again may run the task twice.
type ReplicationError struct {
	Queue     string
	Want, Got int
}

func (e *ReplicationError) Error() string {
	return fmt.Sprintf("protocol: publish to %s: queued on the master, but only %d of %d replicas confirmed it in time (is a replica down or lagging? check INFO replication)", e.Queue, e.Got, e.Want)
}

// Broker is the kombu-compatible Redis transport. Every Redis state change
// of a delivery happens in this file and consumer.go, each as one MULTI
// transaction or Lua script.
type Broker struct {
	pool *redis.Pool
	opts BrokerOptions
	// declared remembers queues whose binding this broker already wrote, so
	// a publish is a single LPUSH after the first (kombu's maybe_declare).
	declared sync.Map
	lanes    publishLanes
}

// NewBroker wraps pool. It starts no goroutines.
func NewBroker(pool *redis.Pool, opts BrokerOptions) *Broker {
	if opts.VisibilityTimeout <= 0 {
		opts.VisibilityTimeout = time.Hour
	}
	if len(opts.PrioritySteps) == 0 {
		opts.PrioritySteps = []int{0, 3, 6, 9}
	}
	if opts.DeadLetterKey == "" {
		opts.DeadLetterKey = defaultDeadLetterKey
	}
	if opts.DeliveryCountTTL <= 0 {
		opts.DeliveryCountTTL = max(24*time.Hour, 4*opts.VisibilityTimeout)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.MinReplicas > 0 && opts.ReplicaWait <= 0 {
		opts.ReplicaWait = time.Second
	}
	if opts.PublishLanes == 0 {
		opts.PublishLanes = defaultPublishLanes
	}
	b := &Broker{pool: pool, opts: opts}
	b.lanes.limit = opts.PublishLanes
	return b
}

// Options returns the effective options (defaults filled in).
func (b *Broker) Options() BrokerOptions { return b.opts }

func (b *Broker) key(name string) string { return b.opts.KeyPrefix + name }

// countKey is the key holding tag's unfinished start count.
func (b *Broker) countKey(tag string) string { return b.key(deliveryCountKey(tag)) }

func (b *Broker) countTTL() int64 { return int64(b.opts.DeliveryCountTTL / time.Second) }

// QueueForPriority is the list a message of priority pri goes to: kombu's
// _q_for_pri. On Redis 0 is the highest priority.
func (b *Broker) QueueForPriority(queue string, pri int) string {
	pri = max(0, min(pri, 9))
	band := b.opts.PrioritySteps[0]
	for _, s := range b.opts.PrioritySteps {
		if s <= pri {
			band = s
		}
	}
	if band == 0 {
		return queue
	}
	return bandQueue(queue, band)
}

func (b *Broker) conn(ctx context.Context) (redis.Conn, error) {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("protocol: connect to Redis: %w", err)
	}
	return c, nil
}

// DeclareQueue writes the binding Python workers write for a consumed queue.
func (b *Broker) DeclareQueue(ctx context.Context, queue string) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := redis.DoContext(c, ctx, "SADD", b.key(bindingKey(queue)), bindingMember(queue)); err != nil {
		return fmt.Errorf("protocol: declare %s: %w", queue, err)
	}
	return nil
}

// QueueLength is the number of waiting messages in all priority bands.
func (b *Broker) QueueLength(ctx context.Context, queue string) (int64, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	for _, s := range b.opts.PrioritySteps {
		_ = c.Send("LLEN", b.key(b.QueueForPriority(queue, s)))
	}
	if err := c.Flush(); err != nil {
		return 0, fmt.Errorf("protocol: queue length of %s: %w", queue, err)
	}
	var total int64
	for range b.opts.PrioritySteps {
		n, err := redis.Int64(c.Receive())
		if err != nil {
			return 0, fmt.Errorf("protocol: queue length of %s: %w", queue, err)
		}
		total += n
	}
	return total, nil
}

// Ack removes tag from unacked/unacked_index. held is false when the entry
// was already gone (restored by someone else: the task may run twice).
func (b *Broker) Ack(ctx context.Context, tag string) (held bool, err error) {
	c, err := b.conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.Send("MULTI")
	_ = c.Send("ZREM", b.key(unackedIndexKey), tag)
	_ = c.Send("HDEL", b.key(unackedKey), tag)
	_ = c.Send("DEL", b.countKey(tag))
	res, err := redis.Values(redis.DoContext(c, ctx, "EXEC"))
	if err != nil {
		return false, fmt.Errorf("protocol: ack %s: %w", tag, err)
	}
	n, _ := redis.Int(res[0], nil)
	if n == 0 {
		b.opts.Logger.Warn().Str("delivery_tag", tag).
			Msg("acked a message that was no longer held: it was restored by another process and may run twice; raise the visibility timeout")
	}
	return n == 1, nil
}

// requeue puts a held message back at the end of its queue (kombu
// reject(requeue=True): LPUSH) and drops it from unacked, atomically.
func (b *Broker) requeue(ctx context.Context, tag string) error {
	return b.restoreByTag(ctx, tag, true, false)
}

// Restore puts a held message back at the head of its queue (kombu
// restore: RPUSH, redelivered=true) and drops it from unacked, atomically.
func (b *Broker) Restore(ctx context.Context, tag string) error {
	return b.restoreByTag(ctx, tag, false, false)
}

// RestoreStarted is Restore for a message whose start the caller counted
// (CommitStart) and now gives back alive (a shutdown): the start is
// uncounted, since it is no evidence of a poison message.
func (b *Broker) RestoreStarted(ctx context.Context, tag string) error {
	return b.restoreByTag(ctx, tag, false, true)
}

// restoreByTag is kombu's QoS.restore_by_tag: WATCH unacked, read the
// entry, and in one MULTI drop it from the indices and push the payload
// back. The redelivered flags are set in Go, not Lua, because cjson would
// re-encode the payload and lose big-int precision. With uncount the
// message's delivery count goes down by one (a live owner gives it back;
// a count that goes below zero is read as zero).
func (b *Broker) restoreByTag(ctx context.Context, tag string, leftmost, uncount bool) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for attempt := 0; attempt < 10; attempt++ {
		if _, err := redis.DoContext(c, ctx, "WATCH", b.key(unackedKey)); err != nil {
			return fmt.Errorf("protocol: restore %s: %w", tag, err)
		}
		entry, err := redis.Bytes(redis.DoContext(c, ctx, "HGET", b.key(unackedKey), tag))
		if errors.Is(err, redis.ErrNil) {
			_, _ = redis.DoContext(c, ctx, "UNWATCH")
			_, err = redis.DoContext(c, ctx, "ZREM", b.key(unackedIndexKey), tag)
			return err
		}
		if err != nil {
			return fmt.Errorf("protocol: restore %s: %w", tag, err)
		}
		payload, targets, pri, perr := b.restorePlan(c, entry)
		_ = c.Send("MULTI")
		_ = c.Send("ZREM", b.key(unackedIndexKey), tag)
		_ = c.Send("HDEL", b.key(unackedKey), tag)
		if perr != nil {
			// An entry nobody can parse goes to the dead letters, not to
			// the void.
			_ = c.Send("LPUSH", b.key(b.opts.DeadLetterKey), deadLetterEntry(b.opts.Clock.Now(), entry, "", "unrestorable: "+perr.Error()))
		}
		for _, q := range targets {
			cmd := "RPUSH"
			if leftmost {
				cmd = "LPUSH"
			}
			_ = c.Send(cmd, b.key(b.QueueForPriority(q, pri)), payload)
		}
		if uncount {
			_ = c.Send("DECR", b.countKey(tag))
			_ = c.Send("EXPIRE", b.countKey(tag), b.countTTL())
		}
		res, err := redis.DoContext(c, ctx, "EXEC")
		if err != nil {
			return fmt.Errorf("protocol: restore %s: %w", tag, err)
		}
		if res == nil { // WATCH fired: someone else changed unacked; retry.
			continue
		}
		return nil
	}
	return fmt.Errorf("protocol: restore %s: unacked kept changing; gave up after 10 attempts", tag)
}

// restorePlan decodes an unacked entry [payload, exchange, routing_key] and
// resolves where it goes, like kombu's _do_restore_message and _lookup.
func (b *Broker) restorePlan(c redis.Conn, entry []byte) ([]byte, []string, int, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(entry, &parts); err != nil || len(parts) != 3 {
		return nil, nil, 0, fmt.Errorf("unacked entry is not [payload, exchange, routing_key]")
	}
	var exchange, rk string
	_ = json.Unmarshal(parts[1], &exchange)
	_ = json.Unmarshal(parts[2], &rk)
	payload, err := markRedelivered(parts[0])
	if err != nil {
		payload = parts[0]
	}
	_, pri, _, _, _ := envelopeInfo(payload)
	return payload, b.lookup(c, exchange, rk), pri, nil
}

// lookup is kombu's _lookup for direct exchanges. Where kombu would drop a
// message whose exchange has no matching binding, we fall back to the
// routing key as a queue name: losing a task is never the right answer.
func (b *Broker) lookup(c redis.Conn, exchange, rk string) []string {
	if exchange == "" {
		return []string{rk}
	}
	members, err := redis.Strings(c.Do("SMEMBERS", b.key(bindingKey(exchange))))
	var out []string
	if err == nil {
		for _, m := range members {
			p := strings.Split(m, sep)
			if len(p) == 3 && p[0] == rk && p[2] != "" {
				out = append(out, p[2])
			}
		}
	}
	if len(out) == 0 {
		b.opts.Logger.Warn().Str("exchange", exchange).Str("routing_key", rk).
			Msg("no binding matches a restored message; restoring it to the queue named by its routing key")
		return []string{rk}
	}
	return out
}

// Touch refreshes the unacked_index score of held messages to now
// (touchLeases: forward only, so a refresh delayed in the network cannot
// age the lease of whoever holds the message since) so that no restorer
// treats them as lost while they run. This is what keeps a task longer
// than the visibility timeout from running twice.
func (b *Broker) Touch(ctx context.Context, tags ...string) error {
	if len(tags) == 0 {
		return nil
	}
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	args := make([]any, 0, 2+len(tags))
	args = append(args, b.key(unackedIndexKey), unixScore(b.opts.Clock.Now()))
	for _, t := range tags {
		args = append(args, t)
	}
	if _, err := touchLeases.DoContext(ctx, c, args...); err != nil {
		return fmt.Errorf("protocol: refresh lease: %w", err)
	}
	return nil
}

// Held reports whether tag is still in unacked_index.
func (b *Broker) Held(ctx context.Context, tag string) (bool, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	v, err := redis.DoContext(c, ctx, "ZSCORE", b.key(unackedIndexKey), tag)
	if err != nil {
		return false, fmt.Errorf("protocol: held %s: %w", tag, err)
	}
	return v != nil, nil
}

// RestoreExpired restores every unacked message older than the visibility
// timeout, under kombu's unacked_mutex so that Python and Go restorers never
// restore the same message twice. It returns how many it restored.
func (b *Broker) RestoreExpired(ctx context.Context) (int, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	token := NewID()
	ok, err := redis.String(c.Do("SET", b.key(unackedMutexKey), token, "NX", "PX", unackedMutexTTL.Milliseconds()))
	if errors.Is(err, redis.ErrNil) {
		return 0, nil // another restorer holds the mutex: skip this sweep.
	}
	if err != nil || ok != "OK" {
		return 0, fmt.Errorf("protocol: restore: take unacked_mutex: %v", err)
	}
	defer func() { _, _ = releaseMutex.Do(c, b.key(unackedMutexKey), token) }()
	ceil := unixScore(b.opts.Clock.Now().Add(-b.opts.VisibilityTimeout))
	tags, err := redis.Strings(c.Do("ZREVRANGEBYSCORE", b.key(unackedIndexKey), ceil, 0))
	if err != nil {
		return 0, fmt.Errorf("protocol: restore: read unacked_index: %w", err)
	}
	n := 0
	for _, tag := range tags {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if err := b.restoreByTag(ctx, tag, false, false); err != nil {
			return n, err
		}
		n++
	}
	if n > 0 {
		b.opts.Logger.Info().Int("restored", n).Msg("restored unacknowledged messages older than the visibility timeout")
	}
	return n, nil
}

// DeadLetter moves a held, undecodable message to the dead-letter list as
// {"reason", "queue", "time", "raw"} and drops it from unacked, atomically.
func (b *Broker) DeadLetter(ctx context.Context, d *Delivery, reason string) error {
	if d == nil || d.deadLettered {
		return nil
	}
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.Send("MULTI")
	if d.Tag != "" {
		_ = c.Send("ZREM", b.key(unackedIndexKey), d.Tag)
		_ = c.Send("HDEL", b.key(unackedKey), d.Tag)
	}
	_ = c.Send("LPUSH", b.key(b.opts.DeadLetterKey), deadLetterEntry(b.opts.Clock.Now(), d.Raw, d.Queue, reason))
	if d.Tag != "" {
		_ = c.Send("DEL", b.countKey(d.Tag))
	}
	if _, err := redis.DoContext(c, ctx, "EXEC"); err != nil {
		return fmt.Errorf("protocol: dead-letter: %w", err)
	}
	d.deadLettered = true
	b.opts.Logger.Warn().Str("queue", d.Queue).Str("delivery_tag", d.Tag).Str("reason", reason).
		Str("dead_letter_list", b.opts.DeadLetterKey).Msg("moved an undecodable message to the dead-letter list")
	return nil
}

func deadLetterEntry(now time.Time, raw []byte, queue, reason string) []byte {
	e, _ := json.Marshal(map[string]any{
		"reason": reason,
		"queue":  queue,
		"time":   pyfmt.ISOFormat(now),
		"raw":    string(raw),
	})
	return e
}

func unixScore(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMicro())/1e6, 'f', 6, 64)
}
