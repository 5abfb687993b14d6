package protocol_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/protocol"
)

// StoreAndAck must leave the result stored and the message gone from
// unacked, keep a stored SUCCESS, and report a message no longer held.
func TestStoreAndAck(t *testing.T) {
	t.Parallel()
	s := newBrStack(t, protocol.BrokerOptions{})
	be := protocol.NewBackend(s.pool, protocol.BackendOptions{})
	ctx := context.Background()
	m := s.publish(t, "q", "t.add", 0)
	d := fetch(t, s.broker.NewConsumer("q"))
	if d == nil || d.Tag == "" {
		t.Fatalf("fetch = %+v; want a held delivery", d)
	}

	held, err := s.broker.StoreAndAck(ctx, be, protocol.StoreRequest{TaskID: m.ID, State: protocol.StateSuccess, Result: 42}, d.Tag)
	if err != nil || !held {
		t.Fatalf("StoreAndAck = %v, %v; want true, nil", held, err)
	}
	meta, err := be.Get(ctx, m.ID)
	if err != nil || meta.Status != protocol.StateSuccess || string(meta.Result) != "42" {
		t.Fatalf("stored meta = %+v, %v; want SUCCESS 42", meta, err)
	}
	c := s.pool.Get()
	defer c.Close()
	if n, _ := redis.Int(c.Do("ZCARD", "unacked_index")); n != 0 {
		t.Errorf("unacked_index has %d entries after StoreAndAck; want 0", n)
	}
	if n, _ := redis.Int(c.Do("HLEN", "unacked")); n != 0 {
		t.Errorf("unacked has %d entries after StoreAndAck; want 0", n)
	}
	if ttl, _ := redis.Int(c.Do("TTL", be.TaskKey(m.ID))); ttl <= 0 {
		t.Errorf("result TTL = %d; want the default expiry", ttl)
	}

	// A second completion: the SUCCESS is kept and the tag is not held.
	held, err = s.broker.StoreAndAck(ctx, be, protocol.StoreRequest{TaskID: m.ID, State: protocol.StateFailure, Result: &protocol.TaskError{ExcType: "X"}}, d.Tag)
	if err != nil || held {
		t.Fatalf("second StoreAndAck = %v, %v; want false, nil", held, err)
	}
	raw, _ := redis.Bytes(c.Do("GET", be.TaskKey(m.ID)))
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil || got["status"] != "SUCCESS" {
		t.Errorf("after a later FAILURE the stored meta is %s; want the SUCCESS kept", raw)
	}

	if _, err := s.broker.StoreAndAck(ctx, be, protocol.StoreRequest{State: protocol.StateSuccess}, d.Tag); err == nil {
		t.Error("StoreAndAck without a task id succeeded; want an error")
	}
}
