package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"morag-gpu/internal/loadgen"
	"morag-gpu/internal/testenv"
)

// Row 4: the Go gateway against a FastAPI/uvicorn app doing the same
// enqueue (test/python/fastapi_app.py), both on loopback, driven by
// internal/loadgen. No worker consumes: the rows measure accepting a
// request and enqueueing its task.

type route struct {
	key, path string
	body      string
}

var gatewayRoutes = []route{
	{"gw_ingest", "/api/v1/ingest/url", `{"url": "https://example.com/bench.pdf", "source_type": "document"}`},
	{"gw_process", "/process/url?async=true", `{"url": "https://example.com/bench.mp3", "content_type": "audio", "options": {}, "gpu": false}`},
}

func declareGatewayRows(t *table) {
	for _, r := range gatewayRoutes {
		t.add(r.key+"_rps", "POST "+r.path+" (req/s)", fmtRate, atLeast(10))
		t.add(r.key+"_p99", "POST "+r.path+" p99", fmtMs, atMost(1))
	}
}

func gatewayKeys() []string {
	var ks []string
	for _, r := range gatewayRoutes {
		ks = append(ks, r.key+"_rps", r.key+"_p99")
	}
	return ks
}

func randomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// startGateway builds and starts the Go gateway on a free loopback port
// and returns its base URL.
func (e *env) startGateway(ctx context.Context, b *testing.B, uploadDir string) (*testenv.Process, string, error) {
	bin, err := e.build(ctx, "gateway")
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(b))
	base := "http://" + addr
	tok := randomToken()
	p := testenv.Start(b, "", []string{"REDIS_URL=" + e.redis.URL(), "MORAG_ADMIN_TOKEN=" + tok}, bin,
		"-addr", addr, "-redis", e.redis.URL(), "-upload-dir", uploadDir, "-public-url", base,
		// Every loadgen client dials from 127.0.0.1: lift the per-IP cap.
		"-max-conns-per-ip", "2048")
	if err := waitListening(ctx, p, addr, 60*time.Second); err != nil {
		p.Kill()
		return nil, "", err
	}
	return p, base, nil
}

func benchGateway(b *testing.B, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := e.flush(); err != nil {
		b.Fatalf("flush redis: %v", err)
	}

	err := func() error {
		p, base, err := e.startGateway(ctx, b, b.TempDir())
		if err != nil {
			return err
		}
		defer p.Kill()
		return e.loadRoutes(ctx, base, "Go gateway", e.tab.setGo, e.tab.goNA)
	}()
	if err != nil {
		e.tab.goNA(err.Error(), gatewayKeys()...)
	}

	err = func() error {
		if why := pythonMissing("fastapi", "uvicorn", "celery"); why != "" {
			return fmt.Errorf("%s (scripts/bench installs python3-fastapi and python3-uvicorn)", why)
		}
		addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(b))
		host, port, _ := net.SplitHostPort(addr)
		// One uvicorn worker, as MoRAG's server runs by default.
		p := testenv.Start(b, "", testenv.PythonEnv(b, e.redis.URL()), testenv.PythonBin,
			"-m", "uvicorn", "fastapi_app:app", "--host", host, "--port", port,
			"--workers", "1", "--log-level", "warning", "--no-access-log")
		defer p.Kill()
		if err := waitListening(ctx, p, addr, 60*time.Second); err != nil {
			return err
		}
		return e.loadRoutes(ctx, "http://"+addr, "FastAPI/uvicorn", e.tab.setPy, e.tab.pyNA)
	}()
	if err != nil {
		e.tab.pyNA(err.Error(), gatewayKeys()...)
	}
}

// loadRoutes checks that one request per route answers 2xx with a task_id
// and enqueues exactly one message on "celery", then loads each route.
func (e *env) loadRoutes(ctx context.Context, base, who string, set func(string, float64), na func(string, ...string)) error {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for _, r := range gatewayRoutes {
		err := func() error {
			if _, err := e.do("DEL", "celery"); err != nil {
				return err
			}
			resp, err := hc.Post(base+r.path, "application/json", bytes.NewBufferString(r.body))
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			var ans struct {
				TaskID string `json:"task_id"`
			}
			if resp.StatusCode/100 != 2 || json.Unmarshal(body, &ans) != nil || ans.TaskID == "" {
				return fmt.Errorf("%s answered %s: %s", r.path, resp.Status, oneLine(string(body), 120))
			}
			if n, err := e.llen("celery"); err != nil || n != 1 {
				return fmt.Errorf("one request left %d messages on queue celery (err %v), want 1", n, err)
			}
			progress("gateway: %s, POST %s, %d clients for %s", who, r.path, e.cfg.HTTPClients, e.cfg.HTTPDuration)
			res, err := loadgen.Run(ctx, loadgen.Config{
				Method:   http.MethodPost,
				URL:      base + r.path,
				Header:   http.Header{"Content-Type": {"application/json"}},
				Body:     []byte(r.body),
				Clients:  e.cfg.HTTPClients,
				Duration: e.cfg.HTTPDuration,
			})
			if err != nil {
				return err
			}
			progress("gateway: %s %s: %s", who, r.path, res)
			ok := res.Requests - res.Errors
			if ok == 0 {
				return fmt.Errorf("no request succeeded: %s", res.FirstError)
			}
			set(r.key+"_rps", res.Rate)
			set(r.key+"_p99", float64(res.P99)/float64(time.Millisecond))
			if res.Errors > 0 {
				e.tab.note("%s POST %s: %d of %d requests failed (first: %s)", who, r.path, res.Errors, res.Requests, res.FirstError)
			}
			// Requests cut off when the run ended may still enqueue, so
			// up to one per client more than succeeded is expected.
			n := e.settledLen(ctx, "celery") - 1
			if n < int64(ok) || n > int64(ok+e.cfg.HTTPClients) {
				e.tab.note("%s POST %s: %d requests succeeded but %d messages were enqueued", who, r.path, ok, n)
			}
			return nil
		}()
		if err != nil {
			na(err.Error(), r.key+"_rps", r.key+"_p99")
		}
	}
	_, err := e.do("DEL", "celery")
	return err
}

// settledLen waits until the length of a list stops changing (a server
// finishing requests the client gave up on) and returns it.
func (e *env) settledLen(ctx context.Context, key string) int64 {
	last, _ := e.llen(key)
	for i := 0; i < 50 && ctx.Err() == nil; i++ {
		time.Sleep(200 * time.Millisecond)
		n, err := e.llen(key)
		if err != nil || n == last {
			return n
		}
		last = n
	}
	return last
}
