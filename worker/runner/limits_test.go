package runner

import (
	"context"
	"fmt"
	"testing"
	"time"

	"morag-gpu/protocol"
)

func TestParseRateIsCeleryRate(t *testing.T) {
	for in, want := range map[string]float64{"": 0, "0": 0, "10": 10, "100/s": 100, "120/m": 2, "7200/h": 2, "0.5/s": 0.5} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]string{"x/s": `ValueError("could not convert string to float: 'x'")`, "5/d": "KeyError('d')"} {
		_, err := ParseRate(in)
		re, ok := err.(*rateError)
		if !ok || excRepr(re.te) != want {
			t.Errorf("ParseRate(%q) error %v; want %s", in, err, want)
		}
	}
}

func TestTokenBucketSpacesStarts(t *testing.T) {
	l := newRateLimiter()
	now := time.Unix(1000, 0)
	var waits []time.Duration
	for i := 0; i < 3; i++ {
		waits = append(waits, l.reserve("t", "2/s", now))
	}
	if fmt.Sprint(waits) != "[0s 500ms 1s]" {
		t.Errorf("waits at 2/s = %v; want [0s 500ms 1s] (capacity 1, as kombu's TokenBucket)", waits)
	}
	if w := l.reserve("t", "", now); w != 0 {
		t.Errorf("no limit waits %v", w)
	}
}

func TestRegistrationOptionsShowInRegistered(t *testing.T) {
	mux := NewMux()
	noop := func(context.Context, *Task) (any, error) { return nil, nil }
	mux.HandleFunc("a.limited", noop, RateLimit("10/m"), TimeLimit(2*time.Second, 1500*time.Millisecond))
	mux.HandleFunc("b.plain", noop)
	s := &Server{mux: mux}
	got, _ := s.ctlRegistered(context.Background(), &protocol.ControlRequest{Arguments: map[string]any{}})
	if fmt.Sprint(got) != "[a.limited [rate_limit=10/m] b.plain]" {
		t.Errorf("registered = %v", got)
	}
	got, _ = s.ctlRegistered(context.Background(), &protocol.ControlRequest{Arguments: map[string]any{"taskinfoitems": []any{"time_limit", "soft_time_limit"}}})
	if fmt.Sprint(got) != "[a.limited [time_limit=2 soft_time_limit=1.5] b.plain]" {
		t.Errorf("registered time limits = %v", got)
	}
	a, _ := mux.taskAttrs("a.limited")
	tl := effectiveTimeLimit(protocol.TimeLimit{}, a)
	if tl.Hard != 2*time.Second || tl.HardRaw != "2" || tl.Soft != 1500*time.Millisecond {
		t.Errorf("task default limits not applied: %+v", tl)
	}
	if tl := effectiveTimeLimit(protocol.TimeLimit{Hard: time.Second, HardRaw: "1.0"}, a); tl.HardRaw != "1.0" || tl.Soft != 1500*time.Millisecond {
		t.Errorf("the message's limit must win: %+v", tl)
	}
}

// Tasks waiting for their rate limit hold their messages against the
// prefetch limit, as in Python, instead of draining the queue; each starts
// at its turn on the worker's clock, not a nanosecond sooner.
func TestRateLimitedTasksCountAgainstPrefetch(t *testing.T) {
	t.Parallel()
	mux := NewMux()
	mux.HandleFunc("t.rl", func(context.Context, *Task) (any, error) { return "ok", nil }, RateLimit("1/m"))
	clk := fakeClock()
	t0 := clk.Now()
	h := startServer(t, Config{Queues: []string{"rl"}, Concurrency: 1, Prefetch: 1, Clock: clk}, mux)
	first := h.send("t.rl", protocol.SendOptions{})
	if m := h.wait(first); m.Status != protocol.StateSuccess {
		t.Fatalf("first task: %s", m.Status)
	}
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, h.send("t.rl", protocol.SendOptions{}))
	}
	// The first task took the token at t0: the next two wait for t0+1m
	// and t0+2m, and fill the limit. Once the fetch loop waits for room
	// it takes nothing more until one of them runs.
	armed(t, clk, t0.Add(time.Minute), "the second task's turn")
	armed(t, clk, t0.Add(2*time.Minute), "the third task's turn")
	if n := h.waitParked(); n != 2 {
		t.Errorf("the fetch loop stopped with %d messages held; want 2", n)
	}
	if held, queued := h.redisInt("ZCARD", "unacked_index"), h.redisInt("LLEN", "rl"); held != 2 || queued != 2 {
		t.Errorf("held %d, queued %d; want 2 held (concurrency+prefetch) and 2 left in the queue", held, queued)
	}
	got, _ := h.srv.ctlScheduled(context.Background(), &protocol.ControlRequest{})
	if list, _ := got.([]any); len(list) != 0 {
		t.Errorf("rate-limited tasks listed as scheduled: %v", got)
	}

	clk.Advance(time.Minute - time.Nanosecond)
	if !stillArmed(clk, t0.Add(time.Minute)) {
		t.Fatal("a rate-limited task's turn came early")
	}
	if st, _ := h.client.Result(ids[0]).State(context.Background()); st != protocol.StatePending {
		t.Fatalf("a task waiting for its turn is %s; want PENDING", st)
	}
	clk.Advance(time.Nanosecond)
	if m := h.wait(ids[0]); m.Status != protocol.StateSuccess {
		t.Fatalf("second task at its turn: %s", m.Status)
	}
	// Its room goes to the fourth task, whose turn is t0+3m.
	armed(t, clk, t0.Add(3*time.Minute), "the fourth task's turn")
	if st, _ := h.client.Result(ids[1]).State(context.Background()); st != protocol.StatePending {
		t.Errorf("the third task ran before its turn: %s", st)
	}
}
