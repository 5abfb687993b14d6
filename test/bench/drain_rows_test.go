package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// Drain rows: a queue pre-filled with diag.echo tasks, drained by a worker
// started afterwards at its defaults (Go: `worker -concurrency N
// -diagnostics`; Python: `celery worker -c 2`, WARNING, no -E), then the
// same with task events (-events / -E). The rate is taken from the first
// result to the last, so start-up does not count. Redis commands per task
// come from INFO commandstats over the default drain (reset after the
// pre-fill), Go and Python alike. The mixed row runs a Go and a Python
// worker on one queue at full speed and checks that every task ran exactly
// once.

func declareDrainRows(t *table) {
	t.add("drain", "drain rate, pre-filled queue, defaults (tasks/s)", fmtRate, atLeast(20))
	t.add("drain_ev", "drain rate with task events (-events / -E) (tasks/s)", fmtRate, atLeast(20))
	t.add("cmds", "Redis commands per task (INFO commandstats, inside Lua included)", fmtPer, atMost(1))
	t.add("calls", "Redis calls per task from the worker (commands outside Lua)", fmtPer, atMost(1))
	t.add("mixed", "mixed fleet, Go + Python on one queue, each task once (tasks/s)", fmtRate, goal{})
}

var drainKeys = []string{"drain", "drain_ev", "cmds", "calls", "mixed"}

func fmtPer(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// luaInternal lists commands the Go worker's scripts run inside Lua; they
// are counted by commandstats but cost no round trip. The worker itself
// never sends them outside a script on its hot path.
var luaInternal = map[string]bool{
	"rpop": true, "zadd": true, "hset": true, "hexists": true, "incr": true, "expire": true,
	"get": true, "setex": true, "set": true, "publish": true, "zrem": true, "hdel": true, "del": true,
	"exists": true, "lpush": true, "sadd": true,
}

func benchDrain(b *testing.B, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	g, err := e.goProtocol()
	if err != nil {
		e.tab.goNA(err.Error(), drainKeys...)
		e.tab.pyNA("needs the Go publisher, "+err.Error(), drainKeys...)
		return
	}
	defer g.close()
	rr, err := newResultReader(ctx, e.redis.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer rr.close()
	bin, berr := e.build(ctx, "worker")
	n := e.cfg.DrainN
	conc := strconv.Itoa(e.cfg.GoConcurrency)

	for _, events := range []bool{false, true} {
		key := "drain"
		goArgs := []string{"-concurrency", conc, "-diagnostics", "-hostname", "bench-go@%h"}
		var pyExtra []string
		if events {
			key = "drain_ev"
			goArgs = append(goArgs, "-events")
			pyExtra = []string{"-E"}
		}
		if berr != nil {
			e.tab.goNA(berr.Error(), key)
		} else {
			err := e.drainOnce(ctx, g, rr, e.cfg.DrainGoN, "bench.drain.go", key, !events, func(queue string) *testenv.Process {
				return testenv.Start(b, "", []string{"REDIS_URL=" + e.redis.URL()}, bin,
					append([]string{"-queues", queue, "-redis", e.redis.URL()}, goArgs...)...)
			}, e.tab.setGo)
			if err != nil {
				e.tab.goNA(err.Error(), key)
			}
		}
		err := e.drainOnce(ctx, g, rr, n, "bench.drain.py", key, !events, func(queue string) *testenv.Process {
			p, err := e.startCeleryArgs(b, "diagapp", queue, "bench-py@%h", pyExtra...)
			if err != nil {
				e.tab.pyNA(err.Error(), key)
				return nil
			}
			return p
		}, e.tab.setPy)
		if err != nil {
			e.tab.pyNA(err.Error(), key)
		}
	}

	if berr != nil {
		e.tab.goNA(berr.Error(), "mixed")
		return
	}
	if err := e.mixed(ctx, b, g, rr, bin); err != nil {
		e.tab.goNA(err.Error(), "mixed")
	}
	e.tab.pyNA("the row is both", "mixed")
}

// drainOnce pre-fills queue with n diag.echo tasks, starts a worker on it
// and measures the drain. With stats it also fills the command rows.
func (e *env) drainOnce(ctx context.Context, g *goSide, rr *resultReader, n int, queue, key string, stats bool,
	start func(queue string) *testenv.Process, set func(string, float64)) error {
	if err := e.flush(); err != nil {
		return err
	}
	ids := make([]string, n)
	chans := make([]<-chan outcome, n)
	for i := range ids {
		ids[i] = newTaskID()
		chans[i] = rr.expect(ids[i])
	}
	defer rr.forget(ids...)
	progress("drain: pre-filling %s with %d diag.echo", queue, n)
	grp, gctx := newGroup(ctx)
	for p := 0; p < e.cfg.Publishers; p++ {
		grp.do(func() error {
			for i := p; i < n; i += e.cfg.Publishers {
				a, kw := echoArgs(i)
				if _, err := g.client.Send(gctx, "diag.echo", a, kw, protocol.SendOptions{TaskID: ids[i], Queue: queue}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := grp.wait(); err != nil {
		return err
	}
	if _, err := e.do("CONFIG", "RESETSTAT"); err != nil {
		return err
	}
	p := start(queue)
	if p == nil {
		return nil // start reported why
	}
	defer p.Kill()
	progress("drain: %s draining %d tasks (%s)", p.Name, n, key)
	var first, last time.Time
	for i, ch := range chans {
		var o outcome
		select {
		case o = <-ch:
		case <-p.Done():
			return fmt.Errorf("the worker exited after %d of %d results: %s", i, n, lastLines(p.Output(), 3))
		case <-time.After(stallTimeout):
			return fmt.Errorf("stalled after %d of %d results", i, n)
		}
		if o.status != "SUCCESS" {
			return fmt.Errorf("a diag.echo ended %s: %s", o.status, oneLine(string(o.raw), 200))
		}
		if first.IsZero() || o.at.Before(first) {
			first = o.at
		}
		if o.at.After(last) {
			last = o.at
		}
	}
	set(key, float64(n-1)/last.Sub(first).Seconds())
	if stats {
		total, outside, top, err := e.commandStats()
		if err != nil {
			return err
		}
		set("cmds", float64(total)/float64(n))
		set("calls", float64(outside)/float64(n))
		e.tab.note("commandstats per task, %s: %s", p.Name, top)
	}
	return nil
}

// commandStats sums INFO commandstats: all calls, calls of commands the Go
// scripts do not run inside Lua (plus the EVALSHAs themselves), and the
// top commands per task as text.
func (e *env) commandStats() (total, outside int64, top string, err error) {
	raw, err := redis.String(e.do("INFO", "commandstats"))
	if err != nil {
		return 0, 0, "", err
	}
	type kv struct {
		name  string
		calls int64
	}
	var all []kv
	scripted := false
	for _, line := range strings.Split(raw, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		name = strings.TrimPrefix(name, "cmdstat_")
		if name == "config" || name == "info" || name == "psubscribe" {
			continue // the harness's own
		}
		calls := int64(0)
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				calls, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		if name == "evalsha" || name == "eval" {
			scripted = true
		}
		all = append(all, kv{name, calls})
		total += calls
	}
	for _, c := range all {
		if !scripted || !luaInternal[c.name] {
			outside += c.calls
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].calls > all[j].calls })
	var parts []string
	for i, c := range all {
		if i == 8 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", c.name, c.calls))
	}
	return total, outside, strings.Join(parts, ", "), nil
}

// mixed runs a Go worker (defaults) and a Python worker on one queue,
// publishes diag.echo at full speed and checks each ran exactly once:
// Python's diag.echo INCRs diag:runs:<id>, the result names the worker.
func (e *env) mixed(ctx context.Context, b *testing.B, g *goSide, rr *resultReader, bin string) error {
	if err := e.flush(); err != nil {
		return err
	}
	const queue = "bench.mixed"
	gp := testenv.Start(b, "", []string{"REDIS_URL=" + e.redis.URL()}, bin, "-queues", queue, "-redis", e.redis.URL(),
		"-concurrency", strconv.Itoa(e.cfg.GoConcurrency), "-diagnostics", "-hostname", "bench-go@%h")
	defer gp.Kill()
	if !gp.WaitOutput(`"ready."`, 60*time.Second) {
		return fmt.Errorf("the Go worker did not start: %s", lastLines(gp.Output(), 3))
	}
	pp, err := e.startCeleryArgs(b, "diagapp", queue, "bench-py@%h")
	if err != nil {
		return err
	}
	defer pp.Kill()
	if err := waitReady(ctx, g, rr, pp, "diag.echo", queue, []any{"ready"}); err != nil {
		return err
	}
	n := e.cfg.DrainN
	progress("mixed: %d diag.echo through a Go and a Python worker on one queue", n)
	ids := make([]string, n)
	st, err := throughputIDs(ctx, g, rr, "diag.echo", queue, ids, e.cfg.Feeders, echoArgs, gp.Done())
	if err != nil {
		return err
	}
	if st.failed > 0 {
		return fmt.Errorf("%d of %d tasks failed: %s", st.failed, n, st.firstFail)
	}
	c, err := redis.Dial("tcp", e.redis.Addr())
	if err != nil {
		return err
	}
	defer c.Close()
	byWorker := map[string]int{}
	for i, id := range ids {
		raw, err := redis.Bytes(c.Do("GET", "celery-task-meta-"+id))
		if err != nil {
			return fmt.Errorf("task %d has no result: %v", i, err)
		}
		var meta struct {
			Result struct {
				Worker string `json:"worker"`
			} `json:"result"`
		}
		_ = json.Unmarshal(raw, &meta)
		runs, _ := redis.Int(c.Do("GET", "diag:runs:"+id))
		w := meta.Result.Worker
		byWorker[strings.SplitN(w, "@", 2)[0]]++
		py := strings.HasPrefix(w, "bench-py@")
		if (py && runs != 1) || (!py && runs != 0) {
			return fmt.Errorf("task %s ran more than once: result from %s, Python ran it %d times", id, w, runs)
		}
	}
	if n, _ := redis.Int(c.Do("ZCARD", "unacked_index")); n != 0 {
		return fmt.Errorf("%d messages still unacked after the run", n)
	}
	e.tab.setGo("mixed", st.rate())
	e.tab.note("mixed: tasks per worker %v; every task ran exactly once", byWorker)
	return nil
}

// startCeleryArgs is startCelery with extra worker arguments.
func (e *env) startCeleryArgs(tb testing.TB, app, queue, node string, extra ...string) (*testenv.Process, error) {
	if why := pythonMissing("celery", "redis"); why != "" {
		return nil, fmt.Errorf("%s", why)
	}
	args := append([]string{"-m", "celery", "-A", app, "worker", "-P", "prefork", "-c", "2", "-Q", queue, "-n", node,
		"--without-mingle", "--without-gossip", "--loglevel=WARNING"}, extra...)
	return testenv.Start(tb, "", testenv.PythonEnv(tb, e.redis.URL()), testenv.PythonBin, args...), nil
}
