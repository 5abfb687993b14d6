package runner

import (
	"context"
	"time"

	"morag-gpu/internal/clock"
	"morag-gpu/protocol"
)

// restoreInterval is how often expired unacked messages of crashed
// consumers are restored (kombu's sweep, without its 10x throttle), or
// half the visibility timeout when that is shorter, so that a short
// timeout brings a dead worker's messages back about as soon as it says.
const restoreInterval = 10 * time.Second

func (s *Server) restoreEvery() time.Duration {
	return min(restoreInterval, max(time.Second, s.cfg.VisibilityTimeout/2))
}

// touchBatch bounds one lease refresh command.
const touchBatch = 500

// leaseLoop refreshes the unacked score of every held message (running,
// reserved or waiting for its ETA) every VisibilityTimeout/3, so that no
// restorer, Python's included, takes them for lost while they are in hand.
// When refreshing fails for longer than the visibility timeout, the
// watcher it runs abandons those messages (leaseloss.go).
func (s *Server) leaseLoop(ctx context.Context) {
	w := newLeaseWatch(s.cfg.Clock.Now())
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { // owner: leaseLoop, which stops and waits for it
		defer close(watched)
		s.watchLeases(watchCtx, w)
	}()
	defer func() { stopWatch(); <-watched }()
	period := s.cfg.VisibilityTimeout / 3
	t := s.cfg.Clock.NewTicker(period)
	defer t.Stop()
	// After a failed round the refresh is retried soon, backing off to a
	// quarter period, rather than a whole period later: a blip of Redis
	// or of the link at the moment of a refresh would otherwise cost a
	// third of the lease, and two of them most of it.
	bo := protocol.Backoff{Min: min(100*time.Millisecond, period/8), Max: max(period/4, time.Millisecond)}
	var retry clock.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-retryC:
		}
		start := s.cfg.Clock.Now()
		ok := s.touchHeld(ctx)
		w.round(start, ok)
		switch {
		case ok:
			bo.Reset()
			if retry != nil {
				retry.Stop()
			}
			retryC = nil
		case retry == nil:
			retry = s.cfg.Clock.NewTimer(bo.Next())
			retryC = retry.C()
		default:
			retry.Reset(bo.Next())
			retryC = retry.C()
		}
	}
}

// touchHeld refreshes every held message's lease and reports whether all
// refreshes succeeded.
func (s *Server) touchHeld(ctx context.Context) bool {
	s.mu.Lock()
	tags := make([]string, 0, len(s.held))
	for tag := range s.held {
		tags = append(tags, tag)
	}
	s.mu.Unlock()
	for len(tags) > 0 {
		n := min(len(tags), touchBatch)
		tctx, cancel := context.WithTimeout(ctx, s.cfg.VisibilityTimeout/3)
		err := s.tr.Touch(tctx, tags[:n]...)
		cancel()
		s.cfg.Observer.LeaseRefreshed(n, err)
		if err != nil {
			s.log.Warn().Err(err).Int("messages", len(tags)).Msg("could not refresh the lease of held messages; retrying soon")
			return false
		}
		tags = tags[n:]
	}
	return true
}

// restoreLoop restores expired unacked messages and re-declares the
// consumed queues (bindings vanish when Redis restarts empty) every 10 s.
func (s *Server) restoreLoop(ctx context.Context) {
	t := s.cfg.Clock.NewTicker(s.restoreEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			s.restoreExpired(ctx)
			for _, q := range s.queues() {
				if err := s.tr.DeclareQueue(ctx, q); err != nil {
					s.log.Debug().Err(err).Str("queue", q).Msg("could not declare queue")
					break
				}
			}
		}
	}
}

func (s *Server) restoreExpired(ctx context.Context) {
	n, err := s.tr.RestoreExpired(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn().Err(err).Msg("could not restore expired unacked messages; retrying in 10s")
	case n > 0:
		s.log.Warn().Int("messages", n).Msg("restored unacknowledged messages whose visibility timeout passed (a consumer died holding them)")
	}
}
