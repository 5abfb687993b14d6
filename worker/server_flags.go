package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/remote"
	"morag-gpu/worker/runner"
)

// serverFlags select a gateway-mediated worker: tasks, leases, results and
// events go through the gateway's worker API with MORAG_API_KEY, and the
// worker needs no Redis credentials.
type serverFlags struct {
	server *string
	wait   *time.Duration
}

func registerServerFlags(fs *flag.FlagSet) serverFlags {
	return serverFlags{
		server: fs.String("server", os.Getenv("MORAG_SERVER"), "gateway URL (https://gateway.example): take tasks through the gateway with MORAG_API_KEY instead of Redis (env MORAG_SERVER)"),
		wait:   fs.Duration("server-wait", 10*time.Second, "with -server: how long one fetch long-polls the gateway (the gateway caps it)"),
	}
}

// direct reports whether the worker talks to Redis itself (no -server).
// The fleet directory behind -forward-only-to-live reads Redis, so a
// gateway-mediated worker forwards without it.
func (f serverFlags) direct() bool { return *f.server == "" }

// redisOnly are the flags that name Redis or its keys: with -server the
// gateway's apply, and giving them is a mistake worth stopping for.
var redisOnly = []string{"redis", "redis-master-name", "key-prefix", "result-key-prefix"}

// check refuses -server together with a Redis flag.
func (f serverFlags) check(fs *flag.FlagSet, log zerolog.Logger) error {
	if *f.server == "" {
		return nil
	}
	var bad []string
	fs.Visit(func(fl *flag.Flag) {
		for _, n := range redisOnly {
			if fl.Name == n {
				bad = append(bad, "-"+n)
			}
		}
	})
	if len(bad) > 0 {
		return fmt.Errorf("-server %s takes tasks through the gateway, which owns the Redis side; drop %v (a worker has either a gateway URL and MORAG_API_KEY, or a Redis URL)", *f.server, bad)
	}
	if os.Getenv("MORAG_API_KEY") == "" {
		return errors.New("-server needs an API key: set MORAG_API_KEY to a key of the user whose queues this worker consumes")
	}
	if os.Getenv("MAIN_SERVER_URL") == "" {
		// Results and proxies are uploaded to the same gateway.
		_ = os.Setenv("MAIN_SERVER_URL", *f.server)
	}
	if os.Getenv("REDIS_URL") != "" {
		log.Warn().Msg("REDIS_URL is ignored with -server: the gateway owns the Redis side")
	}
	return nil
}

// transport returns runner.Config.NewTransport for -server, or nil for
// direct Redis.
func (f serverFlags) transport(log zerolog.Logger) func(runner.TransportConfig) (runner.Transport, error) {
	if *f.server == "" {
		return nil
	}
	return func(tc runner.TransportConfig) (runner.Transport, error) {
		c, err := remote.NewClient(remote.ClientOptions{
			Server: *f.server, APIKey: os.Getenv("MORAG_API_KEY"), Hostname: tc.Hostname, Queues: tc.Queues,
			Wait: *f.wait, Logger: tc.Logger,
		})
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		vt, err := c.Hello(ctx)
		var refused *remote.Refused
		switch {
		case errors.As(err, &refused):
			return nil, fmt.Errorf("the gateway at %s refused this worker: %s", *f.server, refused.Detail)
		case err != nil:
			log.Warn().Err(err).Str("server", *f.server).Msg("the gateway did not answer yet; retrying while starting")
		case vt > 0 && vt < tc.VisibilityTimeout:
			return nil, fmt.Errorf("the gateway's visibility timeout is %s, shorter than this worker's %s: leases would lapse; start the worker with -visibility-timeout %s", vt, tc.VisibilityTimeout, vt)
		}
		return c, nil
	}
}
