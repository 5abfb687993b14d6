package bench

import (
	"context"
	"fmt"
	"sort"
	"time"

	"morag-gpu/protocol"
)

// stallTimeout is how long a run waits without any new result before it
// gives up: a worker that stopped, not a slow one.
const stallTimeout = 60 * time.Second

// runStats is one throughput run: n tasks published by the Go client and
// all their results read back by the shared reader.
type runStats struct {
	n         int
	published time.Duration // first send to last send
	elapsed   time.Duration // first send to last result
	failed    int
	firstFail string
	sample    []byte // one result meta, to check its shape
}

func (s runStats) rate() float64 { return float64(s.n) / s.elapsed.Seconds() }

// argsFunc gives task i's args and kwargs.
type argsFunc func(i int) ([]any, map[string]any)

// throughput publishes n tasks to queue with `publishers` goroutines while
// the consumer under test runs, and waits until every result is back.
// dead, when it closes, means the consumer is gone and waiting is pointless.
func throughput(ctx context.Context, g *goSide, rr *resultReader, task, queue string, n, publishers int, args argsFunc, dead <-chan struct{}) (runStats, error) {
	return throughputIDs(ctx, g, rr, task, queue, make([]string, n), publishers, args, dead)
}

// throughputIDs is throughput for len(ids) tasks, filling ids with their
// task ids.
func throughputIDs(ctx context.Context, g *goSide, rr *resultReader, task, queue string, ids []string, publishers int, args argsFunc, dead <-chan struct{}) (runStats, error) {
	n := len(ids)
	st := runStats{n: n}
	chans := make([]<-chan outcome, n)
	for i := range ids {
		ids[i] = newTaskID()
		chans[i] = rr.expect(ids[i])
	}
	defer rr.forget(ids...)

	start := time.Now()
	grp, gctx := newGroup(ctx)
	for p := 0; p < publishers; p++ {
		grp.do(func() error {
			for i := p; i < n; i += publishers {
				a, kw := args(i)
				if _, err := g.client.Send(gctx, task, a, kw, protocol.SendOptions{TaskID: ids[i], Queue: queue}); err != nil {
					return fmt.Errorf("send %s #%d: %w", task, i, err)
				}
			}
			return nil
		})
	}
	if err := grp.wait(); err != nil {
		return st, err
	}
	st.published = time.Since(start)

	var last time.Time
	for i, ch := range chans {
		var o outcome
		select {
		case o = <-ch:
		case <-dead:
			return st, fmt.Errorf("the consumer stopped after %d of %d results", i, n)
		case <-ctx.Done():
			return st, fmt.Errorf("%d of %d results: %w", i, n, ctx.Err())
		case <-time.After(stallTimeout):
			return st, fmt.Errorf("stalled: no result for %s after %d of %d", stallTimeout, i, n)
		}
		if o.status != "SUCCESS" {
			st.failed++
			if st.firstFail == "" {
				st.firstFail = oneLine(string(o.raw), 200)
			}
		}
		if o.at.After(last) {
			last = o.at
		}
		if st.sample == nil {
			st.sample = o.raw
		}
	}
	st.elapsed = last.Sub(start)
	return st, nil
}

// latencies sends n tasks one at a time and measures each from just before
// the send to the moment its result is published. It returns p50 and p99
// in milliseconds.
func latencies(ctx context.Context, g *goSide, rr *resultReader, task, queue string, n int, args argsFunc, dead <-chan struct{}) (p50, p99 float64, err error) {
	ds := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		id := newTaskID()
		ch := rr.expect(id)
		a, kw := args(i)
		t0 := time.Now()
		if _, err := g.client.Send(ctx, task, a, kw, protocol.SendOptions{TaskID: id, Queue: queue}); err != nil {
			rr.forget(id)
			return 0, 0, err
		}
		select {
		case o := <-ch:
			if o.status != "SUCCESS" {
				return 0, 0, fmt.Errorf("latency task %d ended %s: %s", i, o.status, oneLine(string(o.raw), 200))
			}
			ds = append(ds, o.at.Sub(t0))
		case <-dead:
			return 0, 0, fmt.Errorf("the worker stopped after %d latency tasks", i)
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(stallTimeout):
			rr.forget(id)
			return 0, 0, fmt.Errorf("latency task %d got no result in %s", i, stallTimeout)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	q := func(f float64) float64 {
		i := int(f*float64(len(ds))+0.9999999) - 1
		i = min(max(i, 0), len(ds)-1)
		return float64(ds[i]) / float64(time.Millisecond)
	}
	return q(0.50), q(0.99), nil
}
