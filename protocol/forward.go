package protocol

import (
	"context"
	"fmt"

	"github.com/gomodule/redigo/redis"
)

// Forward hands a held message to another queue: it LPUSHes envelope (the
// message as it should arrive there) onto queue's priority list and
// acknowledges tag, atomically, so the task is neither lost nor duplicated
// by a crash in between. held is false when tag was no longer held (then
// nothing was published: whoever restored it owns it now).
func (b *Broker) Forward(ctx context.Context, tag, queue string, envelope []byte, priority int) (held bool, err error) {
	c, err := b.conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	n, err := redis.Int(forwardHeld.DoContext(ctx, c,
		b.key(unackedKey), b.key(unackedIndexKey), b.key(b.QueueForPriority(queue, priority)), b.key(bindingKey(queue)), b.countKey(tag),
		tag, envelope, bindingMember(queue)))
	if err != nil {
		return false, fmt.Errorf("protocol: forward %s to %s: %w", tag, queue, err)
	}
	return n == 1, nil
}
