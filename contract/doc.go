// Package contract owns every name the MoRAG processes share: the queues
// the gateway routes to and the workers consume, the task names both sides
// spell, the Go worker's identity in events and `inspect stats`, and
// MoRAG's own Redis keys. A name that crosses a process boundary is built
// here and nowhere else, so the gateway, the Go worker and the fleet
// directory cannot drift apart, and docs/redis-keys.md is checked against
// these builders by a test.
//
// Celery's and kombu's own keys (queues' priority bands, unacked,
// bindings, celery-task-meta-<id>, events and pidbox channels) are not
// MoRAG's: they live in the protocol package, which knows nothing of
// MoRAG.
package contract
