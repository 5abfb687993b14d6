package protocol

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The external tests (package protocol_test) drive the broker and backend
// through these methods, which are not part of the public surface.

func (b *Backend) TaskKey(taskID string) string { return b.taskKey(taskID) }

func (b *Backend) Forget(ctx context.Context, taskID string) error { return b.forget(ctx, taskID) }

func (b *Backend) Wait(ctx context.Context, taskID string) (*ResultMeta, error) {
	return b.wait(ctx, taskID)
}

func (l *ResultListener) Wait(ctx context.Context, taskID string) (*ResultMeta, error) {
	return l.wait(ctx, taskID)
}

func (b *Broker) PublishMessage(ctx context.Context, m *Message) error {
	return b.publishMessage(ctx, m)
}

func (b *Broker) Requeue(ctx context.Context, tag string) error { return b.requeue(ctx, tag) }

func (b *Broker) StoreAndAck(ctx context.Context, be *Backend, req StoreRequest, tag string) (held bool, err error) {
	return b.storeAndAck(ctx, be, req, tag)
}

func (c *Consumer) Fetch(ctx context.Context, timeout time.Duration) (*Delivery, error) {
	return c.fetch(ctx, timeout)
}

func (c *Consumer) RemoveQueue(queue string) bool { return c.removeQueue(queue) }

func (b *Backend) Watch(ctx context.Context, taskID string, fn func(*ResultMeta)) (*ResultMeta, error) {
	return b.watch(ctx, taskID, fn)
}

func (l *ResultListener) Watch(ctx context.Context, taskID string, fn func(*ResultMeta)) (*ResultMeta, error) {
	return l.watch(ctx, taskID, fn)
}

// HoldFields runs both envelope readers of the fetch scripts on one
// envelope: {tag, exchange JSON, routing key JSON, redelivered "0"/"1"}
// from fields_std and from fields_any, tag "" where one did not answer.
func HoldFields(c redis.Conn, envelope, queue string) (std, any [4]string, err error) {
	vs, err := redis.Values(holdFields.Do(c, envelope, queue))
	if err != nil {
		return std, any, err
	}
	for i, dst := range []*[4]string{&std, &any} {
		parts, err := redis.Strings(vs[i], nil)
		if err != nil {
			return std, any, err
		}
		copy(dst[:], parts)
	}
	return std, any, nil
}

var holdFields = redis.NewScript(0, luaHold+`
local function pack(tag, exj, rkj, red)
  if not tag then return {'', '', '', '0'} end
  return {tag, exj, rkj, red and '1' or '0'}
end
return {pack(fields_std(ARGV[1], ARGV[2])), pack(fields_any(ARGV[1], ARGV[2]))}`)

// Fixture is one envelope Celery 5.2 wrote into testdata.
type Fixture struct {
	Path string
	Raw  []byte
}

// CeleryFixtures are the envelopes in testdata (manifest.json aside), in
// file name order.
func CeleryFixtures(tb testing.TB) []Fixture {
	tb.Helper()
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	var fs []Fixture
	for _, file := range files {
		if filepath.Base(file) == "manifest.json" {
			continue
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		fs = append(fs, Fixture{Path: file, Raw: raw})
	}
	if len(fs) == 0 {
		tb.Fatal("no envelopes in testdata")
	}
	return fs
}
