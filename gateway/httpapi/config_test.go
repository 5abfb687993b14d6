package httpapi

import (
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/contract"
	"morag-gpu/internal/testenv"
)

// TestKeyPrefixAndOwnerTTL: -key-prefix reaches the Celery keys (the queue
// a task is published to) but not MoRAG's own (the task owner), and the
// owner lives -result-expires plus -wait-timeout.
func TestKeyPrefixAndOwnerTTL(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, func(c *Config) {
		c.KeyPrefix = "pfx:"
		c.ResultExpires = time.Hour
		c.WaitTimeout = 30 * time.Minute
	})
	key := e.createKey("dora")
	res := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://example.com/x"}, bearer(key)...)
	m := res.json(t)
	id, _ := m["task_id"].(string)
	if res.Code != 200 || id == "" {
		t.Fatalf("ingest: %d %s", res.Code, res.Body)
	}
	if n, _ := redis.Int(r.Do("LLEN", "pfx:celery"), nil); n != 1 {
		t.Errorf("LLEN pfx:celery = %d, want 1 (unprefixed celery: %v)", n, r.Do("LLEN", "celery"))
	}
	ttl, _ := redis.Int(r.Do("TTL", contract.TaskOwnerKey(id)), nil)
	if want := int((90 * time.Minute).Seconds()); ttl <= want-60 || ttl > want {
		t.Errorf("owner TTL %d s, want about %d s", ttl, want)
	}
}
