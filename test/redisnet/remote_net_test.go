package redisnet

// Gateway-mediated workers (package remote) on a bad network: the gateway
// (gateway/httpapi, in process) and Redis on loopback, the worker behind
// the delaying/dropping proxy, so every request it makes to the gateway
// (fetch, lease, commit, the download of its input) crosses the 80 ms /
// 1 % loss link, and partitions cut it from the gateway, not from Redis.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/auth"
	"morag-gpu/contract"
	"morag-gpu/gateway/httpapi"
	"morag-gpu/internal/testenv"
	"morag-gpu/internal/testgateway"
	"morag-gpu/media"
	"morag-gpu/protocol"
	"morag-gpu/remote"
	"morag-gpu/worker/runner"
	"morag-gpu/worker/tasks"
)

// remoteLab is Redis and a gateway on loopback, and a proxy in front of
// the gateway for the workers under test. The gateway's PublicURL is the
// proxy's, so the signed URLs of uploads it gives remote workers make
// their downloads cross the proxy too.
type remoteLab struct {
	r      *testenv.Redis
	direct string // the gateway's URL on loopback
	url    string // the gateway's URL through the proxy
	px     *proxy
	vt     time.Duration
	keys   map[string]string // user id -> API key
	pool   *redis.Pool
}

// newRemoteLab starts Redis, the gateway with visibility timeout vt (its
// confirm window is vt as well), and a proxy adding delay each way and
// losing loss of the chunks.
func newRemoteLab(t testing.TB, vt, delay time.Duration, loss float64) *remoteLab {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newRemoteLabOn(t, ln, vt, vt, delay, loss)
}

// newRemoteLabOn is newRemoteLab with the proxy serving on ln (in another
// network namespace, say) and the gateway's confirm window.
func newRemoteLabOn(t testing.TB, ln net.Listener, vt, confirm, delay time.Duration, loss float64) *remoteLab {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	r := testenv.StartRedis(t)
	l := &remoteLab{r: r, vt: vt, keys: map[string]string{}}
	srv, direct := testgateway.Unstarted()
	l.direct = direct
	var err error
	var d net.Dialer
	gw := srv.Listener.Addr().String()
	l.px = startProxy(t, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", gw) }, delay, loss)
	l.url = "http://" + l.px.Addr()
	testgateway.Start(t, srv, httpapi.Config{RedisURL: r.URL(), UploadDir: t.TempDir(), PublicURL: l.url, WaitTimeout: 5 * time.Minute,
		MaxUpload: 1 << 30, VisibilityTimeout: vt, WorkerConfirm: confirm, WorkerMaxWait: 5 * time.Second,
		Logger: zerolog.New(io.Discard)})
	if l.pool, err = protocol.NewPool(r.URL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.pool.Close() })
	ks := auth.NewKeyService(l.pool)
	for _, u := range []string{"alice"} {
		k, _, err := ks.Create(context.Background(), u, "remote network test", 1)
		if err != nil {
			t.Fatal(err)
		}
		l.keys[u] = k
	}
	return l
}

// transport returns a runner.Config.NewTransport for alice's key on the
// gateway at server.
func (l *remoteLab) transport(server string) func(runner.TransportConfig) (runner.Transport, error) {
	return func(tc runner.TransportConfig) (runner.Transport, error) {
		c, err := remote.NewClient(remote.ClientOptions{Server: server, APIKey: l.keys["alice"], Hostname: tc.Hostname,
			Queues: tc.Queues, Wait: 5 * time.Second, Logger: tc.Logger})
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err = c.Hello(ctx)
		return c, err
	}
}

// worker starts an in-process gateway-mediated worker for alice's GPU
// queue, through the proxy (viaProxy) or on loopback, running netsafe.echo
// (counted in rs) and whatever register adds.
func (l *remoteLab) worker(t *testing.T, name string, viaProxy bool, rs *runs, register func(*runner.Mux)) *logBuf {
	t.Helper()
	server := l.direct
	if viaProxy {
		server = l.url
	}
	return startWorkerMux(t, server, contract.GPUQueue("alice"), 0, rs,
		runner.Config{Hostname: name + "@%h", VisibilityTimeout: l.vt, NewTransport: l.transport(server)}, register)
}

func (l *remoteLab) client(t testing.TB) *protocol.Client {
	return protocol.NewClient(protocol.NewBroker(l.pool, protocol.BrokerOptions{VisibilityTimeout: l.vt}), protocol.NewBackend(l.pool, protocol.BackendOptions{}))
}

func (l *remoteLab) held() int {
	c := l.pool.Get()
	defer c.Close()
	n, _ := redis.Int(c.Do("ZCARD", "unacked_index"))
	return n
}

// TestRemoteWorkerSlowLossyLink: a gateway-mediated worker 80 ms RTT and
// 1 % loss away from its gateway completes every task, each with its own
// result, and leaves nothing held.
func TestRemoteWorkerSlowLossyLink(t *testing.T) {
	l := newRemoteLab(t, 10*time.Second, 40*time.Millisecond, 0.01)
	// What the worker sees: an HTTP round trip to the gateway through the
	// proxy takes at least 80 ms.
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	var best time.Duration
	for i := range 5 {
		t0 := time.Now()
		resp, err := hc.Get(l.url + "/health")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if d := time.Since(t0); i == 0 || d < best {
			best = d
		}
	}
	if best < 80*time.Millisecond {
		t.Fatalf("fastest request through the proxy took %s; the link should add 80 ms", best)
	}
	rs := newRuns()
	l.worker(t, "slow", true, rs, nil)
	start := time.Now()
	echoRoundTrips(t, l.client(t), contract.GPUQueue("alice"), 40, 2*time.Minute)
	if most, n := rs.maxPer(rs.finished); most != 1 || n != 40 {
		t.Errorf("finished runs: %d tasks, at most %d runs of one; want 40 tasks run once each", n, most)
	}
	waitFor(t, 10*time.Second, "nothing left held", func() bool { return l.held() == 0 })
	t.Logf("40 tasks through 80 ms RTT / 1%% loss in %s (fastest /health %s, %d chunks delayed by a retransmission)",
		time.Since(start).Round(time.Millisecond), best.Round(time.Millisecond), l.px.Lost())
}

// remotePartition runs one netsafe.echo task of taskS seconds on worker A
// (behind the proxy), partitions A from the gateway for part once it has
// started, and returns the task id once its result is in and nothing is
// held. With spare set, worker B runs on loopback from the start of the
// partition.
func remotePartition(t *testing.T, vt, part time.Duration, taskS float64, spare bool) (rs *runs, logsA *logBuf, states *stateLog, id string) {
	l := newRemoteLab(t, vt, 40*time.Millisecond, 0.01)
	rs = newRuns()
	states = recordStates(t, func() (redis.Conn, error) { return redis.Dial("tcp", l.r.Addr()) })
	logsA = l.worker(t, "behind-proxy", true, rs, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := l.client(t).Send(ctx, "netsafe.echo", []any{"once", taskS}, nil, protocol.SendOptions{Queue: contract.GPUQueue("alice")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "worker A to start the task", func() bool { return rs.get(rs.started, res.ID) == 1 })
	time.Sleep(300 * time.Millisecond)
	l.px.Pause()
	if spare {
		l.worker(t, "spare", false, rs, nil)
	}
	time.Sleep(part)
	l.px.Resume()
	raw, err := res.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != `"once"` {
		t.Fatalf("result %s, want \"once\"", raw)
	}
	waitFor(t, 10*time.Second, "the recorder to see SUCCESS", func() bool { return states.count(res.ID, "SUCCESS") > 0 })
	waitFor(t, 20*time.Second, "nothing left held", func() bool { return l.held() == 0 })
	// Anything worker A still meant to send, held by the partition, has
	// arrived by now.
	time.Sleep(2 * time.Second)
	if n := states.count(res.ID, "SUCCESS"); n != 1 {
		t.Errorf("SUCCESS published %d times, want 1 (states %v)", n, states.of(res.ID))
	}
	for _, st := range states.of(res.ID) {
		if st != "STARTED" && st != "SUCCESS" {
			t.Errorf("state %s published (all: %v); an abandoned run must store nothing", st, states.of(res.ID))
		}
	}
	if n := rs.get(rs.finished, res.ID); n != 1 {
		t.Errorf("the task finished %d times, want 1", n)
	}
	if l.held() != 0 {
		t.Errorf("%d messages held after the task's result", l.held())
	}
	return rs, logsA, states, res.ID
}

// TestRemotePartitionLongerThanVisibility partitions a gateway-mediated
// worker from its gateway for twice the visibility timeout in the middle
// of a task. It must give the lease up (cancel its handler, store
// nothing); the gateway restores the message and a second worker runs it:
// one finished run, one SUCCESS.
func TestRemotePartitionLongerThanVisibility(t *testing.T) {
	const vt = 3 * time.Second
	rs, logsA, states, id := remotePartition(t, vt, 2*vt+time.Second, 3*vt.Seconds(), true)
	if !logsA.contains("lease lost while the task ran") {
		t.Errorf("worker A did not declare its lease lost")
	}
	if n := rs.get(rs.started, id); n != 2 {
		t.Errorf("the task started %d times, want 2 (the abandoned run and the spare's)", n)
	}
	t.Logf("runs started %d, finished %d; states %v", rs.get(rs.started, id), rs.get(rs.finished, id), states.of(id))
}

// TestRemotePartitionShorterThanVisibility partitions it for half the
// visibility timeout mid-task: the lease survives (the refreshes held by
// the partition arrive when it ends), the task runs once, nothing is
// restored.
func TestRemotePartitionShorterThanVisibility(t *testing.T) {
	const vt = 6 * time.Second
	rs, logsA, _, id := remotePartition(t, vt, vt/2, 5, false)
	if n := rs.get(rs.started, id); n != 1 {
		t.Errorf("the task started %d times, want 1", n)
	}
	if logsA.contains("lease lost") {
		t.Errorf("worker A declared its lease lost after a partition shorter than the visibility timeout")
	}
}

// TestRemotePartitionRightAfterFetch partitions the worker from the
// gateway just after the gateway took a message for it (its fetch answer
// on the way), for longer than the gateway's confirm window but less than
// the visibility timeout. The gateway restores the unconfirmed message and
// a spare worker runs it; when the held answer finally reaches the first
// worker, too late to be confirmed in time, it must not run it: one
// started run, one SUCCESS.
func TestRemotePartitionRightAfterFetch(t *testing.T) {
	const vt, confirm = 30 * time.Second, 2 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newRemoteLabOn(t, ln, vt, confirm, 40*time.Millisecond, 0)
	rs := newRuns()
	states := recordStates(t, func() (redis.Conn, error) { return redis.Dial("tcp", l.r.Addr()) })
	logsA := l.worker(t, "behind-proxy", true, rs, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := l.client(t).Send(ctx, "netsafe.echo", []any{"once", 2}, nil, protocol.SendOptions{Queue: contract.GPUQueue("alice")})
	if err != nil {
		t.Fatal(err)
	}
	// The answer needs 40 ms to cross the proxy: pause as soon as the
	// gateway holds the message.
	waitHeld := time.Now().Add(20 * time.Second)
	for l.held() == 0 {
		if time.Now().After(waitHeld) {
			t.Fatal("the gateway never took the message for the worker")
		}
		time.Sleep(2 * time.Millisecond)
	}
	l.px.Pause()
	if rs.get(rs.started, res.ID) != 0 {
		t.Skip("SKIP: the worker started the task before the partition (the machine was too slow to pause within 40 ms)")
	}
	l.worker(t, "spare", false, rs, nil)
	time.Sleep(3 * confirm)
	l.px.Resume()
	raw, err := res.Get(ctx)
	if err != nil || string(raw) != `"once"` {
		t.Fatalf("result %s, %v", raw, err)
	}
	waitFor(t, 20*time.Second, "nothing left held", func() bool { return l.held() == 0 })
	time.Sleep(3 * time.Second) // a run the first worker started late would end now
	if n := rs.get(rs.started, res.ID); n != 1 {
		t.Errorf("the task started %d times, want 1", n)
	}
	if n := states.count(res.ID, "SUCCESS"); n != 1 {
		t.Errorf("SUCCESS published %d times, want 1 (states %v)", n, states.of(res.ID))
	}
	if !logsA.contains("could not confirm fetched messages") {
		t.Errorf("the first worker did not say it dropped the late fetch answer")
	}
}

// testVideo returns a video of about mb megabytes (testsrc2 with noise,
// no audio, so no transcriber is needed), made with ffmpeg once and kept
// in the temporary directory for later runs.
func testVideo(t testing.TB, mb int) string {
	t.Helper()
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skipf("SKIP: ffmpeg not installed (%v); run scripts/setup", err)
	}
	path := filepath.Join(os.TempDir(), fmt.Sprintf("morag-redisnet-video-%dMB.mp4", mb))
	if st, err := os.Stat(path); err == nil && st.Size() > int64(mb)<<20*8/10 {
		return path
	}
	tmp := path + fmt.Sprintf(".%d.tmp.mp4", os.Getpid())
	// 20 Mbit/s of noise: 2.5 MB a second.
	secs := max(1, mb*10/25)
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
		"-i", "testsrc2=size=1280x720:rate=25", "-t", fmt.Sprint(secs), "-vf", "noise=alls=30:allf=t",
		"-c:v", "libx264", "-preset", "ultrafast", "-b:v", "20M", "-maxrate", "20M", "-bufsize", "40M",
		"-pix_fmt", "yuv420p", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// mediaTasks registers MoRAG's media tasks on a worker, downloading with
// alice's key from the gateway (the URL its tasks name).
func (l *remoteLab) mediaTasks(t testing.TB, gatewayURL string) func(*runner.Mux) {
	dir := t.TempDir()
	return func(mux *runner.Mux) {
		if err := tasks.RegisterMedia(mux, tasks.MediaConfig{Tools: &media.Tools{TempDir: dir}, NoTranscriber: tasks.NoTranscriberFail,
			TranscriberReason: "no transcriber in this test", APIKey: l.keys["alice"], GatewayURL: gatewayURL, TempDir: dir,
			Logger: zerolog.New(io.Discard)}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitRemoteWorkerListed waits until the gateway's fleet lists a live
// worker on alice's GPU queue (gpu=true routes there only then).
func (l *remoteLab) waitRemoteWorkerListed(t testing.TB) {
	t.Helper()
	q := contract.GPUQueue("alice")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(l.direct + "/api/v1/status/workers")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"`+q+`"`) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the gateway's fleet never listed a worker on %s", q)
}

// uploadAsync posts file to /process/file?gpu=true&async=true with alice's
// key, on loopback, and returns the task id and the queue it went to.
func (l *remoteLab) uploadAsync(t testing.TB, file string) (id, queue string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() { // owner: uploadAsync; the request reads the pipe to its end
		fw, err := mw.CreateFormFile("file", filepath.Base(file))
		if err == nil {
			_, err = io.Copy(fw, f)
		}
		for _, kv := range [][2]string{{"gpu", "true"}, {"content_type", "video"}} {
			if err == nil {
				err = mw.WriteField(kv[0], kv[1])
			}
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequest(http.MethodPost, l.direct+"/process/file?async=true", pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+l.keys["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	var acc httpapi.Accepted
	if err := json.Unmarshal(body, &acc); err != nil || acc.TaskID == "" {
		t.Fatalf("upload answer without a task id: %s", body)
	}
	return acc.TaskID, acc.Queue
}

// resultMeta waits for the task's final result and returns its meta.
func (l *remoteLab) resultMeta(t testing.TB, id string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c := l.pool.Get()
		data, err := redis.Bytes(c.Do("GET", "celery-task-meta-"+id))
		c.Close()
		if err == nil {
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			if m["status"] == "SUCCESS" || m["status"] == "FAILURE" {
				return m
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("task %s has no result after %s", id, timeout)
	return nil
}

// TestRemoteWorkerUploadDownloadResumes: a video uploaded to the gateway
// with gpu=true goes to alice's gateway-mediated worker, 80 ms RTT and 1 %
// loss away, which downloads it through the signed URL; every connection
// through the link is cut part way through the download, and the download
// resumes with a Range request and completes with its sha256 verified.
func TestRemoteWorkerUploadDownloadResumes(t *testing.T) {
	video := testVideo(t, 25)
	l := newRemoteLab(t, 30*time.Second, 40*time.Millisecond, 0.01)
	rs := newRuns()
	logs := l.worker(t, "media", true, rs, l.mediaTasks(t, l.url))
	l.waitRemoteWorkerListed(t)
	st, _ := os.Stat(video)
	cuts := l.px.CutAt(st.Size() / 5)
	id, queue := l.uploadAsync(t, video)
	if queue != contract.GPUQueue("alice") {
		t.Fatalf("the upload went to %q, want %s", queue, contract.GPUQueue("alice"))
	}
	// Cut once a fifth of the file has crossed the link.
	cut := 0
	select {
	case cut = <-cuts:
	case <-time.After(2 * time.Minute):
		t.Fatal("a fifth of the video never crossed the link")
	}
	m := l.resultMeta(t, id, 3*time.Minute)
	if m["status"] != "SUCCESS" {
		t.Fatalf("result %v\nworker log:\n%s", m, logs)
	}
	d := downloadMeta(t, m)
	if d.Bytes != st.Size() || !d.Verified {
		t.Errorf("download %+v; want %d bytes, sha256 verified", d, st.Size())
	}
	if d.Resumes < 1 {
		t.Errorf("download %+v after closing %d connection ends mid-transfer; want at least one Range resume", d, cut)
	}
	t.Logf("%d MB video: %d connection ends closed at a fifth, download %+v, %d chunks delayed by a retransmission", st.Size()>>20, cut, d, l.px.Lost())
}

// download is a media result's metadata.download.
type download struct {
	Bytes    int64 `json:"bytes"`
	Verified bool  `json:"sha256_verified"`
	Resumes  int   `json:"resumes"`
}

// downloadMeta reads metadata.download from a task's result meta.
func downloadMeta(t testing.TB, m map[string]any) download {
	t.Helper()
	raw, _ := json.Marshal(m)
	var res struct {
		Result struct {
			Metadata struct {
				Download download `json:"download"`
			} `json:"metadata"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	return res.Result.Metadata.Download
}
