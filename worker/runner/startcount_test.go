package runner

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// A start is counted (poison detection) and STARTED stored while the
// message is held: before the handler runs for a redelivered message, and
// for every message under CountBeforeRun; while the handler runs for a
// first delivery, so that short tasks do not wait a round trip each.
func TestServerStartCounting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		countFirst  bool
		redelivered bool   // published as kombu's restore republishes
		prior       string // the count already in Redis
		want        string // the count the start records
		atEntry     bool   // it must be there when the handler starts
	}{
		{name: "first delivery, counted while it runs", want: "1"},
		{name: "redelivered, counted before it runs", redelivered: true, prior: "1", want: "2", atEntry: true},
		{name: "CountBeforeRun", countFirst: true, want: "1", atEntry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := testenv.StartRedis(t)
			type seen struct{ entry, running, started string }
			seenc := make(chan seen, 1)
			mux := NewMux()
			mux.HandleFunc("t.peek", func(ctx context.Context, task *Task) (any, error) {
				c := r.Conn()
				defer c.Close()
				key := "celery.deliveries." + task.Message.DeliveryTag
				var s seen
				s.entry, _ = redis.String(c.Do("GET", key))
				// The count and STARTED land while the handler runs.
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					s.running, _ = redis.String(c.Do("GET", key))
					meta, _ := redis.Bytes(c.Do("GET", "celery-task-meta-"+task.ID))
					var m struct{ Status string }
					_ = json.Unmarshal(meta, &m)
					s.started = m.Status
					if s.running == tc.want && s.started == "STARTED" {
						break
					}
				}
				seenc <- s
				return "ok", nil
			})
			const q = "counts"
			// The message goes in before the server starts, so that it is
			// fetched as it was published.
			m, env := encodedTask(t, "t.peek", q)
			if tc.redelivered {
				var e map[string]any
				if err := json.Unmarshal(env, &e); err != nil {
					t.Fatal(err)
				}
				e["headers"].(map[string]any)["redelivered"] = true
				e["properties"].(map[string]any)["delivery_info"].(map[string]any)["redelivered"] = true
				var err error
				if env, err = json.Marshal(e); err != nil {
					t.Fatal(err)
				}
			}
			c := r.Conn()
			defer c.Close()
			if tc.prior != "" {
				if _, err := c.Do("SET", "celery.deliveries."+m.DeliveryTag, tc.prior, "EX", 3600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.Do("LPUSH", q, env); err != nil {
				t.Fatal(err)
			}
			h := startServerOn(t, r, Config{Queues: []string{q}, CountBeforeRun: tc.countFirst}, mux)
			var s seen
			select {
			case s = <-seenc:
			case <-time.After(30 * time.Second):
				t.Fatal("the task did not run")
			}
			if tc.atEntry && s.entry != tc.want {
				t.Errorf("count when the handler started = %q; want %q already there", s.entry, tc.want)
			}
			if s.running != tc.want || s.started != "STARTED" {
				t.Errorf("while the handler ran: count %q, state %q; want count %q and STARTED", s.running, s.started, tc.want)
			}
			if got := h.wait(m.ID); got.Status != protocol.StateSuccess {
				t.Errorf("final state %s; want SUCCESS", got.Status)
			}
			h.waitFor("the count dropped with the ack", 10*time.Second, func() bool {
				return h.redisInt("EXISTS", "celery.deliveries."+m.DeliveryTag) == 0
			})
		})
	}
}
