package protocol_test

import (
	"context"
	"testing"

	"morag-gpu/protocol"
)

// TestPublishWithIsOneTransaction: the gateway's task owner used to be
// written after the publish, with its error ignored. PublishWith writes
// both in one MULTI and reports a failed command.
func TestPublishWithIsOneTransaction(t *testing.T) {
	s := newBrStack(t, protocol.BrokerOptions{})
	ctx := context.Background()
	for round := 0; round < 2; round++ { // undeclared, then declared queue
		if err := s.broker.PublishWith(ctx, "q", []byte(`{"m":1}`), 0,
			protocol.Command{Name: "SET", Args: []any{"owner:1", "alice"}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.broker.QueueLength(ctx, "q"); n != 2 {
		t.Fatalf("queue length %d, want 2", n)
	}
	if v := s.r.Do("GET", "owner:1"); string(v.([]byte)) != "alice" {
		t.Fatalf("owner = %q", v)
	}
	// A command that fails inside the transaction is an error, not ignored.
	s.r.Do("LPUSH", "a-list", "x")
	err := s.broker.PublishWith(ctx, "q", []byte(`{"m":2}`), 0, protocol.Command{Name: "INCR", Args: []any{"a-list"}})
	if err == nil {
		t.Fatal("a failed command in the publish transaction was not reported")
	}
}
