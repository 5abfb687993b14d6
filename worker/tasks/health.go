package tasks

import (
	"context"

	"morag-gpu/contract"
	"morag-gpu/worker/runner"
)

// HealthCheck is MoRAG's health task name; the Go worker always serves it.
const HealthCheck = contract.HealthCheckTask

// RegisterHealth adds morag.worker.health_check_task(), which returns
// {"status": "healthy", "worker": hostname, "gpu": Config.Info["gpu"] or
// false, "queues": [...]}.
func RegisterHealth(mux *runner.Mux) {
	mux.HandleFunc(HealthCheck, healthCheck)
}

func healthCheck(_ context.Context, t *runner.Task) (any, error) {
	gpu, ok := t.Info["gpu"]
	if !ok || gpu == nil {
		gpu = false
	}
	queues := t.ConsumerQueues()
	if queues == nil {
		queues = []string{}
	}
	return map[string]any{
		"status": "healthy",
		"worker": t.Hostname,
		"gpu":    gpu,
		"queues": queues,
	}, nil
}
