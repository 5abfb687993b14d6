package runner

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"morag-gpu/protocol"
)

func TestRetarget(t *testing.T) {
	raw := `{"body": "W10=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "t", "id": "ID", "retries": 12345678901234567890, "redelivered": true}, "properties": {"correlation_id": "ID", "delivery_info": {"exchange": "", "routing_key": "gpu", "redelivered": true}, "priority": 0, "body_encoding": "base64", "delivery_tag": "old"}}`
	out, err := retarget([]byte(raw), "gpu", "celery", "new")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), `\u003c`) || !strings.Contains(string(out), "12345678901234567890") {
		t.Errorf("numbers or escaping changed: %s", out)
	}
	var env map[string]any
	if err := json.Unmarshal(out, &env); err != nil {
		t.Fatal(err)
	}
	props := env["properties"].(map[string]any)
	if props["delivery_tag"] != "new" || props["body_encoding"] != "base64" || props["correlation_id"] != "ID" {
		t.Errorf("properties = %v", props)
	}
	if di := props["delivery_info"].(map[string]any); !reflect.DeepEqual(di, map[string]any{"exchange": "", "routing_key": "celery"}) {
		t.Errorf("delivery_info = %v", di)
	}
	if env["body"] != "W10=" {
		t.Errorf("body changed: %v", env["body"])
	}
	headers := env["headers"].(map[string]any)
	if headers["id"] != "ID" || headers["task"] != "t" {
		t.Errorf("headers changed: %v", headers)
	}
	if got := forwardedFrom(headers); !reflect.DeepEqual(got, []string{"gpu"}) {
		t.Errorf("forwarded_from = %v", got)
	}
	again, err := retarget(out, "celery", "other", "n2")
	if err != nil {
		t.Fatal(err)
	}
	var env2 map[string]any
	_ = json.Unmarshal(again, &env2)
	if got := forwardedFrom(env2["headers"].(map[string]any)); !reflect.DeepEqual(got, []string{"gpu", "celery"}) {
		t.Errorf("forwarded_from after two hops = %v", got)
	}
	if _, err := retarget([]byte("not json"), "a", "b", "c"); err == nil {
		t.Error("want an error for a non-JSON envelope")
	}
}

func TestRetryMessage(t *testing.T) {
	now := time.Unix(1700000000, 0)
	m := &protocol.Message{ID: "ID", Task: "t", Retries: 2, DeliveryTag: "tag", Redelivered: true,
		Exchange: "x", RoutingKey: "rk", Priority: 3, Headers: map[string]any{"custom": 1, "redelivered": true}}
	next := retryMessage(m, "gpu", 5*time.Second, now)
	if next.ID != "ID" || next.Retries != 3 || next.DeliveryTag != "" || next.Redelivered ||
		next.Exchange != "" || next.RoutingKey != "gpu" || next.Priority != 3 {
		t.Errorf("retry message = %+v", next)
	}
	if next.ETA == nil || !next.ETA.Equal(now.Add(5*time.Second)) {
		t.Errorf("ETA = %v", next.ETA)
	}
	if _, has := next.Headers["redelivered"]; has || next.Headers["custom"] != 1 {
		t.Errorf("headers = %v", next.Headers)
	}
	if m.Retries != 2 || m.Headers["redelivered"] != true {
		t.Error("original message modified")
	}
	if retryMessage(m, "gpu", 0, now).ETA != nil {
		t.Error("countdown 0 should not set an ETA")
	}
}
