package httpapi

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/auth"
	"morag-gpu/contract"
	"morag-gpu/protocol"
)

// Task ownership. Every task the gateway publishes gets a record
// (contract.TaskOwnerKey), written in the same transaction as the publish:
// the submitting user's id, or "" for a task submitted without a key.
//
//   - A task with an owner answers (status, result, cancel, upload-result)
//     only to that user's keys; everyone else gets the 404 an unknown id
//     gets, so its existence does not leak.
//   - A task without an owner is readable and cancellable by whoever has
//     its id (the id is the capability, as in MoRAG), and never listed.
//   - An id without a record was not issued by this gateway: it cannot be
//     cancelled, and its status is shown only when a result exists (a task
//     sent by a Python client straight to Celery).
//
// taskIDPattern is what a task id may look like here: Celery's uuids, the
// gateway's "result-<uuid>", and other short printable ids. Anything else
// (the attack used 900 KB ids) is refused before it reaches Redis.
var taskIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

func validTaskID(id string) bool { return taskIDPattern.MatchString(id) }

// taskOwner is what the owner record says.
type taskOwner struct {
	issued bool   // the gateway published this id
	user   string // "" when submitted without a key
}

// allows reports whether caller may see and act on the task.
func (o taskOwner) allows(caller *auth.KeyData) bool {
	if o.user == "" {
		return true
	}
	return caller != nil && caller.UserID == o.user
}

// ownerCommand is the owner record's write, for the publish transaction.
// It lives -result-expires plus -wait-timeout (Config.ownerTTL); a task
// that waits in its queue longer loses its owner (see SECURITY.md).
func (g *Gateway) ownerCommand(taskID, userID string) protocol.Command {
	ttl := g.cfg.ownerTTL()
	return protocol.Command{Name: "SET", Args: []any{contract.TaskOwnerKey(taskID), userID, "EX", int64(ttl / time.Second)}}
}

// owner reads a task's owner record.
func (g *Gateway) owner(ctx context.Context, taskID string) (taskOwner, error) {
	conn, err := g.pool.GetContext(ctx)
	if err != nil {
		return taskOwner{}, fmt.Errorf("read the owner of task %s: %w", taskID, err)
	}
	defer conn.Close()
	return ownerOn(ctx, conn, taskID)
}

func ownerOn(ctx context.Context, conn redis.Conn, taskID string) (taskOwner, error) {
	user, err := redis.String(redis.DoContext(conn, ctx, "GET", contract.TaskOwnerKey(taskID)))
	if errors.Is(err, redis.ErrNil) {
		return taskOwner{}, nil
	}
	if err != nil {
		return taskOwner{}, fmt.Errorf("read the owner of task %s: %w", taskID, err)
	}
	return taskOwner{issued: true, user: user}, nil
}

// ownedBy keeps the ids in ids whose owner is userID, in order.
func (g *Gateway) ownedBy(ctx context.Context, ids []string, userID string) ([]string, error) {
	if len(ids) == 0 || userID == "" {
		return []string{}, nil
	}
	conn, err := g.pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = contract.TaskOwnerKey(id)
	}
	owners, err := redis.Values(redis.DoContext(conn, ctx, "MGET", args...))
	if err != nil {
		return nil, err
	}
	out := []string{}
	for i, o := range owners {
		if b, ok := o.([]byte); ok && string(b) == userID {
			out = append(out, ids[i])
		}
	}
	return out, nil
}
