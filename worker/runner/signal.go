package runner

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// RunWithSignals runs the server until ctx ends or the process gets
// SIGINT or SIGTERM. The first signal starts a graceful shutdown (see
// Run); a second one stops waiting for running tasks, requeues them and
// returns at once, like Celery's cold shutdown.
func (s *Server) RunWithSignals(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	done := make(chan struct{})
	defer close(done)
	go func() { // owner: RunWithSignals; ends with it
		received := 0
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				received++
				if received == 1 {
					s.log.Warn().Str("signal", sig.String()).Msg("warm shutdown: finishing running tasks (signal again to requeue them and exit now)")
					cancel()
				} else {
					s.log.Warn().Str("signal", sig.String()).Msg("cold shutdown: requeueing running tasks and exiting")
					s.abort()
				}
			}
		}
	}()
	return s.Run(ctx)
}
