package protocol

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/uuid"

	"morag-gpu/protocol/internal/fanout"
)

// ControlRequest is a pidbox request body (kombu Mailbox._publish).
// Numbers in Arguments are json.Number; Arguments is never nil.
type ControlRequest struct {
	Method      string         `json:"method"`
	Arguments   map[string]any `json:"arguments"`
	Destination []string       `json:"destination"`
	Pattern     *string        `json:"pattern"`
	Matcher     *string        `json:"matcher"`
	Ticket      string         `json:"ticket,omitempty"`
	ReplyTo     *ReplyTo       `json:"reply_to,omitempty"`
}

// ReplyTo is where a pidbox reply goes: a direct exchange and the routing
// key of the caller's reply queue.
type ReplyTo struct {
	Exchange   string `json:"exchange"`
	RoutingKey string `json:"routing_key"`
}

// ControlHandler answers one control method; the returned value is this
// node's reply (nil is JSON null; float64 values in maps and slices keep
// their fraction, 2.0 not 2, as json.dumps writes them; struct fields go
// through encoding/json).
// An error is replied as {"error": "Error('<message>')"}, as Python replies
// repr(exc). Returning ErrNoReply sends nothing (Python's shutdown).
type ControlHandler func(ctx context.Context, req *ControlRequest) (any, error)

// ErrNoReply, returned by a ControlHandler, suppresses the reply.
var ErrNoReply = errors.New("protocol: no reply")

// Control is the client side of remote control (Celery's app.control): it
// reaches Python and Go workers alike. It is safe for concurrent use.
type Control struct {
	pool    *redis.Pool
	prefix  string // kombu global_keyprefix
	channel string
	clock   LamportClock
}

// NewControl creates a control client for database db; keyPrefix is kombu's
// global_keyprefix.
func NewControl(pool *redis.Pool, db int, keyPrefix string) *Control {
	return &Control{pool: pool, prefix: keyPrefix, channel: keyPrefix + fanoutChannel(db, pidboxExchange)}
}

// controlPollEvery bounds one BRPOP, so that a cancelled ctx is noticed
// within it.
const controlPollEvery = time.Second

// Broadcast sends method with args to destination (all nodes when empty),
// as kombu's Mailbox._broadcast does. With timeout > 0 it collects replies
// until timeout has passed or, with a destination, one reply per node; the
// result maps node name to its reply (numbers are json.Number), and nodes
// that did not answer in time are absent. With timeout 0 the request is
// only sent (no reply is asked for) and the result is nil. When ctx ends
// first, the replies so far are returned with ctx's error. Waiting for
// replies needs Redis 6 or later (fractional BRPOP timeouts).
func (c *Control) Broadcast(ctx context.Context, method string, args map[string]any, destination []string, timeout time.Duration) (map[string]any, error) {
	if method == "" {
		return nil, errors.New("protocol: control broadcast: empty method")
	}
	if c.pool == nil {
		return nil, errors.New("protocol: control broadcast: no redis pool")
	}
	if timeout < 0 {
		timeout = 0
	}
	if args == nil {
		args = map[string]any{}
	}
	var dest any // null, not [], when empty: kombu's "all nodes"
	if len(destination) > 0 {
		dest = destination
	}
	body := fanoutObject{
		{"method", method}, {"arguments", args}, {"destination", dest},
		{"pattern", nil}, {"matcher", nil},
	}
	// A reply queue per call, so that concurrent calls never read or delete
	// each other's replies (kombu shares one per thread and sorts by ticket).
	var ticket, queue, binding string
	expires := any(0)
	if timeout > 0 {
		oid := uuid.NewString()
		ticket = uuid.NewString()
		queue, binding = replyBinding(oid)
		body = append(body,
			fanoutField{"ticket", ticket},
			fanoutField{"reply_to", fanoutObject{{"exchange", pidboxReplyExchange}, {"routing_key", oid}}})
		expires = fanout.Float(float64(time.Now().Add(timeout).UnixMicro()) / 1e6)
	}
	bodyJSON, err := fanout.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("protocol: control %s: encode arguments: %w", method, err)
	}
	env, err := fanout.Envelope(bodyJSON, fanoutObject{{"clock", c.clock.forward()}, {"expires", expires}}, 2, pidboxExchange, "")
	if err != nil {
		return nil, fmt.Errorf("protocol: control %s: %w", method, err)
	}

	conn, err := c.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("protocol: control %s: get redis connection: %w", method, err)
	}
	defer conn.Close()
	if timeout > 0 {
		// Declare before publishing: workers look the queue up by binding.
		if _, err := redis.DoContext(conn, ctx, "SADD", c.prefix+bindingKey(pidboxReplyExchange), binding); err != nil {
			return nil, fmt.Errorf("protocol: control %s: declare reply queue: %w", method, err)
		}
		defer c.deleteReplyQueue(ctx, queue, binding)
	}
	if _, err := redis.DoContext(conn, ctx, "PUBLISH", c.channel, env); err != nil {
		return nil, fmt.Errorf("protocol: control %s: PUBLISH %s: %w", method, c.channel, err)
	}
	if timeout == 0 {
		return nil, nil
	}
	return c.collect(ctx, conn, method, queue, ticket, len(destination), time.Now().Add(timeout))
}

// collect BRPOPs replies until deadline or limit replies (0: no limit).
func (c *Control) collect(ctx context.Context, conn redis.Conn, method, queue, ticket string, limit int, deadline time.Time) (map[string]any, error) {
	replies := map[string]any{}
	// A reply could be published with a priority; read every band.
	keys := []any{c.prefix + queue}
	for _, p := range []int{3, 6, 9} {
		keys = append(keys, c.prefix+bandQueue(queue, p))
	}
	for got := 0; limit == 0 || got < limit; {
		if err := ctx.Err(); err != nil {
			return replies, err
		}
		wait := min(time.Until(deadline), controlPollEvery)
		if wait < time.Millisecond {
			break
		}
		args := append(keys[:len(keys):len(keys)], strconv.FormatFloat(wait.Seconds(), 'f', 3, 64))
		v, err := redis.Values(redis.DoWithTimeout(conn, wait+5*time.Second, "BRPOP", args...))
		if errors.Is(err, redis.ErrNil) {
			continue
		}
		if err != nil {
			return replies, fmt.Errorf("protocol: control %s: BRPOP %s: %w", method, queue, err)
		}
		if len(v) != 2 {
			continue
		}
		data, _ := v[1].([]byte)
		msg, err := fanout.ParseEnvelope(data)
		if err != nil {
			continue // not a reply; kombu drops it too
		}
		if clk, ok := fanout.AsInt(msg.Headers["clock"]); ok {
			c.clock.adjust(clk)
		}
		if exp, ok := fanout.AsFloat(msg.Headers["expires"]); ok && exp > 0 && exp < float64(time.Now().UnixMicro())/1e6 {
			continue
		}
		if t, ok := msg.Headers["ticket"]; ok && t != ticket {
			continue
		}
		body, ok := msg.Body.(map[string]any)
		if !ok {
			continue
		}
		for node, r := range body {
			replies[node] = r
		}
		got++
	}
	return replies, nil
}

// deleteReplyQueue drops the reply lists and binding, like kombu's
// after_reply_message_received, even when ctx is already cancelled.
func (c *Control) deleteReplyQueue(ctx context.Context, queue, binding string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	conn, err := c.pool.GetContext(ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	keys := []any{c.prefix + queue}
	for _, p := range []int{3, 6, 9} {
		keys = append(keys, c.prefix+bandQueue(queue, p))
	}
	_, _ = redis.DoContext(conn, ctx, "DEL", keys...)
	_, _ = redis.DoContext(conn, ctx, "SREM", c.prefix+bindingKey(pidboxReplyExchange), binding)
}
