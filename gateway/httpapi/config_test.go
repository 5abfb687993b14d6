package httpapi

import (
	"strings"
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

// TestMinReplicas: with -redis-min-replicas 1 an accepted task is on the
// replica by the time the client has its task id; with the replica down
// the task is still accepted and queued (a retry could run it twice).
func TestMinReplicas(t *testing.T) {
	r, replica := testenv.StartRedis(t), testenv.StartRedis(t)
	replica.Do("REPLICAOF", "127.0.0.1", r.Port)
	deadline := time.Now().Add(15 * time.Second)
	for s, _ := redis.String(replica.Do("INFO", "replication"), nil); !strings.Contains(s, "master_link_status:up"); s, _ = redis.String(replica.Do("INFO", "replication"), nil) {
		if time.Now().After(deadline) {
			t.Fatal("the replica never linked up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e := startGateway(t, r, func(c *Config) { c.MinReplicas = 1; c.ReplicaWait = 200 * time.Millisecond })
	key := e.createKey("erin")
	for i := range 2 {
		res := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://example.com/x"}, bearer(key)...)
		if res.Code != 200 {
			t.Fatalf("ingest %d: %d %s", i, res.Code, res.Body)
		}
		if n, _ := redis.Int(replica.Do("LLEN", "celery"), nil); n != i+1 {
			t.Fatalf("after ingest %d the replica holds %d tasks, want %d", i, n, i+1)
		}
	}
	replica.Stop()
	res := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://example.com/x"}, bearer(key)...)
	if res.Code != 200 {
		t.Fatalf("ingest with the replica down: %d %s, want 200 (queued on the master)", res.Code, res.Body)
	}
	if n, _ := redis.Int(r.Do("LLEN", "celery"), nil); n != 3 {
		t.Errorf("the master holds %d tasks, want 3", n)
	}
}
