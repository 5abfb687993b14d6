package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/internal/testenv"
)

const adminToken = "test-admin-token-0123456789"

type env struct {
	t     *testing.T
	redis *testenv.Redis
	gw    *Gateway
	url   string
}

// startGateway runs an in-process gateway on a real Redis; it stops with
// the test.
func startGateway(t *testing.T, r *testenv.Redis, mod func(*Config)) *env {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String()
	cfg := Config{RedisURL: r.URL(), UploadDir: t.TempDir(), PublicURL: base, AdminToken: adminToken,
		WaitTimeout: 60 * time.Second, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srv.Config.Handler = g.Handler()
	srv.Start()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		g.Wait()
	})
	return &env{t: t, redis: r, gw: g, url: base}
}

type resp struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %v: %s", r.Code, err, r.Body)
	}
	return m
}

func (e *env) do(method, path string, body io.Reader, headers ...string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

func (e *env) postJSON(path string, v any, headers ...string) resp {
	b, _ := json.Marshal(v)
	return e.do("POST", path, bytes.NewReader(b), append([]string{"Content-Type", "application/json"}, headers...)...)
}

// multipartBody builds a form with an optional file.
func multipartBody(fields map[string]string, fileName string, file []byte) (io.Reader, string) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if fileName != "" {
		fw, _ := w.CreateFormFile("file", fileName)
		fw.Write(file)
	}
	for k, v := range fields {
		w.WriteField(k, v)
	}
	w.Close()
	return &buf, w.FormDataContentType()
}

func (e *env) postForm(path string, fields map[string]string, fileName string, file []byte, headers ...string) resp {
	body, ct := multipartBody(fields, fileName, file)
	return e.do("POST", path, body, append([]string{"Content-Type", ct}, headers...)...)
}

// createKey mints a key through the admin endpoint.
func (e *env) createKey(user string) string {
	e.t.Helper()
	r := e.do("POST", "/api/v1/auth/create-key", strings.NewReader("user_id="+user+"&description=test"),
		"Content-Type", "application/x-www-form-urlencoded", "X-Admin-Token", adminToken)
	if r.Code != 200 {
		e.t.Fatalf("create-key: %d %s", r.Code, r.Body)
	}
	return r.json(e.t)["api_key"].(string)
}

func bearer(key string) []string { return []string{"Authorization", "Bearer " + key} }

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func uploadDirFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// path walks a decoded JSON value: path(m, "metadata", "routing", "queue").
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
