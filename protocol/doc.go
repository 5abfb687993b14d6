// Package protocol speaks Celery's wire protocol over Redis, byte-compatible
// with Celery 5.2+ and kombu: task messages (protocol v1, v2 and the hybrid
// form), the kombu Redis transport with its priority lists and ack emulation,
// the Redis result backend, events and the pidbox remote-control mailbox.
//
// It knows nothing of MoRAG. Its public surface comes in five groups:
//
//   - Client (client.go; the message in message.go, encode.go, decode.go):
//     NewClient, Client.Send and AsyncResult for callers; Message,
//     Signature, Embed, TimeLimit, SendOptions, NewTaskMessage, NewID,
//     Encode, Decode and DecodeError for code that writes or reads task
//     messages itself, as a worker does.
//   - Broker and Consumer (broker.go, consumer.go, commit.go, forward.go;
//     the connection in redis.go, redisurl.go, sentinel.go): NewBroker and
//     Broker (Publish, PublishWith with Command, DeclareQueue, QueueLength,
//     QueueForPriority, Ack, Restore, RestoreStarted, RestoreExpired,
//     Touch, Held, Forward, DeadLetter, Poison, and Commit with CommitOp,
//     CommitKind, CommitStatus and CommitEncodeError), Consumer and
//     Delivery, DefaultQueue; NewPool, ParseDB, WithMasterName, RedactURL
//     and Backoff.
//   - Backend (backend.go, result.go, chord.go): NewBackend, Backend.Store
//     and Backend.Get with StoreRequest, ResultMeta, State and TaskError;
//     EncodeResult; the chord join (ChordPart, ChordPartResult, ChordJoin
//     and Backend.ChordPartReturn, SavedGroupResult, ChordCleanup);
//     ResultListener, many waits on one connection through
//     Client.WithListener; ErrNoResult and ErrListenerClosed.
//   - Events (events.go): NewEventDispatcher and EventDispatcher (Send,
//     Encode for a group commit, Clock), ReceiveEvents and Event;
//     LamportClock and NodeOption (WithClock, WithLogger), which the
//     mailbox shares.
//   - Control (control.go, pidbox.go): NewControl and Control.Broadcast for
//     callers (celery inspect and control); NewMailbox, Mailbox,
//     ControlRequest, ReplyTo, ControlHandler and ErrNoReply for the node
//     that answers.
//
// The internals sit behind that surface: protocol/internal/kombujson is
// kombu's JSON (the codec's writer and reader and a fast parser),
// protocol/internal/fanout the envelope and json.dumps-style JSON of event
// and pidbox messages, internal/pyfmt Python's repr and isoformat both
// ways, and keys.go builds every Redis key and channel name.
//
// Every Redis write the package makes is indexed at the top of
// broker_scripts.go. The state changes that must be atomic are the Lua
// scripts in that file (fetch and hold, group commit, poison, store and
// ack, forward, result store, chord join, the restore mutex); the others
// are the MULTI blocks of broker.go (publish, ack, restore, dead letter)
// and single commands (lease refresh, queue declaration, forget, chord
// cleanup, event and pidbox publishes, bindings and replies), each listed
// there with its file.
package protocol
