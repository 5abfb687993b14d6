package redisnet

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/gateway/httpapi"
	"morag-gpu/internal/testenv"
	"morag-gpu/internal/testgateway"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// sentinelSet is a master, two replicas and three redis-sentinel
// processes watching them as "mymaster". Two replicas, so that the new
// master still has one to replicate to after the old one is killed.
type sentinelSet struct {
	master        *testenv.Process
	masterPort    int
	sentinelPorts []int
}

func (s *sentinelSet) url() string {
	parts := make([]string, len(s.sentinelPorts))
	for i, p := range s.sentinelPorts {
		parts[i] = fmt.Sprintf("sentinel://127.0.0.1:%d", p)
	}
	return strings.Join(parts, ";") + "/0?master_name=mymaster"
}

func startSentinels(t *testing.T) *sentinelSet {
	t.Helper()
	if _, err := exec.LookPath("redis-sentinel"); err != nil {
		t.Skipf("SKIP: redis-sentinel not installed (%v); run scripts/setup or `make test` (Debian package redis-sentinel)", err)
	}
	s := &sentinelSet{masterPort: testenv.FreePort(t)}
	s.master = startRedisServer(t, "--port", fmt.Sprint(s.masterPort), "--repl-diskless-sync-delay", "0")
	for range 2 {
		startRedisServer(t, "--port", fmt.Sprint(testenv.FreePort(t)), "--replicaof", "127.0.0.1", fmt.Sprint(s.masterPort),
			"--repl-diskless-sync-delay", "0")
	}
	for i := 0; i < 3; i++ {
		port := testenv.FreePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		err := os.WriteFile(conf, []byte(fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
sentinel monitor mymaster 127.0.0.1 %d 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
`, port, dir, s.masterPort)), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		p := testenv.Start(t, "", nil, "redis-sentinel", conf)
		if !p.WaitOutput("+monitor master mymaster", 10*time.Second) {
			t.Fatalf("redis-sentinel did not start:\n%s", p.Output())
		}
		s.sentinelPorts = append(s.sentinelPorts, port)
	}
	// A failover needs every sentinel to know the replica and the other
	// two (they find each other through the master, every 2 s).
	waitDiscovery(t, s.sentinelPorts, func(port int) (redis.Conn, error) {
		return redis.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	})
	return s
}

// waitDiscovery waits until every sentinel knows both replicas and the
// other two sentinels, which a failover needs.
func waitDiscovery(t *testing.T, ports []int, dial func(port int) (redis.Conn, error)) {
	t.Helper()
	waitFor(t, 30*time.Second, "sentinels to discover the replicas and each other", func() bool {
		for _, port := range ports {
			c, err := dial(port)
			if err != nil {
				return false
			}
			reps, _ := redis.Values(c.Do("SENTINEL", "REPLICAS", "mymaster"))
			sens, _ := redis.Values(c.Do("SENTINEL", "SENTINELS", "mymaster"))
			c.Close()
			if len(reps) < 2 || len(sens) < 2 {
				return false
			}
		}
		return true
	})
}

// startGateway runs the HTTP gateway on redisURL until the test ends and
// returns its base URL.
func startGateway(t *testing.T, redisURL string) string {
	t.Helper()
	srv, base := testgateway.Unstarted()
	testgateway.Start(t, srv, httpapi.Config{RedisURL: redisURL, UploadDir: t.TempDir(), PublicURL: base,
		WaitTimeout: 30 * time.Second, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	return base
}

// masterAddr asks the first sentinel that answers.
func (s *sentinelSet) masterAddr() string {
	for _, p := range s.sentinelPorts {
		c, err := redis.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		hp, err := redis.Strings(c.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"))
		c.Close()
		if err == nil && len(hp) == 2 {
			return hp[0] + ":" + hp[1]
		}
	}
	return ""
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// durablePublish publishes a task and waits until a replica has it (WAIT
// 1): Redis replicates asynchronously, so a publish the master
// acknowledged but had not yet sent to a replica dies with it. While the
// master lives it keeps waiting (after a failover the remaining replica
// needs a moment to attach to the new master); only when the connection
// fails, so that the publish may be lost, is it sent again with the same
// task id. It returns how many times it published.
func durablePublish(ctx context.Context, pool *redis.Pool, queue string, m *protocol.Message) (int, error) {
	env, err := protocol.Encode(m)
	if err != nil {
		return 0, err
	}
	var bo protocol.Backoff
	for sent := 0; ; {
		err := func() error {
			c, err := pool.GetContext(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := redis.DoContext(c, ctx, "LPUSH", queue, env); err != nil {
				return err
			}
			sent++
			for {
				n, err := redis.Int(redis.DoContext(c, ctx, "WAIT", 1, 1000))
				if err != nil || n >= 1 {
					return err
				}
			}
		}()
		if err == nil {
			return sent, nil
		}
		if !bo.Wait(ctx) {
			return sent, fmt.Errorf("publish %s: %w (last error: %v)", m.ID, ctx.Err(), err)
		}
	}
}

// TestSentinelFailoverLosesNoTask streams tasks from a Go client to a Go
// worker, both on a sentinel:// URL, and SIGKILLs the master a third of
// the way through. Every task must end SUCCESS, with no restart of
// either; a gateway started before the failover and a Python Celery
// client on the same sentinels then work through the new master.
func TestSentinelFailoverLosesNoTask(t *testing.T) {
	s := startSentinels(t)
	redisURL := s.url()
	oldMaster := s.masterAddr()
	rs := newRuns()
	logs := startWorker(t, redisURL, "failover", 10*time.Millisecond, rs,
		runner.Config{Concurrency: 2, VisibilityTimeout: 5 * time.Second})
	gw := startGateway(t, redisURL)

	pool, err := protocol.NewPool(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	backend := protocol.NewBackend(pool, protocol.BackendOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// A result listener (one subscribed connection, as the gateway's)
	// started before the failover must follow it too.
	listener := backend.NewListener()
	lctx, stopListener := context.WithCancel(ctx)
	listened := make(chan error, 1)
	go func() { listened <- listener.Run(lctx) }() // owner: this test
	defer func() { stopListener(); <-listened }()

	const n = 300
	ids := make([]string, n)
	publishes := map[string]int{}
	var slowest time.Duration // the publish that waited out the failover
	var killOnce sync.Once
	start := time.Now()
	for i := range ids {
		m, err := protocol.NewTaskMessage("netsafe.echo", []any{i}, nil, protocol.SendOptions{Queue: "failover"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = m.ID
		p0 := time.Now()
		sent, err := durablePublish(ctx, pool, "failover", m)
		slowest = max(slowest, time.Since(p0))
		if err != nil {
			t.Fatal(err)
		}
		publishes[m.ID] = sent
		if i == n/3 {
			killOnce.Do(func() {
				t.Logf("killing the master %s after %d tasks", oldMaster, i+1)
				s.master.Kill()
			})
		}
		time.Sleep(5 * time.Millisecond)
	}
	published := time.Since(start)
	waitFor(t, 60*time.Second, "every task to reach SUCCESS", func() bool {
		for _, id := range ids {
			m, err := backend.Get(ctx, id)
			if err != nil || m.Status != protocol.StateSuccess {
				return false
			}
		}
		return true
	})
	newMaster := s.masterAddr()
	if newMaster == oldMaster {
		t.Fatalf("the sentinels still name %s as master: no failover happened", oldMaster)
	}
	// The listener, subscribed to the old master, hears results from the
	// new one.
	echoRoundTrips(t, protocol.NewClient(protocol.NewBroker(pool, protocol.BrokerOptions{}), backend).WithListener(listener), "failover", 5, 30*time.Second)
	// The gateway, started before the failover, writes to the new master
	// without a restart.
	resp, err := http.Post(gw+"/api/v1/ingest/url", "application/json", strings.NewReader(`{"url": "https://example.invalid/doc.pdf"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "task_id") {
		t.Fatalf("gateway after the failover: %d %s", resp.StatusCode, body)
	}
	nc, err := redis.Dial("tcp", newMaster)
	if err != nil {
		t.Fatal(err)
	}
	queued, err := redis.Int(nc.Do("LLEN", "celery"))
	nc.Close()
	if err != nil || queued != 1 {
		t.Fatalf("the gateway's task is not on the new master %s (LLEN celery = %d, %v)", newMaster, queued, err)
	}
	// A task runs once per publish, plus once more at most when the
	// worker's hold of it died with the old master before replication.
	for _, id := range ids {
		if runs := rs.get(rs.finished, id); runs > publishes[id]+1 {
			t.Errorf("task %s ran %d times for %d publishes", id, runs, publishes[id])
		}
	}
	// A Python Celery client on the same sentinels (kombu's sentinel
	// transport, Celery's sentinel result backend) reaches the Go worker
	// through the new master.
	testenv.RequireCelery(t)
	parts := make([]string, len(s.sentinelPorts))
	for i, p := range s.sentinelPorts {
		parts[i] = fmt.Sprintf("sentinel://127.0.0.1:%d/0", p)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer pcancel()
	out := testenv.RunPython(t, pctx, strings.Join(parts, ";"), `
import os
from celery import Celery
url = os.environ["REDIS_URL"]
app = Celery("sentinelpeer", broker=url, backend=url)
app.conf.broker_transport_options = {"master_name": "mymaster"}
app.conf.result_backend_transport_options = {"master_name": "mymaster"}
rs = [app.send_task("netsafe.echo", args=[i], queue="failover") for i in range(5)]
print(",".join(str(r.get(timeout=30)) for r in rs))
`)
	if strings.TrimSpace(out) != "0,1,2,3,4" {
		t.Fatalf("Python client through the sentinels got %q, want 0,1,2,3,4", out)
	}
	most, _ := rs.maxPer(rs.finished)
	if most > 1 && testing.Verbose() {
		rs.mu.Lock()
		for id, k := range rs.finished {
			if k == most {
				for _, line := range strings.Split(logs.String(), "\n") {
					if strings.Contains(line, id) || strings.Contains(line, "lease") || strings.Contains(line, "restored") {
						t.Log(line)
					}
				}
				break
			}
		}
		rs.mu.Unlock()
	}
	t.Logf("%d tasks, all SUCCESS after failover %s -> %s; published in %s (slowest publish, across the failover: %s), done %s after start; most runs of one task: %d",
		n, oldMaster, newMaster, published.Round(time.Millisecond), slowest.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), most)
	if strings.Contains(logs.String(), `"level":"error"`) && testing.Verbose() {
		t.Logf("worker logged errors during the failover (expected while the sentinels elect a new master)")
	}
}
