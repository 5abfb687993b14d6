package protocol

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/gomodule/redigo/redis"
)

// CommitKind is what one CommitOp does; see commitBatch in
// broker_scripts.go.
type CommitKind byte

const (
	// CommitStart counts the start of a held message (poison detection)
	// and stores Store (STARTED), if any, while the message is held. A
	// caller that waits for it before running the handler has a handler
	// that kills the process at once counted too; one that runs the
	// handler meanwhile has it counted once the commit lands. Nothing is
	// written once the message is no longer held, so a start that lands
	// after the finish's ack leaves no count behind.
	CommitStart CommitKind = 's'
	// CommitFinish stores Store (the final state), if any, and acks the
	// message, unless another consumer restored it after this worker
	// started it.
	CommitFinish CommitKind = 'f'
	// CommitPublish PUBLISHes Payload on Channel (a task event).
	CommitPublish CommitKind = 'p'
)

// CommitEncodeError is Commit's error when op Op cannot be encoded:
// nothing was sent, and the other ops can be committed without it.
type CommitEncodeError struct {
	Op  int
	Err error
}

func (e *CommitEncodeError) Error() string {
	return fmt.Sprintf("protocol: commit: op %d cannot be encoded: %v", e.Op, e.Err)
}

func (e *CommitEncodeError) Unwrap() error { return e.Err }

// CommitOp is one state change in a group commit.
type CommitOp struct {
	Kind    CommitKind
	Tag     string        // delivery tag (start, finish)
	Store   *StoreRequest // result to store (start, finish); nil: none
	Channel string        // publish
	Payload []byte        // publish
	// Starts is the delivery's Starts (start): the count recorded is
	// Starts+1.
	Starts int
	// Uncounted (finish) says that no start of this delivery was ever
	// counted (a first delivery whose start was withdrawn), so there is no
	// delivery count to drop: the ack skips the DEL.
	Uncounted bool
}

// CommitStatus is the outcome of one CommitOp.
type CommitStatus int

const (
	// CommitLost: the message was not held, and for a finish no consumer
	// owns it either (Redis lost it): the result was stored anyway.
	CommitLost CommitStatus = 0
	// CommitHeld: done as asked (publishes always report this).
	CommitHeld CommitStatus = 1
	// CommitElsewhere: a finish whose message another consumer restored
	// after this worker started it; nothing was written, since the task
	// runs again there and that run writes the result.
	CommitElsewhere CommitStatus = 2
)

// Commit applies ops in order in one atomic Lua call (a group commit:
// STARTED, results, acks and events of tasks that reach those points
// together cost one round trip). An error means none of it happened, or,
// for a connection lost mid-reply, that the outcome is unknown; retrying
// is safe either way (a start counted twice errs on the side of caution,
// a finish of a finished message is a no-op that reports CommitLost).
// The backend must use the broker's Redis pool.
func (b *Broker) Commit(ctx context.Context, be *Backend, ops []CommitOp) ([]CommitStatus, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	if be == nil || be.pool != b.pool {
		return nil, errors.New("protocol: Commit needs a Backend on the broker's Redis pool")
	}
	ttl := int64(0)
	if be.expires > 0 {
		ttl = int64(math.Ceil(be.expires.Seconds()))
	}
	args := make([]any, 0, 4+6*len(ops))
	args = append(args, b.key(unackedKey), b.key(unackedIndexKey), b.key(deliveryCountPrefix), b.countTTL())
	for i, op := range ops {
		switch op.Kind {
		case CommitPublish:
			args = append(args, "p", "", op.Channel, op.Payload, 0, 0)
		case CommitStart, CommitFinish:
			if op.Tag == "" {
				return nil, &CommitEncodeError{i, fmt.Errorf("commit %c needs a delivery tag", op.Kind)}
			}
			key, meta := "", []byte(nil)
			if op.Store != nil {
				if op.Store.TaskID == "" || op.Store.State == "" {
					return nil, &CommitEncodeError{i, errors.New("a stored result needs a task id and a state")}
				}
				var err error
				if meta, err = be.encodeMeta(*op.Store); err != nil {
					return nil, &CommitEncodeError{i, err}
				}
				if len(meta) > resultMaxSize {
					return nil, &CommitEncodeError{i, fmt.Errorf("the result of task %s is %d bytes, over Redis' 512 MiB string limit", op.Store.TaskID, len(meta))}
				}
				key = be.taskKey(op.Store.TaskID)
			}
			count := op.Starts + 1
			if op.Kind == CommitFinish && op.Uncounted {
				count = 0
			}
			args = append(args, string(op.Kind), op.Tag, key, meta, ttl, count)
		default:
			return nil, &CommitEncodeError{i, fmt.Errorf("unknown commit kind %q", op.Kind)}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res, err := redis.Ints(commitBatch.DoContext(ctx, c, args...))
	if err != nil {
		return nil, fmt.Errorf("protocol: commit %d task state changes: %w", len(ops), err)
	}
	if len(res) != len(ops) {
		return nil, fmt.Errorf("protocol: commit: %d replies for %d ops", len(res), len(ops))
	}
	out := make([]CommitStatus, len(res))
	for i, v := range res {
		out[i] = CommitStatus(v)
	}
	return out, nil
}

// Poison fails a held message instead of running it, because it was
// started req.Message's Starts times and killed or hung each worker: one
// atomic step stores req (a FAILURE; nil stores nothing), moves the
// envelope to the dead-letter list with reason, acks it and drops its
// delivery count. held is false when the message was no longer held
// (another consumer has it now; nothing was written).
func (b *Broker) Poison(ctx context.Context, be *Backend, d *Delivery, req *StoreRequest, reason string) (held bool, err error) {
	if d == nil || d.Tag == "" {
		return false, errors.New("protocol: Poison needs a held delivery")
	}
	if be == nil || be.pool != b.pool {
		return false, errors.New("protocol: Poison needs a Backend on the broker's Redis pool")
	}
	key, meta, ttl := "", []byte(nil), int64(0)
	if req != nil {
		if meta, err = be.encodeMeta(*req); err != nil {
			return false, err
		}
		key = be.taskKey(req.TaskID)
		if be.expires > 0 {
			ttl = int64(math.Ceil(be.expires.Seconds()))
		}
	}
	c, err := b.conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	n, err := redis.Int(poisonHeld.DoContext(ctx, c,
		b.key(unackedKey), b.key(unackedIndexKey), b.key(b.opts.DeadLetterKey), key, b.countKey(d.Tag),
		d.Tag, deadLetterEntry(b.opts.Clock.Now(), d.Raw, d.Queue, reason), meta, ttl))
	if err != nil {
		return false, fmt.Errorf("protocol: fail poison message %s: %w", d.Tag, err)
	}
	if n == 1 {
		d.deadLettered = true
		b.opts.Logger.Warn().Str("queue", d.Queue).Str("delivery_tag", d.Tag).Str("reason", reason).
			Str("dead_letter_list", b.opts.DeadLetterKey).Msg("moved a poison message to the dead-letter list")
	}
	return n == 1, nil
}
