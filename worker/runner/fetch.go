package runner

import (
	"context"
	"errors"
	"time"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol"
)

// fetchTimeout is how long one fetch blocks (kombu's brpop_timeout); it
// also bounds how long a stop request waits for the fetch loop.
const fetchTimeout = time.Second

// maxFetchers bounds the fetch loops that run side by side. Each fetch
// takes a whole batch of messages in one round trip; a second loop keeps
// the slots fed while the first one's reply travels, and an idle loop holds
// a connection in BRPOP.
const maxFetchers = 2

// maxFetchBatch bounds the messages one fetch takes.
const maxFetchBatch = 64

// fetchers is how many fetch loops Run starts: one per slot up to
// maxFetchers. A single slot gets a single loop, so it runs tasks in queue
// order.
func (s *Server) fetchers() int {
	return max(1, min(s.cfg.Concurrency, maxFetchers))
}

// limit is how many messages may be running or waiting for a slot.
func (s *Server) limitLocked() int { return s.concurrency + s.prefetch }

// fetchLoop takes messages while the prefetch limit allows, until stopCtx
// ends. Several loops may run: each counts the messages its fetch may
// bring against the limit before it starts, so together they never hold
// more than Concurrency+Prefetch messages that are running or waiting for
// a slot. Finished tasks whose result and ack are still on their way to
// Redis (committing) have an allowance of their own, as large as the
// limit, and count against it only beyond that: they hoard no work other
// workers could run, and counting them kept every message in the room for
// a third round trip, which halved the batches (a drain of no-op tasks ran
// ~25% faster without it: BenchmarkServerDrain). The allowance still
// bounds what a stalled commit can pile up. A fetch asks for all the room
// there is (a batch), but does not wait for room to grow while slots have
// nothing to do. The fetch itself runs under ioCtx: a fetch is never
// abandoned half way, so a message popped during shutdown is still
// recorded as held and requeued rather than lost.
func (s *Server) fetchLoop(stopCtx, ioCtx context.Context) {
	var b protocol.Backoff
	for {
		want := 0
		canFetch := s.waitFor(stopCtx, fetchWaiter, func() bool {
			if s.stopping {
				return false
			}
			limit := s.limitLocked()
			room := limit - s.active - len(s.ready) - s.fetching - s.rateWaiting - max(0, s.committing-limit)
			// Under load, let room accumulate to a quarter of the limit
			// while slots still have work queued, so that fetches come in
			// batches rather than one message per round trip.
			if room > 0 && (len(s.ready) == 0 || room >= max(1, limit/4)) {
				want = min(room, maxFetchBatch)
				s.fetching += want
				return true
			}
			return false
		})
		if !canFetch {
			return
		}
		ds, err := s.tr.FetchN(ioCtx, fetchTimeout, want)
		for _, d := range ds {
			s.receive(stopCtx, ioCtx, d)
		}
		// Released only after receive has queued the messages, so that the
		// limit never reads low in between.
		s.mu.Lock()
		s.fetching -= want
		s.wakeFetchersLocked()
		s.mu.Unlock()
		if err != nil {
			if stopCtx.Err() != nil {
				return
			}
			wait := b.Next()
			s.log.Warn().Err(err).Dur("retry_in", wait).Msg("fetching from Redis failed; reconnecting")
			if !sleepCtx(stopCtx, wait) {
				return
			}
			continue
		}
		b.Reset()
	}
}

// receive decides what to do with a fetched message: dead-letter, forward,
// revoke, hold for its ETA or queue it for a slot.
func (s *Server) receive(stopCtx, ioCtx context.Context, d *protocol.Delivery) {
	now := s.cfg.Clock.Now()
	if d.Err != nil || d.Message == nil {
		s.deadLetter(ioCtx, d)
		return
	}
	msg := d.Message
	log := s.log.With().Str("task_id", msg.ID).Str("task", msg.Task).Str("queue", d.Queue).Logger()
	r := newRequest(d, s.handlerFor(msg), log, now)
	s.hold(r)
	s.cfg.Observer.TaskReceived(msg.Task)
	log.Info().Int("retries", msg.Retries).Msg("task received")

	if m := s.cfg.MaxDeliveries; m > 0 && d.Starts >= m {
		r.transition(stateActive, stateReserved)
		s.poison(ioCtx, r)
		return
	}

	if r.handler == nil {
		s.unknownTask(ioCtx, r)
		return
	}
	expired := r.expired(now)
	if expired || s.revoked.Contains(now, msg.ID) {
		if expired {
			s.revoked.Add(now, msg.ID)
		}
		r.transition(stateDone, stateReserved)
		s.revoke(ioCtx, r, revokeReason(expired), false, nil)
		return
	}
	if s.taskEvents.Load() { // the reprs cost more than the rest of receive
		s.taskEvent("task-received", map[string]any{
			"uuid":      msg.ID,
			"name":      r.name(),
			"args":      argsRepr(msg),
			"kwargs":    kwargsRepr(msg),
			"root_id":   nullIfEmpty(msg.RootID),
			"parent_id": nullIfEmpty(msg.ParentID),
			"retries":   msg.Retries,
			"eta":       isoOrNil(msg.ETA),
			"expires":   isoOrNil(msg.Expires),
		})
	}
	if msg.ETA != nil && msg.ETA.After(now) {
		r.mu.Lock()
		r.state = stateScheduled
		r.mu.Unlock()
		log.Info().Time("eta", *msg.ETA).Msg("task scheduled for its ETA")
		s.work.Go(func() { s.waitETA(stopCtx, ioCtx, r, *msg.ETA) })
		return
	}
	if wait := s.rateLimitWait(r, now); wait > 0 {
		r.mu.Lock()
		r.state = stateScheduled
		r.mu.Unlock()
		s.countRateWait(r)
		s.work.Go(func() { s.waitETA(stopCtx, ioCtx, r, now.Add(wait)) })
		return
	}
	s.enqueue(r)
}

// waitETA holds a scheduled task until its ETA (its lease is refreshed by
// the lease loop meanwhile), then queues it for a slot. A task that is no
// longer in the broker's unacked set was restored by another consumer
// (e.g. one with a shorter visibility timeout): the restored copy will run,
// so this one is dropped rather than run twice.
//
// A task over its rate limit waits here too (until is its turn), as
// Python's consumer holds it in the task's bucket; a task whose ETA
// passed takes its turn under the rate limit next.
func (s *Server) waitETA(stopCtx, ioCtx context.Context, r *request, until time.Time) {
	defer s.uncountRateWait(r)
	t := s.cfg.Clock.NewTimer(until.Sub(s.cfg.Clock.Now()))
	defer t.Stop()
	wake := r.wake
	for fired := false; !fired; {
		select {
		case <-stopCtx.Done():
			return // Run requeues it
		case <-wake:
			wake = nil // revoked while waiting: re-checked below
		case <-t.C():
			fired = true
			if wait := s.rateLimitWait(r, s.cfg.Clock.Now()); wait > 0 {
				t.Reset(wait)
				fired = false
			}
		}
		now := s.cfg.Clock.Now()
		if s.revoked.Contains(now, r.msg.ID) || r.expired(now) {
			if r.transition(stateDone, stateScheduled) {
				s.revoke(ioCtx, r, revokeReason(r.expired(now)), false, nil)
			}
			return
		}
	}
	var held bool
	err := persist(stopCtx, r.log, "check the lease of an ETA task", func(ctx context.Context) error {
		var err error
		held, err = s.tr.Held(ctx, r.d.Tag)
		return err
	})
	if err != nil {
		return // shutting down: Run requeues it
	}
	if !held {
		if r.transition(stateDone, stateScheduled) {
			r.log.Warn().Msg("ETA task was restored to its queue by another consumer while it waited; dropping this copy so that it runs once")
			s.unhold(r)
		}
		return
	}
	if r.transition(stateReserved, stateScheduled) {
		s.enqueue(r)
	}
}

// deadLetter moves an envelope nobody can decode out of the way, keeping
// it for inspection, instead of dropping it as Python does.
func (s *Server) deadLetter(ctx context.Context, d *protocol.Delivery) {
	reason := "undecodable"
	var de *protocol.DecodeError
	if errors.As(d.Err, &de) && de.Reason != "" {
		reason = de.Reason
	}
	log := s.log.With().Str("queue", d.Queue).Str("delivery_tag", d.Tag).Logger()
	log.Error().Err(d.Err).Str("reason", reason).Msg("message cannot be decoded; moving it to the dead-letter list")
	if persist(ctx, log, "dead-letter an undecodable message", func(ctx context.Context) error {
		return s.tr.DeadLetter(ctx, d, reason)
	}) == nil {
		s.cfg.Observer.DeadLettered(reason)
	}
}

func revokeReason(expired bool) string {
	if expired {
		return "expired"
	}
	return "revoked"
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func isoOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return pyfmt.ISOFormat(*t)
}
