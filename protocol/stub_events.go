//go:build !wip_events

// Stub of events and pidbox; owned by the events work.
package protocol

import (
	"context"
	"errors"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Event is one Celery event: standard fields (type, hostname, timestamp,
// utcoffset, pid, clock) plus the event's own fields, in a map.
type Event map[string]any

// Type returns event["type"].
func (e Event) Type() string { panic("stub") }

// EventDispatcher publishes events on the celeryev fanout exchange
// (PUBLISH /{db}.celeryev/<group>.<action>) with a Lamport clock.
type EventDispatcher struct{}

// NewEventDispatcher creates a dispatcher for hostname on database db.
func NewEventDispatcher(pool *redis.Pool, db int, hostname string, keyPrefix string) *EventDispatcher {
	panic("stub")
}

// Send publishes an event of type typ (e.g. "task-started") with fields.
// Standard fields are added. Errors are returned, never panics.
func (d *EventDispatcher) Send(ctx context.Context, typ string, fields map[string]any) error {
	panic("stub")
}

// Clock is the dispatcher's Lamport clock; Adjust merges a remote clock.
func (d *EventDispatcher) Clock() int64       { panic("stub") }
func (d *EventDispatcher) Adjust(other int64) { panic("stub") }

// EventReceiver PSUBSCRIBEs /{db}.celeryev/<pattern> and calls fn for each
// event (a list body is split into events) until ctx is done. It reconnects
// with backoff.
func ReceiveEvents(ctx context.Context, pool *redis.Pool, db int, pattern string, fn func(Event)) error {
	panic("stub")
}

// ControlRequest is a pidbox request body.
type ControlRequest struct {
	Method      string         `json:"method"`
	Arguments   map[string]any `json:"arguments"`
	Destination []string       `json:"destination"`
	Pattern     *string        `json:"pattern"`
	Matcher     *string        `json:"matcher"`
	Ticket      string         `json:"ticket,omitempty"`
	ReplyTo     *ReplyTo       `json:"reply_to,omitempty"`
}

// ReplyTo is where a pidbox reply goes.
type ReplyTo struct {
	Exchange   string `json:"exchange"`
	RoutingKey string `json:"routing_key"`
}

// ControlHandler answers one control method; the returned value is the
// reply body for this node (nil reply = JSON null). Returning
// ErrNoReply sends nothing (shutdown).
type ControlHandler func(ctx context.Context, req *ControlRequest) (any, error)

// Mailbox is a worker's pidbox node: it PSUBSCRIBEs /{db}.celery.pidbox,
// honours destination/pattern/matcher, dispatches to handlers and replies to
// reply.celery.pidbox as kombu does.
type Mailbox struct{}

// NewMailbox creates the mailbox node for hostname.
func NewMailbox(pool *redis.Pool, db int, hostname string, keyPrefix string) *Mailbox {
	panic("stub")
}

// Handle registers the handler for method.
func (m *Mailbox) Handle(method string, h ControlHandler) { panic("stub") }

// Run serves requests until ctx is done, reconnecting with backoff.
func (m *Mailbox) Run(ctx context.Context) error { panic("stub") }

// Control is the client side of remote control (app.control).
type Control struct{}

// NewControl creates a control client.
func NewControl(pool *redis.Pool, db int, keyPrefix string) *Control { panic("stub") }

// Broadcast sends method to destination (all when empty) and, when
// timeout > 0, collects replies until timeout or len(destination) replies.
// The result maps node name to its reply.
func (c *Control) Broadcast(ctx context.Context, method string, args map[string]any, destination []string, timeout time.Duration) (map[string]any, error) {
	panic("stub")
}

// ErrNoReply, returned by a ControlHandler, suppresses the reply.
var ErrNoReply = errors.New("protocol: no reply")
