//go:build !wip_broker

// Stub of the transport API; owned by the broker work. Deleted when it lands.
package protocol

import (
	"context"
	"time"

	"github.com/gomodule/redigo/redis"
)

// NewPool returns a redigo pool for a redis:// URL
// (redis://[user:password@]host[:port][/db]) with sane timeouts and health
// checks. DB(url) gives the db number, used for fanout channel prefixes.
func NewPool(redisURL string) (*redis.Pool, error) { panic("stub") }

// ParseDB returns the database number in a redis:// URL (0 when absent).
func ParseDB(redisURL string) (int, error) { panic("stub") }

// BrokerOptions mirror kombu's broker_transport_options. Every participant
// on one Redis must use the same values.
type BrokerOptions struct {
	VisibilityTimeout time.Duration // default 1h
	PrioritySteps     []int         // default [0 3 6 9]
	KeyPrefix         string        // global_keyprefix, default ""
	// DeadLetterKey is the list undecodable messages are moved to, default
	// "celery.deadletter".
	DeadLetterKey string
}

// Broker is the kombu-compatible Redis transport.
type Broker struct{}

// NewBroker wraps pool. It starts no goroutines.
func NewBroker(pool *redis.Pool, opts BrokerOptions) *Broker { panic("stub") }

// Pool is the connection pool the broker uses.
func (b *Broker) Pool() *redis.Pool { panic("stub") }

// Options returns the effective options (defaults filled in).
func (b *Broker) Options() BrokerOptions { panic("stub") }

// Publish LPUSHes an encoded envelope onto queue's priority list and declares
// the queue binding (SADD _kombu.binding.<queue>) in the same transaction.
func (b *Broker) Publish(ctx context.Context, queue string, envelope []byte, priority int) error {
	panic("stub")
}

// PublishMessage encodes m and publishes it to m.RoutingKey (or queue "celery").
func (b *Broker) PublishMessage(ctx context.Context, m *Message) error { panic("stub") }

// DeclareQueue writes the binding Python workers write for a consumed queue.
func (b *Broker) DeclareQueue(ctx context.Context, queue string) error { panic("stub") }

// QueueLength is the number of waiting messages in all priority bands.
func (b *Broker) QueueLength(ctx context.Context, queue string) (int64, error) { panic("stub") }

// Ack removes tag from unacked/unacked_index. held is false when the entry
// was already gone (restored by someone else: the task may run twice).
func (b *Broker) Ack(ctx context.Context, tag string) (held bool, err error) { panic("stub") }

// Requeue puts a held message back at the end of its queue (kombu
// reject(requeue=True): LPUSH) and drops it from unacked, atomically.
func (b *Broker) Requeue(ctx context.Context, tag string) error { panic("stub") }

// Restore puts a held message back at the head of its queue (kombu
// restore: RPUSH, redelivered=true) and drops it from unacked, atomically.
func (b *Broker) Restore(ctx context.Context, tag string) error { panic("stub") }

// Touch refreshes the unacked_index score of held messages to now (ZADD XX)
// so that no restorer treats them as lost while they run.
func (b *Broker) Touch(ctx context.Context, tags ...string) error { panic("stub") }

// Held reports whether tag is still in unacked_index.
func (b *Broker) Held(ctx context.Context, tag string) (bool, error) { panic("stub") }

// RestoreExpired restores every unacked message older than the visibility
// timeout, under kombu's unacked_mutex. It returns how many it restored.
func (b *Broker) RestoreExpired(ctx context.Context) (int, error) { panic("stub") }

// DeadLetter moves a held, undecodable message to the dead-letter list as
// {"reason", "queue", "time", "raw"} and drops it from unacked, atomically.
func (b *Broker) DeadLetter(ctx context.Context, d *Delivery, reason string) error {
	panic("stub")
}

// Consumer fetches from several queues fairly: priority-major, round-robin
// across queues within a band, as kombu does.
type Consumer struct{}

// NewConsumer returns a consumer for queues.
func (b *Broker) NewConsumer(queues ...string) *Consumer { panic("stub") }

// Fetch waits up to timeout for one message, records it in unacked (the
// ack-emulation pipeline) and returns it. It returns (nil, nil) on timeout.
// An envelope that cannot be decoded is returned with Delivery.Err set (it
// is held like any other, so the caller dead-letters it). Connection errors
// are returned; the caller retries with backoff.
func (c *Consumer) Fetch(ctx context.Context, timeout time.Duration) (*Delivery, error) {
	panic("stub")
}

// AddQueue starts consuming queue too. RemoveQueue stops. Queues lists them.
// Safe for concurrent use with Fetch.
func (c *Consumer) AddQueue(queue string)        { panic("stub") }
func (c *Consumer) RemoveQueue(queue string) bool { panic("stub") }
func (c *Consumer) Queues() []string             { panic("stub") }
