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
// represent it, and DeadLetter on it is a no-op. Connection errors are
// returned; the caller retries with backoff (see Backoff).
//
// While messages are waiting, popping and holding is one atomic Lua script
// (no crash window, one round trip). Only when every list is empty does it
// block in BRPOP, whose message is held right after, as kombu does; that
// leaves kombu's tiny window only for a message arriving during the block.
//
// A cancelled ctx does not interrupt a BRPOP already sent: abandoning its
// reply could drop a message Redis has already popped (celery#7950), so a
// fetch ends only when timeout has passed (plus a round trip): keep timeout
// short (kombu uses 1 s).
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
	now := time.Now()
	args := make([]any, 0, 2*len(lists)+6)
	args = append(args, len(lists)+3) // key count: the script takes a variable number
	for _, l := range lists {
		args = append(args, l)
	}
	args = append(args, b.key(unackedKey), b.key(unackedIndexKey), b.key(b.opts.DeadLetterKey),
		unixScore(now), FormatTime(now))
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
		tag, _ := redis.String(hit[2], nil)
		if i < 1 || i > len(names) {
			return nil, fmt.Errorf("protocol: fetch: pop script returned list %d of %d", i, len(names))
		}
		queue := names[i-1]
		c.rotate(queue)
		if tag == "" {
			return c.deadLettered(queue, raw), nil
		}
		d := &Delivery{Queue: queue, Raw: raw, Tag: tag}
		d.Message, d.Err = Decode(raw)
		return d, nil
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
	return c.deliver(ctx, queue, raw)
}

// deadLettered is the Delivery for an envelope the pop script could not
// hold and moved to the dead-letter list.
func (c *Consumer) deadLettered(queue string, raw []byte) *Delivery {
	d := &Delivery{Queue: queue, Raw: raw, deadLettered: true}
	_, _, _, _, d.Err = EnvelopeInfo(raw)
	if d.Err == nil {
		// Go can read what Redis's cjson could not (deeper nesting, say).
		d.Err = &DecodeError{Reason: "invalid-json", Err: errors.New("Redis's Lua JSON decoder cannot read the envelope, so it cannot be held")}
	}
	c.b.opts.Logger.Warn().Str("queue", queue).Str("reason", reasonOf(d.Err)).Str("dead_letter_list", c.b.opts.DeadLetterKey).
		Msg("moved an undecodable message to the dead-letter list")
	return d
}

// deliver turns an envelope popped by BRPOP into a held Delivery.
func (c *Consumer) deliver(ctx context.Context, queue string, raw []byte) (*Delivery, error) {
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
	if err := c.persist(ctx, func(ctx context.Context) error { return b.hold(ctx, tag, raw, exchange, rk) }); err != nil {
		b.opts.Logger.Error().Err(err).Str("queue", queue).Str("delivery_tag", tag).Str("raw", string(raw)).
			Msg("could not record a fetched message in unacked; pushing it back")
		_ = c.persist(ctx, func(ctx context.Context) error { return b.pushBack(ctx, queue, raw) })
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

// pushBack returns a popped message to the head of its priority list, where
// it was: the last resort when it cannot be held.
func (b *Broker) pushBack(ctx context.Context, queue string, raw []byte) error {
	_, pri, _, _, _ := EnvelopeInfo(raw)
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := redis.DoContext(c, ctx, "RPUSH", b.key(b.QueueForPriority(queue, pri)), raw); err != nil {
		return fmt.Errorf("protocol: push back to %s: %w", queue, err)
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
		if err == nil || i == 4 {
			break
		}
		time.Sleep(bo.Next())
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
