package contract

import "strings"

// DefaultQueue is Celery's default queue, where everything goes that is not
// routed to a user's GPU queue, and where Python MoRAG workers listen.
const DefaultQueue = "celery"

// The per-user queue prefixes, as MoRAG names them.
const (
	gpuQueuePrefix = "gpu-tasks-"
	cpuQueuePrefix = "cpu-tasks-"
)

// QueueKind says whose hardware a per-user queue is for.
type QueueKind string

// The kinds of per-user queue.
const (
	GPU QueueKind = "gpu"
	CPU QueueKind = "cpu"
)

// GPUQueue is the queue a user's GPU workers consume. Callers must have
// checked userID (auth.ValidateUserID): it becomes part of a Redis key.
func GPUQueue(userID string) string { return gpuQueuePrefix + userID }

// CPUQueue is the queue a user's CPU workers consume.
func CPUQueue(userID string) string { return cpuQueuePrefix + userID }

// ParseUserQueue is the inverse of GPUQueue and CPUQueue: ok is false for
// any other queue (DefaultQueue, a name without a user).
func ParseUserQueue(q string) (kind QueueKind, userID string, ok bool) {
	if u, found := strings.CutPrefix(q, gpuQueuePrefix); found && u != "" {
		return GPU, u, true
	}
	if u, found := strings.CutPrefix(q, cpuQueuePrefix); found && u != "" {
		return CPU, u, true
	}
	return "", "", false
}

// IsGPUQueue reports whether q is some user's GPU queue.
func IsGPUQueue(q string) bool {
	kind, _, ok := ParseUserQueue(q)
	return ok && kind == GPU
}
