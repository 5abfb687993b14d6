package protocol_test

import (
	"context"
	"testing"

	"morag-gpu/protocol"
)

func TestForwardMovesHeldMessageOnce(t *testing.T) {
	ctx := context.Background()
	s := newBrStack(t, protocol.BrokerOptions{})
	m := s.publish(t, "gpu", "wire.add", 0)
	d := fetch(t, s.broker.NewConsumer("gpu"))
	held, err := s.broker.Forward(ctx, d.Tag, "celery", d.Raw, 0)
	if err != nil || !held {
		t.Fatalf("Forward = %v, %v; want held", held, err)
	}
	// A retry (say, after a lost reply) publishes nothing more.
	if held, err := s.broker.Forward(ctx, d.Tag, "celery", d.Raw, 0); err != nil || held {
		t.Fatalf("second Forward = %v, %v; want not held", held, err)
	}
	if n, _ := s.broker.QueueLength(ctx, "celery"); n != 1 {
		t.Fatalf("celery holds %d messages, want exactly 1", n)
	}
	if n := s.r.Do("HLEN", "unacked").(int64); n != 0 {
		t.Fatalf("unacked holds %d entries after forwarding, want 0", n)
	}
	got := fetch(t, s.broker.NewConsumer("celery"))
	if got.Message.ID != m.ID {
		t.Fatalf("forwarded message has id %s, want %s", got.Message.ID, m.ID)
	}
	if n := s.r.Do("SISMEMBER", "_kombu.binding.celery", "celery\x06\x16\x06\x16celery").(int64); n != 1 {
		t.Fatal("Forward did not declare the target queue's binding")
	}
}
