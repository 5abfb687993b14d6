package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Consumer fetches from several queues fairly: priority-major, round-robin
// across queues within a band, as kombu does.
type Consumer struct {
	b      *Broker
	mu     sync.Mutex
	queues []string
}

// NewConsumer returns a consumer for queues.
func (b *Broker) NewConsumer(queues ...string) *Consumer {
	c := &Consumer{b: b}
	for _, q := range queues {
		c.AddQueue(q)
	}
	return c
}

// AddQueue starts consuming queue too.
func (c *Consumer) AddQueue(queue string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range c.queues {
		if q == queue {
			return
		}
	}
	c.queues = append(c.queues, queue)
}

// RemoveQueue stops consuming queue; it reports whether it was consumed.
func (c *Consumer) RemoveQueue(queue string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, q := range c.queues {
		if q == queue {
			c.queues = append(c.queues[:i], c.queues[i+1:]...)
			return true
		}
	}
	return false
}

// Queues lists the consumed queues in their current round-robin order.
func (c *Consumer) Queues() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.queues...)
}

// rotate moves queue to the end of the cycle after it was served (kombu's
// round_robin_cycle.rotate), so queues share each priority band fairly.
func (c *Consumer) rotate(queue string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, q := range c.queues {
		if q == queue {
			c.queues = append(append(c.queues[:i:i], c.queues[i+1:]...), q)
			return
		}
	}
}

// Fetch waits up to timeout for one message, records it in unacked (the
// ack-emulation transaction) and returns it. It returns (nil, nil) on
// timeout. An envelope that cannot be decoded is returned with Delivery.Err
// set; one that cannot even be held (not a JSON object, no delivery tag) is
// moved to the dead-letter list at once, since kombu's bookkeeping cannot
// represent it. Connection errors are returned; the caller retries with
// backoff.
//
// While messages are waiting, popping and holding is one atomic Lua script
// (no crash window, one round trip). Only when every list is empty does it
// block in BRPOP, whose message is held right after, as kombu does; that
// leaves kombu's tiny window only for a message arriving during the block.
func (c *Consumer) Fetch(ctx context.Context, timeout time.Duration) (*Delivery, error) {
	queues := c.Queues()
	if len(queues) == 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, nil
		}
	}
	b := c.b
	var lists, names []string
	for _, s := range b.opts.PrioritySteps {
		for _, q := range queues {
			lists = append(lists, b.key(b.QueueForPriority(q, s)))
			names = append(names, q)
		}
	}
	conn, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	// Fast path: pop and hold atomically while messages are waiting.
	args := make([]any, 0, 2*len(lists)+4)
	args = append(args, len(lists)+2) // key count: the script takes a variable number
	for _, l := range lists {
		args = append(args, l)
	}
	args = append(args, b.key(unackedKey), b.key(unackedIndexKey), unixScore(time.Now()))
	for _, n := range names {
		args = append(args, n)
	}
	hit, err := redis.Values(popAndHold.DoContext(ctx, conn, args...))
	if err != nil && !errors.Is(err, redis.ErrNil) {
		return nil, fmt.Errorf("protocol: fetch from %v: %w", queues, err)
	}
	if len(hit) == 3 {
		i, _ := redis.Int(hit[0], nil)
		raw, _ := redis.Bytes(hit[1], nil)
		held, _ := redis.Int(hit[2], nil)
		queue := names[i-1]
		c.rotate(queue)
		return c.deliver(ctx, queue, raw, held == 1)
	}

	// Nothing waiting: block. A message BRPOP hands us is held right after,
	// as kombu does.
	keys := make([]any, 0, len(lists)+1)
	for _, l := range lists {
		keys = append(keys, l)
	}
	secs := timeout.Seconds()
	if secs < 0.01 {
		secs = 0.01
	}
	keys = append(keys, fmt.Sprintf("%.3f", secs))
	reply, err := redis.Values(redis.DoWithTimeout(conn, timeout+5*time.Second, "BRPOP", keys...))
	if errors.Is(err, redis.ErrNil) {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("protocol: fetch from %v: %w", queues, err)
	}
	if len(reply) != 2 {
		return nil, fmt.Errorf("protocol: fetch: unexpected BRPOP reply of %d elements", len(reply))
	}
	key, _ := redis.String(reply[0], nil)
	raw, _ := redis.Bytes(reply[1], nil)
	key = strings.TrimPrefix(key, b.opts.KeyPrefix)
	queue := key
	if i := strings.LastIndex(key, sep); i >= 0 {
		queue = key[:i]
	}
	c.rotate(queue)
	return c.deliver(ctx, queue, raw, false)
}

// deliver turns a popped envelope into a Delivery. held says whether the
// fast path already recorded it in unacked.
func (c *Consumer) deliver(ctx context.Context, queue string, raw []byte, held bool) (*Delivery, error) {
	b := c.b
	d := &Delivery{Queue: queue, Raw: raw}
	tag, _, exchange, rk, infoErr := EnvelopeInfo(raw)
	if infoErr != nil || tag == "" {
		if infoErr == nil {
			infoErr = &DecodeError{Reason: "no-delivery-tag", Err: errors.New("properties.delivery_tag is missing")}
		}
		d.Err = infoErr
		// Retry on a fresh connection: the message is only in our hands now.
		if err := c.persist(ctx, func(ctx context.Context) error { return b.DeadLetter(ctx, d, reasonOf(infoErr)) }); err != nil {
			b.opts.Logger.Error().Err(err).Str("queue", queue).Str("raw", string(raw)).Msg("could not dead-letter an unreadable message")
		}
		return d, nil
	}
	d.Tag = tag
	if rk == "" {
		rk = queue
	}
	if held {
		d.Message, d.Err = Decode(raw)
		return d, nil
	}
	if err := c.persist(ctx, func(ctx context.Context) error { return b.hold(ctx, tag, raw, exchange, rk) }); err != nil {
		b.opts.Logger.Error().Err(err).Str("queue", queue).Str("delivery_tag", tag).Str("raw", string(raw)).
			Msg("could not record a fetched message in unacked; pushing it back")
		_ = c.persist(ctx, func(ctx context.Context) error { return b.Publish(ctx, queue, raw, 0) })
		return nil, err
	}
	d.Message, d.Err = Decode(raw)
	return d, nil
}

// hold is kombu's QoS.append: ZADD unacked_index + HSET unacked in one MULTI.
// The entry embeds the envelope verbatim so Python's restore reads it.
func (b *Broker) hold(ctx context.Context, tag string, raw []byte, exchange, rk string) error {
	ex, _ := json.Marshal(exchange)
	r, _ := json.Marshal(rk)
	entry := make([]byte, 0, len(raw)+len(ex)+len(r)+4)
	entry = append(entry, '[')
	entry = append(entry, raw...)
	entry = append(entry, ", "...)
	entry = append(entry, ex...)
	entry = append(entry, ", "...)
	entry = append(entry, r...)
	entry = append(entry, ']')

	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.Send("MULTI")
	_ = c.Send("ZADD", b.key(unackedIndexKey), unixScore(time.Now()), tag)
	_ = c.Send("HSET", b.key(unackedKey), tag, entry)
	if _, err := redis.DoContext(c, ctx, "EXEC"); err != nil {
		return fmt.Errorf("protocol: hold %s: %w", tag, err)
	}
	return nil
}

// persist retries op a few times with backoff: used for the writes that
// must not fail while a popped message exists only in this process.
func (c *Consumer) persist(ctx context.Context, op func(context.Context) error) error {
	var bo Backoff
	var err error
	for i := 0; i < 5; i++ {
		// A cancelled ctx must not abandon a message we already popped.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = op(wctx)
		cancel()
		if err == nil {
			return nil
		}
		t := time.NewTimer(bo.Next())
		<-t.C
	}
	return err
}

func reasonOf(err error) string {
	var de *DecodeError
	if errors.As(err, &de) {
		return de.Reason + ": " + de.Error()
	}
	return err.Error()
}
