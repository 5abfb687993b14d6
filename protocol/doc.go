// Package protocol speaks Celery's wire protocol over Redis, byte-compatible
// with Celery 5.2+ and kombu: task messages (protocol v1, v2 and the hybrid
// form), the kombu Redis transport with its priority lists and ack emulation,
// the Redis result backend, events and the pidbox remote-control mailbox.
//
// It knows nothing of MoRAG. The layers are:
//
//   - message.go, encode.go, decode.go, kombujson.go: the codec. A Message is
//     one task; Encode turns it into the kombu envelope that is LPUSHed, and
//     Decode turns any envelope a Python or Go producer wrote back into one.
//   - broker*.go: the transport. Every Redis state change of a delivery
//     (publish, fetch into unacked, ack, requeue, lease refresh, restore,
//     dead-letter) lives there, atomic through MULTI or Lua.
//   - backend.go: celery-task-meta-<id> results, stored with SETEX+PUBLISH and
//     awaited by SUBSCRIBE.
//   - client.go: Send a task, get an AsyncResult.
//   - events.go, pidbox.go: the celeryev fanout and the celery.pidbox mailbox.
package protocol
