package protocol

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/gomodule/redigo/redis"
)

// storeAndAck is Backend.Store followed by Broker.Ack (late ack: result
// first), as one atomic Redis script. held is false when the message was
// no longer in unacked (restored by another consumer: it may run twice).
// An error means neither happened, or, for a connection lost mid-reply,
// that the outcome is unknown; retrying is safe either way, since a stored
// result is rewritten and an ack of an acked tag is a no-op.
//
// The backend and the broker must share one Redis pool; when they do not,
// storeAndAck falls back to the two calls in order.
func (b *Broker) storeAndAck(ctx context.Context, be *Backend, req StoreRequest, tag string) (held bool, err error) {
	if be == nil {
		return false, errors.New("protocol: StoreAndAck needs a Backend")
	}
	if be.pool != b.pool {
		if err := be.Store(ctx, req); err != nil {
			return false, err
		}
		return b.Ack(ctx, tag)
	}
	if req.TaskID == "" {
		return false, errors.New("protocol: StoreAndAck needs a task id")
	}
	if req.State == "" {
		return false, fmt.Errorf("protocol: StoreAndAck of task %s needs a state", req.TaskID)
	}
	payload, err := be.encodeMeta(req)
	if err != nil {
		return false, err
	}
	if len(payload) > resultMaxSize {
		return false, fmt.Errorf("protocol: result of task %s is %d bytes, over Redis' 512 MiB string limit", req.TaskID, len(payload))
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	c, err := b.conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	ttl := int64(0)
	if be.expires > 0 {
		ttl = int64(math.Ceil(be.expires.Seconds()))
	}
	res, err := redis.Ints(storeAndAckScript.DoContext(ctx, c,
		be.taskKey(req.TaskID), b.key(unackedIndexKey), b.key(unackedKey), b.countKey(tag), payload, ttl, tag))
	if err != nil {
		return false, fmt.Errorf("protocol: store result of task %s and ack %s: %w", req.TaskID, tag, err)
	}
	if len(res) != 2 {
		return false, fmt.Errorf("protocol: store result of task %s and ack %s: unexpected reply of %d elements", req.TaskID, tag, len(res))
	}
	if res[0] == 0 {
		be.log.Debug().Str("task_id", req.TaskID).Str("state", string(req.State)).
			Msg("result not stored: the task already has a SUCCESS result")
	}
	if res[1] == 0 {
		b.opts.Logger.Warn().Str("delivery_tag", tag).
			Msg("acked a message that was no longer held: it was restored by another process and may run twice; raise the visibility timeout")
	}
	return res[1] == 1, nil
}
