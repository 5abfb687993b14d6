package protocol

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/pyfmt"
)

// Consumer fetches from several queues fairly: priority-major, round-robin
// across queues within a band, as kombu does.
type Consumer struct {
	b      *Broker
	mu     sync.Mutex
	queues []string
	// gen counts queue removals; a fetch that read the queue list before a
	// removal does not start a BRPOP after it.
	gen      uint64
	inflight map[*fetchCall]struct{}
	// firstLease, when set, is how long a fetched message's lease lasts
	// before its first refresh (SetFirstLease).
	firstLease time.Duration
}

// fetchCall is one FetchN in progress, so that RemoveQueueWait can wait for
// the fetches that may still take from a removed queue.
type fetchCall struct {
	gen      uint64
	queues   []string
	clientID int64 // the Redis client id while it is (about to be) blocked in BRPOP
	done     chan struct{}
}

// NewConsumer returns a consumer for queues.
func (b *Broker) NewConsumer(queues ...string) *Consumer {
	c := &Consumer{b: b}
	for _, q := range queues {
		c.AddQueue(q)
	}
	return c
}

// SetFirstLease makes the messages this consumer fetches expire d after
// the fetch unless their lease is refreshed (Broker.Touch), instead of
// after the whole visibility timeout: the score is back-dated in the same
// atomic step that holds them. A relay that hands messages on (the
// gateway to its remote workers) uses it, so that a message whose hand-off
// was lost comes back in d. Call it before fetching.
func (c *Consumer) SetFirstLease(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.firstLease = min(d, c.b.opts.VisibilityTimeout)
}

// leaseScore is the unacked_index score a message held at now gets.
func (c *Consumer) leaseScore(now time.Time) string {
	c.mu.Lock()
	first := c.firstLease
	c.mu.Unlock()
	if first > 0 {
		now = now.Add(-(c.b.opts.VisibilityTimeout - first))
	}
	return unixScore(now)
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

// removeQueue stops consuming queue; it reports whether it was consumed.
func (c *Consumer) removeQueue(queue string) bool {
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

// RemoveQueueWait stops consuming queue and returns once no fetch can take
// from it any more: fetches that read the queue list before the removal
// are waited for, and one blocked in BRPOP is woken with CLIENT UNBLOCK
// (which answers it as a timeout, so no message is popped and dropped).
// Messages those fetches took before they returned are the caller's, as
// with kombu's cancel. It reports whether the queue was consumed.
func (c *Consumer) RemoveQueueWait(ctx context.Context, queue string) (bool, error) {
	c.mu.Lock()
	removed := false
	for i, q := range c.queues {
		if q == queue {
			c.queues = append(c.queues[:i], c.queues[i+1:]...)
			removed = true
			break
		}
	}
	c.gen++
	var pending []*fetchCall
	for call := range c.inflight {
		for _, q := range call.queues {
			if q == queue {
				pending = append(pending, call)
				break
			}
		}
	}
	c.mu.Unlock()
	if len(pending) == 0 {
		return removed, nil
	}
	// A BRPOP may reach Redis after an UNBLOCK sent for it, so unblock
	// until each fetch has returned.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for _, call := range pending {
		for {
			c.unblock(ctx, call)
			select {
			case <-call.done:
			case <-tick.C:
				continue
			case <-ctx.Done():
				return removed, fmt.Errorf("protocol: stop consuming %s: a fetch is still in flight: %w", queue, ctx.Err())
			}
			break
		}
	}
	return removed, nil
}

func (c *Consumer) unblock(ctx context.Context, call *fetchCall) {
	c.mu.Lock()
	id := call.clientID
	c.mu.Unlock()
	if id == 0 {
		return
	}
	conn, err := c.b.conn(ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = redis.DoContext(conn, ctx, "CLIENT", "UNBLOCK", id)
}

// begin registers a fetch and returns the queues it may read.
func (c *Consumer) begin() ([]string, *fetchCall) {
	c.mu.Lock()
	defer c.mu.Unlock()
	call := &fetchCall{gen: c.gen, queues: append([]string(nil), c.queues...), done: make(chan struct{})}
	if c.inflight == nil {
		c.inflight = map[*fetchCall]struct{}{}
	}
	c.inflight[call] = struct{}{}
	return call.queues, call
}

func (c *Consumer) end(call *fetchCall) {
	c.mu.Lock()
	delete(c.inflight, call)
	c.mu.Unlock()
	close(call.done)
}

// current reports false when a queue was removed since the fetch read its
// queue list (the fetch then does not block).
func (c *Consumer) current(call *fetchCall) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen == call.gen
}

// blocking records the client id of the connection a fetch BRPOPs on, for
// RemoveQueueWait's CLIENT UNBLOCK. The id comes back with the BRPOP
// already sent; RemoveQueueWait unblocks again until the fetch returns, so
// a removal in between waits at most one of its retries.
func (c *Consumer) blocking(call *fetchCall, id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	call.clientID = id
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

// fetch waits up to timeout for one message, records it in unacked (the
// ack-emulation transaction) and returns it. It returns (nil, nil) on
// timeout. See FetchN.
func (c *Consumer) fetch(ctx context.Context, timeout time.Duration) (*Delivery, error) {
	ds, err := c.FetchN(ctx, timeout, 1)
	if len(ds) == 0 {
		return nil, err
	}
	return ds[0], err
}

// FetchN takes up to max messages (at least one, unless timeout passes
// first), records each in unacked (the ack-emulation bookkeeping) and
// returns them in kombu's order. It returns (nil, nil) on timeout. An
// envelope that cannot be decoded is returned with Delivery.Err set; one
// that cannot even be held (not a JSON object, no delivery tag) is moved
// to the dead-letter list at once, since kombu's bookkeeping cannot
// represent it, and DeadLetter on it is a no-op. Connection errors are
// returned; the caller retries with backoff (see Backoff).
//
// While messages are waiting, popping and holding a whole batch is one
// atomic Lua script (no crash window, one round trip): it never waits to
// fill a batch, so batching adds no latency. Only when every list is
// empty does it block in BRPOP, whose message is held right after, as
// kombu does; that leaves kombu's tiny window only for a message arriving
// during the block.
//
// A cancelled ctx does not interrupt a BRPOP already sent: abandoning its
// reply could drop a message Redis has already popped (celery#7950), so a
// fetch ends only when timeout has passed (plus a round trip): keep timeout
// short (kombu uses 1 s).
func (c *Consumer) FetchN(ctx context.Context, timeout time.Duration, limit int) ([]*Delivery, error) {
	limit = min(max(limit, 1), 1000)
	queues, call := c.begin()
	defer c.end(call)
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
	var lists []string
	for _, s := range b.opts.PrioritySteps {
		for _, q := range queues {
			lists = append(lists, b.key(b.QueueForPriority(q, s)))
		}
	}
	conn, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	// Fast path: pop and hold atomically while messages are waiting.
	now := b.opts.Clock.Now()
	args := make([]any, 0, len(lists)+len(queues)+9)
	args = append(args, len(lists)+3) // key count: the script takes a variable number
	for _, l := range lists {
		args = append(args, l)
	}
	args = append(args, b.key(unackedKey), b.key(unackedIndexKey), b.key(b.opts.DeadLetterKey),
		c.leaseScore(now), pyfmt.ISOFormat(now), limit, b.key(deliveryCountPrefix), len(queues))
	for _, q := range queues {
		args = append(args, q)
	}
	hits, err := redis.Values(popAndHold.DoContext(ctx, conn, args...))
	if err != nil && !errors.Is(err, redis.ErrNil) {
		return nil, fmt.Errorf("protocol: fetch from %v: %w", queues, err)
	}
	if len(hits) >= 4 {
		out := make([]*Delivery, 0, len(hits)/4)
		for h := 0; h+3 < len(hits); h += 4 {
			i, _ := redis.Int(hits[h], nil)
			raw, _ := redis.Bytes(hits[h+1], nil)
			tag, _ := redis.String(hits[h+2], nil)
			starts, _ := redis.Int(hits[h+3], nil)
			if i < 1 || i > len(queues) {
				return out, fmt.Errorf("protocol: fetch: pop script returned queue %d of %d", i, len(queues))
			}
			queue := queues[i-1]
			c.rotate(queue)
			if tag == "" {
				out = append(out, c.deadLettered(queue, raw))
				continue
			}
			d := &Delivery{Queue: queue, Raw: raw, Tag: tag, Starts: starts}
			d.Message, d.Err = Decode(raw)
			out = append(out, d)
		}
		return out, nil
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
	if !c.current(call) {
		return nil, nil
	}
	// The client id lets RemoveQueueWait wake this BRPOP (CLIENT UNBLOCK)
	// instead of waiting out its timeout. CLIENT ID goes in the same round
	// trip as the BRPOP: an idle worker's fetch costs one round trip less
	// (a lone task 80 ms away from Redis was 4 round trips from publish to
	// result, one of them this).
	if err := conn.Send("CLIENT", "ID"); err != nil {
		return nil, fmt.Errorf("protocol: fetch from %v: %w", queues, err)
	}
	if err := conn.Send("BRPOP", keys...); err != nil {
		return nil, fmt.Errorf("protocol: fetch from %v: %w", queues, err)
	}
	if err := conn.Flush(); err != nil {
		return nil, fmt.Errorf("protocol: fetch from %v: %w", queues, err)
	}
	if id, err := redis.Int64(redis.ReceiveWithTimeout(conn, timeout+5*time.Second)); err == nil {
		c.blocking(call, id)
	}
	// The BRPOP's reply is read whatever CLIENT ID answered: it may carry
	// a popped message (a broken connection fails both reads).
	reply, err := redis.Values(redis.ReceiveWithTimeout(conn, timeout+5*time.Second))
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
	d, err := c.deliver(ctx, queue, raw)
	if d == nil {
		return nil, err
	}
	return []*Delivery{d}, err
}

// deadLettered is the Delivery for an envelope the pop script could not
// hold and moved to the dead-letter list.
func (c *Consumer) deadLettered(queue string, raw []byte) *Delivery {
	d := &Delivery{Queue: queue, Raw: raw, deadLettered: true}
	_, _, _, _, d.Err = envelopeInfo(raw)
	if d.Err == nil {
		// Go can read what Redis's cjson could not (deeper nesting, say).
		d.Err = &DecodeError{Reason: "invalid-json", Err: errors.New("Redis's Lua JSON decoder cannot read the envelope, so it cannot be held")}
	}
	c.b.opts.Logger.Warn().Str("queue", queue).Str("reason", reasonOf(d.Err)).Str("dead_letter_list", c.b.opts.DeadLetterKey).
		Msg("moved an undecodable message to the dead-letter list")
	return d
}

// deliver turns an envelope popped by BRPOP into a held Delivery, with
// the same Lua step the fast path runs per message.
func (c *Consumer) deliver(ctx context.Context, queue string, raw []byte) (*Delivery, error) {
	b := c.b
	var tag string
	var starts int
	err := c.persist(ctx, func(ctx context.Context) error {
		conn, err := b.conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		now := b.opts.Clock.Now()
		res, err := redis.Values(holdPopped.DoContext(ctx, conn,
			b.key(unackedKey), b.key(unackedIndexKey), b.key(b.opts.DeadLetterKey),
			c.leaseScore(now), pyfmt.ISOFormat(now), b.key(deliveryCountPrefix), raw, queue))
		if err != nil {
			return fmt.Errorf("protocol: hold a message from %s: %w", queue, err)
		}
		if len(res) != 2 {
			return fmt.Errorf("protocol: hold a message from %s: unexpected reply of %d elements", queue, len(res))
		}
		tag, _ = redis.String(res[0], nil)
		starts, _ = redis.Int(res[1], nil)
		return nil
	})
	if err != nil {
		b.opts.Logger.Error().Err(err).Str("queue", queue).Str("raw", string(raw)).
			Msg("could not record a fetched message in unacked; pushing it back")
		_ = c.persist(ctx, func(ctx context.Context) error { return b.pushBack(ctx, queue, raw) })
		return nil, err
	}
	if tag == "" {
		return c.deadLettered(queue, raw), nil
	}
	d := &Delivery{Queue: queue, Raw: raw, Tag: tag, Starts: starts}
	d.Message, d.Err = Decode(raw)
	return d, nil
}

// pushBack returns a popped message to the head of its priority list, where
// it was: the last resort when it cannot be held.
func (b *Broker) pushBack(ctx context.Context, queue string, raw []byte) error {
	_, pri, _, _, _ := envelopeInfo(raw)
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
