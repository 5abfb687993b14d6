package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/protocol"
)

// sleepCtx sleeps for d or until ctx ends; it reports whether it slept the
// whole time. It sleeps on the wall clock, not Config.Clock: it paces
// retries against a real Redis, which a fake clock would stall.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// persist runs op until it succeeds or ctx ends, backing off between
// attempts (100ms doubling to 5s). It is how the worker keeps a task in hand through a Redis
// outage: a result, ack or publish is retried rather than dropped.
func persist(ctx context.Context, log zerolog.Logger, what string, op func(context.Context) error) error {
	var b protocol.Backoff
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil {
			if attempt > 1 {
				log.Info().Int("attempts", attempt).Msg(what + " succeeded after retrying")
			}
			return nil
		}
		if permanent(err) {
			log.Error().Err(err).Msg(what + " was refused; not retrying")
			return fmt.Errorf("%s: %w", what, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, context.Cause(ctx))
		}
		d := b.Next()
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", d).Msg(what + " failed; keeping the task in hand and retrying")
		if !sleepCtx(ctx, d) {
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, context.Cause(ctx))
		}
	}
}
