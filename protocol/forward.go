package protocol

import (
	"context"
	"fmt"

	"github.com/gomodule/redigo/redis"
)

// forwardHeld publishes a new envelope and drops the held original in one
// step, only while the original is still held: a retry after a lost reply,
// or a message another process already restored, publishes nothing.
var forwardHeld = redis.NewScript(5, `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[5])
return 1`)

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
