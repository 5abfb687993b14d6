package protocol

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// defaultPublishLanes is BrokerOptions.PublishLanes's default. Up to four
// publishers never wait for one another (a client sending from a few
// goroutines sees no change); the sixteen concurrent requests of a loaded
// gateway go in batches. Measured on 2 cores: sixteen goroutines
// publishing 66-69k -> 85-102k/s (BenchmarkPublishParallel), the gateway rows of
// test/bench +5-9% in each of four alternating rounds (one lane: no
// better than none, the batch waiting for one round trip at a time).
const defaultPublishLanes = 4

// Batch bounds: a batch is one pipelined write, so a burst of large
// envelopes is split rather than buffered whole.
const (
	maxPublishBatch      = 64
	maxPublishBatchBytes = 1 << 20
)

// Command is one Redis command, for PublishWith.
type Command struct {
	Name string
	Args []any
}

// Publish LPUSHes an encoded envelope onto queue's list for priority,
// declaring the queue's binding on first use as kombu does.
func (b *Broker) Publish(ctx context.Context, queue string, envelope []byte, priority int) error {
	return b.PublishWith(ctx, queue, envelope, priority)
}

// PublishWith publishes like Publish and runs also in the same MULTI/EXEC,
// so the message and the caller's own bookkeeping about it (who owns the
// task, say) are written together: no consumer can see the message before
// the bookkeeping exists, and a failed write is reported, not lost.
//
// When BrokerOptions.PublishLanes publishes are already in flight, this
// one waits for the next free lane and goes with the others that queued
// meanwhile, each still its own transaction with its own outcome. A
// context that ends while the publish waits for a lane returns its error
// and nothing is written; one that ends while its batch is being written
// returns its error as a publish cut short does (the message may be
// queued).
func (b *Broker) PublishWith(ctx context.Context, queue string, envelope []byte, priority int, also ...Command) error {
	if queue == "" {
		return errors.New("protocol: publish: empty queue name")
	}
	_, declared := b.declared.Load(queue)
	r := &publishReq{
		ctx:      ctx,
		queue:    queue,
		list:     b.key(b.QueueForPriority(queue, priority)),
		envelope: envelope,
		also:     also,
		declare:  !declared,
	}
	return b.lanes.publish(b, r)
}

// publishMessage encodes m and publishes it to m.RoutingKey (or "celery").
func (b *Broker) publishMessage(ctx context.Context, m *Message) error {
	env, err := Encode(m)
	if err != nil {
		return err
	}
	return b.Publish(ctx, m.RoutingKey, env, m.Priority)
}

// publishLanes is group commit for publishes. A publisher that finds a
// free lane writes at once, on its own goroutine; the others queue, and
// the lane's holder, once its write is answered, hands the lane and
// everything queued to the first publisher in the queue, which writes
// them as one batch. No goroutine is started: every write runs on the
// goroutine of a publisher that is waiting for it anyway.
type publishLanes struct {
	limit    int // < 0: no limit
	mu       sync.Mutex
	inflight int
	queued   []*publishReq
}

// publishReq is one publish and, once written, its outcome.
type publishReq struct {
	ctx      context.Context
	queue    string
	list     string
	envelope []byte
	also     []Command
	declare  bool // SADD the binding too

	replies int   // how many replies its commands get, set when sent
	err     error // set by the write, read after done or by the writer itself
	// state and the queued slice are guarded by publishLanes.mu.
	state publishState
	// done carries nil when err is set, or the batch this request must
	// now write (its first element). Buffered: a writer never blocks on a
	// publisher that gave up.
	done chan []*publishReq
}

type publishState uint8

const (
	publishQueued  publishState = iota // in publishLanes.queued
	publishTaken                       // in a batch being written
	publishLeading                     // must write the batch sent on done
)

func (l *publishLanes) publish(b *Broker, r *publishReq) error {
	l.mu.Lock()
	if l.limit < 0 || l.inflight < l.limit {
		l.inflight++
		l.mu.Unlock()
		l.write(b, []*publishReq{r})
		return r.err
	}
	r.done = make(chan []*publishReq, 1)
	l.queued = append(l.queued, r)
	l.mu.Unlock()

	select {
	case batch := <-r.done:
		if batch != nil {
			l.write(b, batch)
		}
		return r.err
	case <-r.ctx.Done():
	}
	l.mu.Lock()
	switch r.state {
	case publishQueued: // never written
		l.queued = slices.DeleteFunc(l.queued, func(q *publishReq) bool { return q == r })
		l.mu.Unlock()
		return fmt.Errorf("protocol: publish to %s: %w", r.queue, r.ctx.Err())
	case publishTaken:
		l.mu.Unlock()
		select {
		case <-r.done: // written just now: its outcome is known
			return r.err
		default: // being written: its outcome is unknown
			return fmt.Errorf("protocol: publish to %s: %w", r.queue, r.ctx.Err())
		}
	}
	l.mu.Unlock()
	// Leading: the batch is on its way and nobody else will write it.
	l.write(b, <-r.done)
	return r.err
}

// write writes batch (batch[0] is the caller's own request), answers the
// others, and passes the lane on: to the first queued publisher with the
// next batch, or back to the pool of free lanes.
func (l *publishLanes) write(b *Broker, batch []*publishReq) {
	b.writePublishes(batch)
	for _, r := range batch[1:] {
		r.done <- nil
	}
	l.mu.Lock()
	if len(l.queued) == 0 {
		l.inflight--
		l.mu.Unlock()
		return
	}
	n, size := 0, 0
	for n < len(l.queued) && n < maxPublishBatch && (n == 0 || size+len(l.queued[n].envelope) <= maxPublishBatchBytes) {
		size += len(l.queued[n].envelope)
		n++
	}
	next := slices.Clone(l.queued[:n])
	l.queued = slices.Delete(l.queued, 0, n)
	next[0].state = publishLeading
	for _, r := range next[1:] {
		r.state = publishTaken
	}
	l.mu.Unlock()
	next[0].done <- next
}

// writePublishes writes the batch's live requests in one pipelined round
// trip, each the plain LPUSH or MULTI/EXEC a lone publish would send, and
// sets each request's err.
func (b *Broker) writePublishes(batch []*publishReq) {
	// A request whose publisher has given up is not sent.
	live := batch
	if slices.ContainsFunc(batch, func(r *publishReq) bool { return r.ctx.Err() != nil }) {
		live = nil
		for _, r := range batch {
			if err := r.ctx.Err(); err != nil {
				r.err = fmt.Errorf("protocol: publish to %s: %w", r.queue, err)
				continue
			}
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := batchContext(live)
	defer cancel()
	fail := func(err error) {
		for _, r := range live {
			r.err = fmt.Errorf("protocol: publish to %s: %w", r.queue, err)
		}
	}
	c, err := b.conn(ctx)
	if err != nil {
		for _, r := range live {
			r.err = err
		}
		return
	}
	defer c.Close()
	for _, r := range live {
		b.sendPublish(c, r)
	}
	if b.opts.MinReplicas > 0 {
		_ = c.Send("WAIT", b.opts.MinReplicas, b.opts.ReplicaWait.Milliseconds())
	}
	replies, err := redis.Values(redis.DoContext(c, ctx, ""))
	if err != nil {
		fail(err)
		return
	}
	for _, r := range live {
		r.err = publishOutcome(r.queue, replies[:r.replies])
		replies = replies[r.replies:]
		if r.err == nil && r.declare {
			b.declared.Store(r.queue, struct{}{})
		}
	}
	if b.opts.MinReplicas > 0 {
		b.replicated(live, replies[0])
	}
}

// sendPublish queues r's commands on c, the plain LPUSH or the MULTI/EXEC
// a lone publish sends, and records how many replies they will have.
func (b *Broker) sendPublish(c redis.Conn, r *publishReq) {
	if !r.declare && len(r.also) == 0 {
		_ = c.Send("LPUSH", r.list, r.envelope)
		r.replies = 1
		return
	}
	_ = c.Send("MULTI")
	if r.declare {
		_ = c.Send("SADD", b.key(bindingKey(r.queue)), bindingMember(r.queue))
	}
	for _, cmd := range r.also {
		_ = c.Send(cmd.Name, cmd.Args...)
	}
	_ = c.Send("LPUSH", r.list, r.envelope)
	_ = c.Send("EXEC")
	r.replies = 3 + len(r.also) // MULTI, LPUSH, EXEC and the caller's
	if r.declare {
		r.replies++
	}
}

// batchContext is the context a batch is written under: no one
// publisher's cancellation stops the others' writes, and the write may
// run until the latest deadline among them (none if one has none, and
// then commandTimeout bounds it). A lone request is written under its own
// context, exactly as before batching.
func batchContext(live []*publishReq) (context.Context, context.CancelFunc) {
	if len(live) == 1 {
		return live[0].ctx, func() {}
	}
	var latest time.Time
	for _, r := range live {
		dl, ok := r.ctx.Deadline()
		if !ok {
			return context.WithoutCancel(live[0].ctx), func() {}
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(context.WithoutCancel(live[0].ctx), latest)
}

// publishOutcome reads one request's replies: a plain LPUSH's one, or
// MULTI, each queued command's and EXEC's.
func publishOutcome(queue string, replies []any) error {
	if len(replies) == 1 {
		if rerr, ok := replies[0].(redis.Error); ok {
			return fmt.Errorf("protocol: publish to %s: %w", queue, rerr)
		}
		return nil
	}
	for _, q := range replies[1 : len(replies)-1] {
		if rerr, ok := q.(redis.Error); ok {
			return fmt.Errorf("protocol: publish to %s: a command in the transaction was refused: %w", queue, rerr)
		}
	}
	exec, err := redis.Values(replies[len(replies)-1], nil)
	if err != nil {
		return fmt.Errorf("protocol: publish to %s: %w", queue, err)
	}
	for _, v := range exec {
		if rerr, ok := v.(redis.Error); ok {
			return fmt.Errorf("protocol: publish to %s: a command in the transaction failed: %w", queue, rerr)
		}
	}
	return nil
}

// replicated applies WAIT's reply to every request the batch queued: WAIT
// covers everything the connection wrote before it.
func (b *Broker) replicated(live []*publishReq, reply any) {
	got, err := redis.Int(reply, nil)
	for _, r := range live {
		switch {
		case r.err != nil:
		case err != nil:
			r.err = fmt.Errorf("protocol: publish to %s: queued on the master, but WAIT for replicas failed: %w", r.queue, err)
		case got < b.opts.MinReplicas:
			r.err = &ReplicationError{Queue: r.queue, Want: b.opts.MinReplicas, Got: got}
		}
	}
}
