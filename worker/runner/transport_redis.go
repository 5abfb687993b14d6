package runner

import (
	"context"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/protocol"
)

// redisTransport is the default Transport: the protocol package on a
// Redis pool, as the runner has always used it.
type redisTransport struct {
	pool     *redis.Pool
	db       int
	broker   *protocol.Broker
	backend  *protocol.Backend
	consumer *protocol.Consumer
	events   *protocol.EventDispatcher
	mailbox  *protocol.Mailbox
}

func newRedisTransport(cfg Config, pool *redis.Pool, db int) *redisTransport {
	log := cfg.Logger.With().Str("worker", cfg.Hostname).Logger()
	t := &redisTransport{pool: pool, db: db}
	t.broker = protocol.NewBroker(pool, protocol.BrokerOptions{VisibilityTimeout: cfg.VisibilityTimeout, KeyPrefix: cfg.KeyPrefix, Logger: log, Clock: cfg.Clock})
	t.backend = protocol.NewBackend(pool, protocol.BackendOptions{Expires: cfg.ResultExpires, KeyPrefix: cfg.ResultKeyPrefix, Logger: log})
	t.consumer = t.broker.NewConsumer(cfg.Queues...)
	// One Lamport clock for events and remote control, as Python's
	// app.clock.
	clock := new(protocol.LamportClock)
	t.events = protocol.NewEventDispatcher(pool, db, cfg.Hostname, cfg.KeyPrefix, protocol.WithClock(clock), protocol.WithLogger(log))
	t.mailbox = protocol.NewMailbox(pool, db, cfg.Hostname, cfg.KeyPrefix, protocol.WithClock(clock), protocol.WithLogger(log))
	return t
}

func (t *redisTransport) Queues() []string      { return t.consumer.Queues() }
func (t *redisTransport) AddQueue(queue string) { t.consumer.AddQueue(queue) }
func (t *redisTransport) RemoveQueueWait(ctx context.Context, queue string) (bool, error) {
	return t.consumer.RemoveQueueWait(ctx, queue)
}
func (t *redisTransport) DeclareQueue(ctx context.Context, queue string) error {
	return t.broker.DeclareQueue(ctx, queue)
}
func (t *redisTransport) FetchN(ctx context.Context, timeout time.Duration, max int) ([]*protocol.Delivery, error) {
	return t.consumer.FetchN(ctx, timeout, max)
}

func (t *redisTransport) Touch(ctx context.Context, tags ...string) error {
	return t.broker.Touch(ctx, tags...)
}
func (t *redisTransport) Held(ctx context.Context, tag string) (bool, error) {
	return t.broker.Held(ctx, tag)
}
func (t *redisTransport) RestoreExpired(ctx context.Context) (int, error) {
	return t.broker.RestoreExpired(ctx)
}

func (t *redisTransport) Commit(ctx context.Context, ops []protocol.CommitOp) ([]protocol.CommitStatus, error) {
	return t.broker.Commit(ctx, t.backend, ops)
}
func (t *redisTransport) Ack(ctx context.Context, tag string) (bool, error) {
	return t.broker.Ack(ctx, tag)
}
func (t *redisTransport) Restore(ctx context.Context, tag string) error {
	return t.broker.Restore(ctx, tag)
}
func (t *redisTransport) RestoreStarted(ctx context.Context, tag string) error {
	return t.broker.RestoreStarted(ctx, tag)
}
func (t *redisTransport) Forward(ctx context.Context, tag, queue string, envelope []byte, priority int) (bool, error) {
	return t.broker.Forward(ctx, tag, queue, envelope, priority)
}
func (t *redisTransport) DeadLetter(ctx context.Context, d *protocol.Delivery, reason string) error {
	return t.broker.DeadLetter(ctx, d, reason)
}
func (t *redisTransport) Poison(ctx context.Context, d *protocol.Delivery, req *protocol.StoreRequest, reason string) (bool, error) {
	return t.broker.Poison(ctx, t.backend, d, req, reason)
}
func (t *redisTransport) DeadLetterList() string { return t.broker.Options().DeadLetterKey }

func (t *redisTransport) Store(ctx context.Context, req protocol.StoreRequest) error {
	return t.backend.Store(ctx, req)
}
func (t *redisTransport) Publish(ctx context.Context, queue string, envelope []byte, priority int) error {
	return t.broker.Publish(ctx, queue, envelope, priority)
}
func (t *redisTransport) ChordPartReturn(ctx context.Context, part protocol.ChordPart) (*protocol.ChordJoin, error) {
	return t.backend.ChordPartReturn(ctx, part)
}
func (t *redisTransport) SavedGroupResult(ctx context.Context, gid string) (bool, error) {
	return t.backend.SavedGroupResult(ctx, gid)
}
func (t *redisTransport) ChordCleanup(ctx context.Context, gid string) error {
	return t.backend.ChordCleanup(ctx, gid)
}

func (t *redisTransport) EncodeEvent(typ string, fields map[string]any) (string, []byte, error) {
	return t.events.Encode(typ, fields)
}
func (t *redisTransport) SendEvent(ctx context.Context, typ string, fields map[string]any) error {
	return t.events.Send(ctx, typ, fields)
}
func (t *redisTransport) Clock() int64 { return t.events.Clock() }

func (t *redisTransport) HandleControl(method string, h protocol.ControlHandler) {
	t.mailbox.Handle(method, h)
}
func (t *redisTransport) RunControl(ctx context.Context) error { return t.mailbox.Run(ctx) }
func (t *redisTransport) ControlReady() <-chan struct{}        { return t.mailbox.Ready() }

func (t *redisTransport) Close() error { return t.pool.Close() }
