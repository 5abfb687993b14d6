package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"morag-gpu/protocol"
)

// Rows 1 and 2: the protocol package against Python Celery.

func declareProtocolRows(t *table, cfg config) {
	// One synchronous sender waits a Redis round trip per publish, and
	// on this machine that round trip alone caps any client near 7-8×
	// Python's apply_async loop (benchPublish measures it with
	// redis-benchmark and notes it), so the row has no ratio goal.
	t.add("pub1", "publish rate, 1 sender (tasks/s)", fmtRate, goal{})
	t.add("pubN", fmt.Sprintf("publish rate, Go %d goroutines vs Python 1 loop (tasks/s)", cfg.Publishers), fmtRate, atLeast(20))
	t.add("e2e", "end-to-end no-op rate (tasks/s)", fmtRate, atLeast(20))
}

// benchPublish: Go Client.Send in a loop, then from several goroutines,
// against Python apply_async in a loop, each onto an unconsumed queue.
func benchPublish(b *testing.B, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const queue = "bench.publish"
	if err := e.flush(); err != nil {
		b.Fatalf("flush redis: %v", err)
	}

	err := func() error {
		g, err := e.goProtocol()
		if err != nil {
			return err
		}
		defer g.close()
		send := func(ctx context.Context) error {
			return protect(func() error {
				_, err := g.client.Send(ctx, "wire.noop", nil, nil, protocol.SendOptions{Queue: queue})
				return err
			})
		}
		if err := send(ctx); err != nil { // connect outside the timing, as Python does
			return err
		}
		n := e.cfg.PublishGoN
		progress("publish: Go client, %d tasks from 1 goroutine", n)
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := send(ctx); err != nil {
				return err
			}
		}
		el := time.Since(start)
		if got, err := e.llen(queue); err != nil || got != int64(n+1) {
			return fmt.Errorf("queue holds %d messages (err %v), want %d: Send does not publish where Python consumers read", got, err, n+1)
		}
		rate := float64(n) / el.Seconds()
		e.tab.setGo("pub1", rate)
		b.ReportMetric(rate, "go-publish/s")
		if floor, err := e.roundTripFloor(ctx, n); err != nil {
			e.tab.note("publish, 1 sender: no round-trip floor measured: %v", err)
		} else {
			e.tab.note("publish, 1 sender: redis-benchmark -c 1 -t lpush -d 512 (C, one client, nothing else to do) makes %s LPUSHes/s here, the most any synchronous sender can; Go's Send makes %.0f%% of that",
				fmtRate(floor), 100*rate/floor)
		}

		if _, err := e.do("DEL", queue); err != nil {
			return err
		}
		progress("publish: Go client, %d tasks from %d goroutines", n, e.cfg.Publishers)
		grp, gctx := newGroup(ctx)
		start = time.Now()
		for p := 0; p < e.cfg.Publishers; p++ {
			grp.do(func() error {
				for i := p; i < n; i += e.cfg.Publishers {
					if err := send(gctx); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := grp.wait(); err != nil {
			return err
		}
		el = time.Since(start)
		if got, err := e.llen(queue); err != nil || got != int64(n) {
			return fmt.Errorf("queue holds %d messages (err %v) after the concurrent run, want %d", got, err, n)
		}
		e.tab.setGo("pubN", float64(n)/el.Seconds())
		return nil
	}()
	if err != nil {
		e.tab.goNA(err.Error(), "pub1", "pubN")
	}

	if _, err := e.do("DEL", queue); err != nil {
		b.Fatalf("redis: %v", err)
	}
	err = func() error {
		if why := pythonMissing("celery", "redis"); why != "" {
			return fmt.Errorf("%s", why)
		}
		n := e.cfg.PublishPyN
		progress("publish: Python apply_async, %d tasks", n)
		out, err := e.runPython(ctx, b, "bench_publish.py", strconv.Itoa(n), queue)
		if err != nil {
			return err
		}
		var r struct {
			N    int     `json:"n"`
			Rate float64 `json:"rate"`
		}
		if err := json.Unmarshal([]byte(lastLines(out, 1)), &r); err != nil || r.N != n {
			return fmt.Errorf("bench_publish.py printed %q, want its JSON line", oneLine(out, 100))
		}
		if got, err := e.llen(queue); err != nil || got != int64(n+1) {
			return fmt.Errorf("queue holds %d messages (err %v), want %d", got, err, n+1)
		}
		e.tab.setPy("pub1", r.Rate)
		e.tab.setPy("pubN", r.Rate)
		b.ReportMetric(r.Rate, "py-publish/s")
		return nil
	}()
	if err != nil {
		e.tab.pyNA(err.Error(), "pub1", "pubN")
	}
}

// benchE2E: the same Go publisher and result reader in front of a Go
// consumer process (runGoConsumer: protocol Broker/Consumer/Backend) and a
// Python prefork worker running wireapp's wire.noop.
func benchE2E(b *testing.B, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := e.flush(); err != nil {
		b.Fatalf("flush redis: %v", err)
	}
	g, err := e.goProtocol()
	if err != nil {
		e.tab.goNA(err.Error(), "e2e")
		e.tab.pyNA("needs the Go publisher, "+err.Error(), "e2e")
		return
	}
	defer g.close()
	rr, err := newResultReader(ctx, e.redis.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer rr.close()
	noArgs := func(int) ([]any, map[string]any) { return nil, nil }

	err = func() error {
		const queue = "bench.e2e.go"
		p := e.startGoConsumer(b, queue)
		defer p.Kill()
		if err := waitReady(ctx, g, rr, p, "wire.noop", queue, nil); err != nil {
			return err
		}
		n := e.cfg.E2EGoN
		progress("e2e: %d no-op tasks through the Go consumer process (%d goroutines)", n, e.cfg.GoConsumers)
		st, err := throughput(ctx, g, rr, "wire.noop", queue, n, e.cfg.Feeders, noArgs, p.Done())
		if err != nil {
			return err
		}
		if err := stopGoConsumer(p); err != nil {
			return err
		}
		if st.failed > 0 {
			return fmt.Errorf("%d of %d tasks failed: %s", st.failed, n, st.firstFail)
		}
		e.tab.setGo("e2e", st.rate())
		b.ReportMetric(st.rate(), "go-e2e/s")
		return nil
	}()
	if err != nil {
		e.tab.goNA(err.Error(), "e2e")
	}

	err = func() error {
		const queue = "bench.e2e.py"
		p, err := e.startCelery(b, "wireapp", queue, "bench-py@%h")
		if err != nil {
			return err
		}
		defer p.Kill()
		if err := waitReady(ctx, g, rr, p, "wire.noop", queue, nil); err != nil {
			return err
		}
		n := e.cfg.E2EPyN
		progress("e2e: %d no-op tasks through the Python worker (-c 2 prefork)", n)
		st, err := throughput(ctx, g, rr, "wire.noop", queue, n, e.cfg.Feeders, noArgs, p.Done())
		if err != nil {
			return err
		}
		if st.failed > 0 {
			return fmt.Errorf("%d of %d tasks failed: %s", st.failed, n, st.firstFail)
		}
		e.tab.setPy("e2e", st.rate())
		b.ReportMetric(st.rate(), "py-e2e/s")
		return nil
	}()
	if err != nil {
		e.tab.pyNA(err.Error(), "e2e")
	}
}

// runGoConsumer is a small correct Go consumer built on the protocol's
// batch calls: FetchN takes what is waiting (up to 32), and one Commit
// stores SUCCESS and acks. It does what the worker does for a first
// delivery that ends before its start (count and STARTED) goes out: it
// writes neither, and its ack skips the DEL of the count it never wrote
// (the wire app tracks started, so the Python worker writes STARTED). A
// redelivered message's start is counted first, as the worker counts it.
// stop ends it and returns the first error; dead closes when it ended on
// its own.
func runGoConsumer(ctx context.Context, g *goSide, queue string, workers int) (stop func() error, dead <-chan struct{}) {
	grp, gctx := newGroup(ctx)
	host, _ := os.Hostname()
	node := "bench-go-consumer@" + host
	for w := 0; w < workers; w++ {
		grp.do(func() error {
			c := g.broker.NewConsumer(queue)
			// Tasks already fetched are finished and acked after a stop,
			// as the worker does: a stop cancels only the next fetch.
			finish := context.WithoutCancel(gctx)
			for gctx.Err() == nil {
				ds, err := c.FetchN(gctx, time.Second, 32)
				if err != nil {
					if gctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("fetch: %w", err)
				}
				var starts, finishes []protocol.CommitOp
				for _, d := range ds {
					if d.Err != nil {
						if err := g.broker.DeadLetter(finish, d, d.Err.Error()); err != nil {
							return fmt.Errorf("dead-letter: %w", err)
						}
						continue
					}
					m := d.Message
					counted := d.Starts > 0 || m.Redelivered
					if counted {
						starts = append(starts, protocol.CommitOp{Kind: protocol.CommitStart, Tag: d.Tag, Starts: d.Starts})
					}
					finishes = append(finishes, protocol.CommitOp{Kind: protocol.CommitFinish, Tag: d.Tag, Uncounted: !counted,
						Store: &protocol.StoreRequest{TaskID: m.ID, State: protocol.StateSuccess, Result: nil, Message: m, Worker: node}})
				}
				if len(starts) > 0 {
					if _, err := g.broker.Commit(finish, g.backend, starts); err != nil {
						return fmt.Errorf("count the starts: %w", err)
					}
				}
				// wire.noop runs here.
				if _, err := g.broker.Commit(finish, g.backend, finishes); err != nil {
					return fmt.Errorf("store SUCCESS and ack: %w", err)
				}
			}
			return nil
		})
	}
	var once bool
	var err error
	return func() error {
		if !once {
			once = true
			grp.cancel()
			err = grp.wait()
		}
		return err
	}, gctx.Done()
}

// roundTripFloor is how many LPUSHes one redis-benchmark client makes per
// second against the bench's Redis: the round-trip bound on any
// synchronous publisher.
func (e *env) roundTripFloor(ctx context.Context, n int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-benchmark", "-h", "127.0.0.1", "-p", strconv.Itoa(e.redis.Port),
		"-c", "1", "-n", strconv.Itoa(n), "-d", "512", "-t", "lpush", "--csv").Output()
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark: %w", err)
	}
	if _, err := e.do("DEL", "mylist"); err != nil { // redis-benchmark's key
		return 0, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) > 1 && f[0] == `"LPUSH"` {
			return strconv.ParseFloat(strings.Trim(f[1], `"`), 64)
		}
	}
	return 0, fmt.Errorf("redis-benchmark printed no LPUSH rate: %q", oneLine(string(out), 200))
}
