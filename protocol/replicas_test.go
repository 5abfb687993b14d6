package protocol

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
)

// With MinReplicas a publish returns only once a replica holds the
// message; with the replica gone it says so with a *ReplicationError, and
// the message is still queued on the master.
func TestPublishWaitsForReplicas(t *testing.T) {
	master, replica := testenv.StartRedis(t), testenv.StartRedis(t)
	replica.Do("REPLICAOF", "127.0.0.1", master.Port)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(redisString(replica.Do("INFO", "replication")), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatal("the replica never linked up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	pool, err := NewPool(master.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	b := NewBroker(pool, BrokerOptions{MinReplicas: 1, ReplicaWait: 300 * time.Millisecond})
	ctx := context.Background()

	// Both publish paths: the first (MULTI with the binding) and the
	// plain LPUSH after it.
	for i, body := range []string{"first", "second"} {
		if err := b.Publish(ctx, "q", []byte(body), 0); err != nil {
			t.Fatalf("publish %d with a live replica: %v", i, err)
		}
		// WAIT returned: the replica has it now, without polling.
		if got, _ := redis.Strings(replica.Do("LRANGE", "q", 0, 0), nil); len(got) != 1 || got[0] != body {
			t.Fatalf("replica's queue head after publish %d = %q, want %q", i, got, body)
		}
	}

	replica.Stop()
	start := time.Now()
	err = b.Publish(ctx, "q", []byte("third"), 0)
	var re *ReplicationError
	if !errors.As(err, &re) || re.Want != 1 || re.Got != 0 || re.Queue != "q" {
		t.Fatalf("publish with the replica down: %v, want a ReplicationError 0 of 1", err)
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("publish gave up after %v, before ReplicaWait", took)
	}
	if n, _ := redis.Int(master.Do("LLEN", "q"), nil); n != 3 {
		t.Errorf("master holds %d messages, want 3: a publish that was not replicated is still queued", n)
	}

	// Publishes batched behind busy lanes share one WAIT, and each of
	// them hears that it was not replicated.
	errs := make(chan error, 12)
	for range 12 {
		go func() { errs <- b.Publish(ctx, "q", []byte("batched"), 0) }()
	}
	for range 12 {
		if err := <-errs; !errors.As(err, &re) || re.Got != 0 {
			t.Fatalf("a batched publish with the replica down: %v, want a ReplicationError", err)
		}
	}
	if n, _ := redis.Int(master.Do("LLEN", "q"), nil); n != 15 {
		t.Errorf("master holds %d messages, want 15", n)
	}
}

// Without MinReplicas nothing waits: a master with no replica publishes.
func TestPublishWithoutReplicasDoesNotWait(t *testing.T) {
	rd := testenv.StartRedis(t)
	pool, err := NewPool(rd.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := NewBroker(pool, BrokerOptions{}).Publish(context.Background(), "q", []byte("m"), 0); err != nil {
		t.Fatal(err)
	}
}

func redisString(v any) string {
	s, _ := redis.String(v, nil)
	return s
}
