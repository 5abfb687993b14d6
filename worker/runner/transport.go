package runner

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/protocol"
)

// Transport is everything the runner needs from the outside world: the
// broker (fetch and hold, leases, settling a held message), the result
// backend, events and remote control. The Redis transport (the default,
// from Config.RedisURL) talks to Redis directly; Config.NewTransport
// plugs in another one, such as the gateway-mediated HTTP client of
// package remote. Handlers never see which one runs them.
//
// The semantics are those of the protocol package's methods of the same
// names (protocol.Broker, protocol.Consumer, protocol.Backend,
// protocol.EventDispatcher, protocol.Mailbox): a message is held before
// it runs, acked late, its lease refreshed while in hand, and one that
// is never acked returns to its queue after the visibility timeout.
type Transport interface {
	// Consuming.
	Queues() []string
	AddQueue(queue string)
	RemoveQueueWait(ctx context.Context, queue string) (bool, error)
	DeclareQueue(ctx context.Context, queue string) error
	FetchN(ctx context.Context, timeout time.Duration, max int) ([]*protocol.Delivery, error)

	// Leases.
	Touch(ctx context.Context, tags ...string) error
	Held(ctx context.Context, tag string) (bool, error)
	RestoreExpired(ctx context.Context) (int, error)

	// Settling a held message.
	Commit(ctx context.Context, ops []protocol.CommitOp) ([]protocol.CommitStatus, error)
	Ack(ctx context.Context, tag string) (bool, error)
	Restore(ctx context.Context, tag string) error
	RestoreStarted(ctx context.Context, tag string) error
	Forward(ctx context.Context, tag, queue string, envelope []byte, priority int) (bool, error)
	DeadLetter(ctx context.Context, d *protocol.Delivery, reason string) error
	Poison(ctx context.Context, d *protocol.Delivery, req *protocol.StoreRequest, reason string) (bool, error)
	// DeadLetterList names the list dead letters go to, for messages.
	DeadLetterList() string

	// Results and new messages.
	Store(ctx context.Context, req protocol.StoreRequest) error
	Publish(ctx context.Context, queue string, envelope []byte, priority int) error
	ChordPartReturn(ctx context.Context, part protocol.ChordPart) (*protocol.ChordJoin, error)
	SavedGroupResult(ctx context.Context, gid string) (bool, error)
	ChordCleanup(ctx context.Context, gid string) error

	// Events: EncodeEvent builds one for a group commit (CommitPublish),
	// SendEvent sends one now. Clock is the Lamport clock they share with
	// remote control.
	EncodeEvent(typ string, fields map[string]any) (channel string, envelope []byte, err error)
	SendEvent(ctx context.Context, typ string, fields map[string]any) error
	Clock() int64

	// Remote control: HandleControl registers a command before RunControl
	// serves them until ctx ends; ControlReady is closed once commands can
	// be heard.
	HandleControl(method string, h protocol.ControlHandler)
	RunControl(ctx context.Context) error
	ControlReady() <-chan struct{}

	// Close releases the transport's connections; Run calls it last.
	Close() error
}

// TransportConfig is what Config.NewTransport is given: the server's
// settings once defaults are filled in.
type TransportConfig struct {
	Hostname          string
	Queues            []string
	VisibilityTimeout time.Duration
	ResultExpires     time.Duration
	Logger            zerolog.Logger
}

// permanent reports whether err says that retrying cannot help: a
// transport's refusal (the gateway's 403) implements Permanent() bool.
func permanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}
