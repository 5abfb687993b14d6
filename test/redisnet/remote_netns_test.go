package redisnet

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/contract"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// TestRemoteRealNetwork runs the worker binary as a gateway-mediated
// worker (-server, MORAG_API_KEY, no Redis URL) in a network namespace of
// its own. Its only way to the gateway is the veth link into the
// gateway's namespace, where the 80 ms RTT / 1 % loss proxy listens (and
// hands on to the gateway, with Redis next to it). Tasks and a video
// download complete over it, the download resumes after its connections
// are cut, and partitions are the veth link taken down: longer than the
// visibility timeout mid-task, each task finishes once with one result;
// shorter, nothing runs twice.
func TestRemoteRealNetwork(t *testing.T) {
	nl := newWorkerNetLab(t)
	// The gateway's front door is nsR's veth address: the worker's traffic
	// crosses the veth link, then the proxy.
	ln, err := inNetns(nl.nsR, func() (net.Listener, error) { return net.Listen("tcp", nl.addrR+":0") })
	if err != nil {
		t.Fatal(err)
	}
	const vt = 4 * time.Second
	l := newRemoteLabOn(t, ln, vt, vt, 40*time.Millisecond, 0.01)
	q := contract.GPUQueue("alice")
	a := nl.start(nl.nsW, "env", "MORAG_API_KEY="+l.keys["alice"], "REDIS_URL=", nl.workerBin, "-server", l.url,
		"-queues", q, "-hostname", "netns-remote@%h", "-concurrency", "4", "-visibility-timeout", vt.String(),
		"-server-wait", "5s", "-diagnostics", "-loglevel", "info")
	if !a.WaitOutput(`"ready."`, 60*time.Second) {
		t.Fatalf("the remote worker did not become ready:\n%s", a.Output())
	}
	c := l.client(t)
	states := recordStates(t, func() (redis.Conn, error) { return redis.Dial("tcp", l.r.Addr()) })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	t.Run("80ms RTT and 1% loss", func(t *testing.T) {
		conn, err := inNetns(nl.nsW, func() (net.Conn, error) { return net.DialTimeout("tcp", l.px.Addr(), 5*time.Second) })
		if err != nil {
			t.Fatal(err)
		}
		var best time.Duration
		buf := make([]byte, 4096)
		for i := range 5 {
			t0 := time.Now()
			if _, err := conn.Write([]byte("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Read(buf); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(t0); i == 0 || d < best {
				best = d
			}
		}
		conn.Close()
		if best < 80*time.Millisecond {
			t.Fatalf("fastest request from the worker's namespace took %s; the link should add 80 ms", best)
		}
		const n = 40
		start := time.Now()
		rs := make([]*protocol.AsyncResult, n)
		for i := range rs {
			if rs[i], err = c.Send(ctx, "diag.echo", []any{i}, nil, protocol.SendOptions{Queue: q}); err != nil {
				t.Fatal(err)
			}
		}
		for i, r := range rs {
			raw, err := r.Get(ctx)
			if err != nil {
				t.Fatalf("task %d: %v", i, err)
			}
			var echo struct{ Args []int }
			if json.Unmarshal(raw, &echo) != nil || len(echo.Args) != 1 || echo.Args[0] != i {
				t.Fatalf("task %d returned %s", i, raw)
			}
		}
		t.Logf("%d tasks in %s from the worker's namespace (fastest /health %s, %d chunks delayed by a retransmission)",
			n, time.Since(start).Round(time.Millisecond), best.Round(time.Millisecond), l.px.Lost())
	})

	t.Run("video download resumes after a cut", func(t *testing.T) {
		video := testVideo(t, 25)
		st, _ := os.Stat(video)
		l.waitRemoteWorkerListed(t)
		cuts := l.px.CutAt(st.Size() / 5)
		id, queue := l.uploadAsync(t, video)
		if queue != q {
			t.Fatalf("the upload went to %q, want %s", queue, q)
		}
		// Once a fifth of the video has crossed, the connections through
		// the link are dropped and the link goes down for a moment.
		cut := 0
		select {
		case cut = <-cuts:
		case <-time.After(2 * time.Minute):
			t.Fatal("a fifth of the video never crossed the link")
		}
		nl.linkDown()
		time.Sleep(time.Second)
		nl.linkUp()
		m := l.resultMeta(t, id, 3*time.Minute)
		if m["status"] != "SUCCESS" {
			t.Fatalf("result %v\nworker log:\n%s", m, a.Output())
		}
		d := downloadMeta(t, m)
		if d.Bytes != st.Size() || !d.Verified || d.Resumes < 1 {
			t.Errorf("download %+v after closing %d connection ends; want %d bytes, sha256 verified, at least one Range resume", d, cut, st.Size())
		}
		t.Logf("%d MB video through the link: %d connection ends closed, download %+v", st.Size()>>20, cut, d)
	})

	t.Run("partition longer than the visibility timeout", func(t *testing.T) {
		var ids []string
		for range 2 {
			r, err := c.Send(ctx, "diag.sleep", []any{3 * vt.Seconds()}, nil, protocol.SendOptions{Queue: q})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, r.ID)
		}
		waitFor(t, 30*time.Second, "the remote worker to start both tasks", func() bool {
			s := a.LogsByTask("task started")
			return s[ids[0]] == 1 && s[ids[1]] == 1
		})
		nl.linkDown()
		// A second gateway-mediated worker, next to the gateway, takes the
		// messages once the gateway restores them.
		b := testenv.Start(t, "", []string{"MORAG_API_KEY=" + l.keys["alice"], "REDIS_URL="}, nl.workerBin, "-server", l.direct,
			"-queues", q, "-hostname", "spare@%h", "-visibility-timeout", vt.String(), "-server-wait", "2s", "-diagnostics", "-loglevel", "info")
		if !b.WaitOutput(`"ready."`, 60*time.Second) {
			t.Fatalf("the spare worker did not become ready:\n%s", b.Output())
		}
		if !a.WaitOutput("lease lost while the task ran", 4*vt) {
			t.Fatalf("the remote worker did not give up its lease within %s of the partition", 4*vt)
		}
		time.Sleep(vt)
		nl.linkUp()
		for _, id := range ids {
			if _, err := c.Result(id).Get(ctx); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 30*time.Second, "nothing left held", func() bool { return l.held() == 0 })
		time.Sleep(2 * time.Second) // anything the remote worker still meant to send lands now
		doneA, doneB := a.LogsByTask("task succeeded"), b.LogsByTask("task succeeded")
		finishedOnce(t, ids, doneA, doneB, states)
		b.Signal(syscall.SIGTERM)
		b.Wait(30 * time.Second)
	})

	t.Run("partition shorter than the visibility timeout", func(t *testing.T) {
		lostBefore := strings.Count(a.Output(), "lease lost")
		r, err := c.Send(ctx, "diag.sleep", []any{4}, nil, protocol.SendOptions{Queue: q})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "the remote worker to start the task", func() bool { return a.LogsByTask("task started")[r.ID] == 1 })
		nl.linkDown()
		time.Sleep(vt / 2)
		nl.linkUp()
		if _, err := r.Get(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the recorder to see SUCCESS", func() bool { return states.count(r.ID, "SUCCESS") > 0 })
		waitFor(t, 30*time.Second, "nothing left held", func() bool { return l.held() == 0 })
		ranOnceKeepingLease(t, a, r.ID, states, lostBefore)
	})
	a.Signal(syscall.SIGTERM)
	if _, ok := a.Wait(30 * time.Second); !ok {
		t.Errorf("the remote worker did not stop on SIGTERM")
	}
}
