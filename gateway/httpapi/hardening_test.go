package httpapi

// One test per finding of the attack on a fresh gateway (issue 9, and
// issue 15 item 3). Each reproduces the attack and checks that it now
// fails.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/contract"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// High: any caller, with no key, read any user's results by id.
func TestAttackReadOthersResults(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	alice, bob := e.createKey("alice"), e.createKey("bob")
	ctx := context.Background()

	res := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://example.com/private"}, bearer(alice)...)
	if res.Code != 200 {
		t.Fatalf("ingest: %d %s", res.Code, res.Body)
	}
	id := res.json(t)["task_id"].(string)
	if err := e.gw.backend.Store(ctx, protocol.StoreRequest{TaskID: id, State: protocol.StateSuccess,
		Result: map[string]any{"content": "alice's secret"}}); err != nil {
		t.Fatal(err)
	}
	unknown := e.do("GET", "/api/v1/status/"+protocol.NewID(), nil)
	for name, h := range map[string][]string{"anonymous": nil, "bob": bearer(bob), "invalid key": bearer("nope")} {
		got := e.do("GET", "/api/v1/status/"+id, nil, h...)
		if got.Code != 404 || !bytes.Equal(got.Body, unknown.Body) || strings.Contains(string(got.Body), "secret") {
			t.Errorf("%s reads alice's status: %d %s; want the unknown-id answer %d %s", name, got.Code, got.Body, unknown.Code, unknown.Body)
		}
		if got := e.do("DELETE", "/api/v1/ingest/"+id, nil, h...); got.Code != 404 {
			t.Errorf("%s cancels alice's task: %d %s, want 404", name, got.Code, got.Body)
		}
	}
	if got := e.do("GET", "/api/v1/status/"+id, nil, bearer(alice)...); got.Code != 200 || !strings.Contains(string(got.Body), "alice's secret") {
		t.Fatalf("alice reads her own status: %d %s", got.Code, got.Body)
	}
	// upload-result: bob cannot attach a result to alice's task.
	rd, _ := json.Marshal(map[string]any{"task_id": id})
	if got := e.postForm("/api/v1/files/upload-result", map[string]string{"result_data": string(rd)}, "", nil, bearer(bob)...); got.Code != 404 {
		t.Errorf("bob's upload-result on alice's task: %d %s, want 404", got.Code, got.Body)
	}
	// A task submitted without a key: its id is the capability.
	anon := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://example.com/public"}).json(t)["task_id"].(string)
	for name, h := range map[string][]string{"anonymous": nil, "bob": bearer(bob)} {
		if got := e.do("GET", "/api/v1/status/"+anon, nil, h...); got.Code != 200 {
			t.Errorf("%s reads an anonymous task by id: %d %s, want 200", name, got.Code, got.Body)
		}
	}
	// The owner record was written with the publish, and expires.
	if ttl, _ := r.Do("TTL", contract.TaskOwnerKey(id)).(int64); ttl <= 0 || ttl > int64(e.gw.cfg.ownerTTL()/time.Second) {
		t.Errorf("owner record TTL %d", ttl)
	}
}

// High: GET /api/v1/status/ listed every running task id to anyone.
func TestAttackListsRunningTasks(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	alice, bob := e.createKey("alice"), e.createKey("bob")
	testenv.StartCeleryWorker(t, r.URL(), "morag.worker", "-Q", "celery", "-c", "2", "-n", "list@%h")
	hold := map[string]any{"standin_wait_for": "release-list-test"}
	defer r.Do("SET", "release-list-test", "1")
	aliceID := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://a", "metadata": hold}, bearer(alice)...).json(t)["task_id"].(string)
	anonID := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://b", "metadata": hold}).json(t)["task_id"].(string)
	list := func(h ...string) map[string]any { return e.do("GET", "/api/v1/status/", nil, h...).json(t) }
	eventually(t, 30*time.Second, "both tasks running", func() bool { return list()["count"] == 2.0 })
	if m := list(); len(m["active_tasks"].([]any)) != 0 || strings.Contains(fmt.Sprint(m), aliceID) || strings.Contains(fmt.Sprint(m), anonID) {
		t.Errorf("anonymous listing shows ids: %v", m)
	}
	if m := list(bearer(alice)...); m["count"] != 1.0 || !contains(m["active_tasks"].([]any), aliceID) {
		t.Errorf("alice's listing: %v, want only %s", m, aliceID)
	}
	if m := list(bearer(bob)...); m["count"] != 0.0 || len(m["active_tasks"].([]any)) != 0 {
		t.Errorf("bob's listing: %v, want nothing", m)
	}
}

// Medium: DELETE /api/v1/ingest/<id> took any id (900 KB ones too), stored
// a REVOKED result and broadcast a revoke for each.
func TestAttackCancelFlood(t *testing.T) {
	r := testenv.StartRedis(t)
	s := startServed(t, r, nil)
	// Every revoke broadcast is a PUBLISH: count those that mention one.
	psc := redis.PubSubConn{Conn: r.Conn()}
	if err := psc.PSubscribe("*"); err != nil {
		t.Fatal(err)
	}
	revokes := make(chan int, 1)
	go func() { // owner: this test; ends when psc is closed below
		n := 0
		for {
			switch v := psc.Receive().(type) {
			case redis.Message:
				if bytes.Contains(v.Data, []byte("revoke")) {
					n++
				}
			case error:
				revokes <- n
				return
			}
		}
	}()
	huge := strings.Repeat("a", 900<<10)
	if got := s.do("DELETE", "/api/v1/ingest/"+huge, nil); got.Code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("900 KB id: %d, want 431", got.Code)
	}
	if got := s.do("DELETE", "/api/v1/ingest/"+strings.Repeat("a", 200), nil); got.Code != 400 {
		t.Errorf("200-byte id: %d %s, want 400", got.Code, got.Body)
	}
	for i := 0; i < 50; i++ {
		if got := s.do("DELETE", "/api/v1/ingest/"+protocol.NewID(), nil); got.Code != 404 {
			t.Fatalf("cancel of an id the gateway never issued: %d %s, want 404", got.Code, got.Body)
		}
	}
	if keys, _ := redis.Strings(r.Do("KEYS", "celery-task-meta-*"), nil); len(keys) != 0 {
		t.Errorf("refused cancels stored %d REVOKED results", len(keys))
	}
	time.Sleep(200 * time.Millisecond) // let any publish arrive
	psc.Conn.Close()
	if n := <-revokes; n != 0 {
		t.Errorf("refused cancels broadcast %d revokes", n)
	}
	// An issued anonymous task is still cancellable by its id.
	id := s.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://x"}).json(t)["task_id"].(string)
	if got := s.do("DELETE", "/api/v1/ingest/"+id, nil); got.Code != 200 {
		t.Errorf("cancel of an issued anonymous task: %d %s", got.Code, got.Body)
	}
}

// Medium: every multipart field was buffered (63 × 1 MB) before anything
// was checked; a truncated form was a 500.
func TestAttackFormFieldFlood(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	var body bytes.Buffer
	body.WriteString("--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello\r\n")
	for i := 0; i < 63; i++ {
		fmt.Fprintf(&body, "--B\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\n%s\r\n", i, strings.Repeat("x", 1<<20))
	}
	body.WriteString("--B--\r\n")
	got := e.do("POST", "/process/file", bytes.NewReader(body.Bytes()), "Content-Type", "multipart/form-data; boundary=B")
	if got.Code != 400 || !strings.Contains(string(got.Body), "larger than") {
		t.Errorf("63 × 1 MB fields: %d %s, want 400", got.Code, got.Body)
	}
	fields := map[string]string{}
	for i := 0; i < 5; i++ {
		fields[fmt.Sprint("f", i)] = strings.Repeat("y", 60<<10) // each under the field limit, together over
	}
	if got := e.postForm("/process/file", fields, "a.txt", []byte("x")); got.Code != 400 || !strings.Contains(string(got.Body), "together") {
		t.Errorf("fields over the total: %d %s, want 400", got.Code, got.Body)
	}
	// Truncated forms: in a field, and in the file.
	for name, b := range map[string]string{
		"field": "--B\r\nContent-Disposition: form-data; name=\"options\"\r\n\r\n{\"a\":",
		"file":  "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhalf a fi",
	} {
		got := e.do("POST", "/process/file", strings.NewReader(b), "Content-Type", "multipart/form-data; boundary=B")
		if got.Code != 400 {
			t.Errorf("truncated %s: %d %s, want 400", name, got.Code, got.Body)
		}
	}
	if left := uploadDirFiles(t, e.gw.files.Dir()); len(left) != 0 {
		t.Errorf("refused forms left files: %v", left)
	}
}

// Medium: no read timeout on bodies, no idle timeout: slow and idle
// clients held connections forever.
func TestAttackSlowAndIdleClients(t *testing.T) {
	r := testenv.StartRedis(t)
	s := startServed(t, r, func(c *Config) {
		c.ReadHeaderTimeout, c.IdleTimeout, c.ReadTimeout = time.Second, time.Second, time.Second
		c.UploadGrace, c.UploadMinRate = time.Second, 64<<10
	})
	const bound = 5 * time.Second // each slow client must be cut well within this

	// Slow headers (slowloris).
	c, err := s.dialFrom("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	if closed, _ := closedWithin(c, bound); !closed {
		t.Error("a client that never finishes its headers was not cut")
	}

	// Slow upload: headers at once, then a trickle under -upload-min-rate.
	c2, err := s.dialFrom("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "POST /process/file HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 1000000\r\n\r\n")
	io.WriteString(c2, "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n")
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() { // owner: this test; stops on stop or a write error
		defer close(trickled)
		for i := 0; i < 100; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := c2.Write([]byte("0123456789")); err != nil {
				return
			}
		}
	}()
	closed, answer := closedWithin(c2, bound)
	close(stop)
	<-trickled
	if !closed {
		t.Error("an upload trickling at 100 B/s was not cut")
	} else if len(answer) > 0 && !bytes.Contains(answer, []byte(" 408 ")) {
		t.Errorf("slow upload answered %q, want 408 or a closed connection", answer)
	}

	// Slow non-upload body.
	c3, err := s.dialFrom("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	io.WriteString(c3, "POST /api/v1/ingest/url HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	if closed, _ := closedWithin(c3, bound); !closed {
		t.Error("a JSON body that stalls was not cut")
	}

	// Idle keep-alive.
	c4, err := s.dialFrom("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	io.WriteString(c4, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if closed, got := closedWithin(c4, bound); !closed || !bytes.Contains(got, []byte("200 OK")) {
		t.Errorf("idle keep-alive: closed=%v after %q; want an answer, then the connection closed", closed, got)
	}
	eventually(t, bound, "every connection released", func() bool { return s.conns.Open() == 0 })
}

// Medium: ~20 000 idle keep-alives from one attacker made the gateway
// refuse normal requests. Now one IP holds at most -max-conns-per-ip, and
// at -max-conns idle connections make room for new ones.
func TestAttackConnectionFlood(t *testing.T) {
	r := testenv.StartRedis(t)
	s := startServed(t, r, func(c *Config) { c.MaxConns, c.MaxConnsPerIP, c.IdleTimeout = 20, 5, time.Minute })
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// One IP: the sixth connection is refused with a 503.
	for i := 0; i < 5; i++ {
		c, err := s.dialFrom("127.0.0.2")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	eventually(t, 5*time.Second, "5 connections held", func() bool { return s.conns.Open() == 5 })
	c, err := s.dialFrom("127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if closed, got := closedWithin(c, 5*time.Second); !closed || !bytes.Contains(got, []byte("503")) {
		t.Errorf("6th connection from one IP: closed=%v %q, want a 503 and close", closed, got)
	}
	c.Close()
	// Fill the overall cap with idle keep-alives from many IPs...
	for i := 0; len(held) < 20; i++ {
		c, err := s.dialFrom(fmt.Sprintf("127.0.1.%d", 1+i/4))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(buf); err != nil || !bytes.Contains(buf[:n], []byte("200 OK")) {
			t.Fatalf("keep-alive %d: %v %q", i, err, buf[:n])
		}
		held = append(held, c)
	}
	// ...and a normal client is still served: an idle one makes room.
	for i := 0; i < 10; i++ {
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get(s.url + "/")
		if err != nil {
			t.Fatalf("normal request %d at the cap: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("normal request %d at the cap: %d", i, resp.StatusCode)
		}
	}
	if n := s.conns.Open(); n > 20 {
		t.Errorf("%d connections open, over the cap of 20", n)
	}
}

// Medium: uploads needed no key and had no quota; a 15 MB JSON body was
// queued whole into Redis.
func TestAttackDiskAndRedisExhaustion(t *testing.T) {
	r := testenv.StartRedis(t)
	free := int64(10 << 30)
	var freeMu = make(chan struct{}, 1)
	readFree := func(string) (int64, error) { freeMu <- struct{}{}; defer func() { <-freeMu }(); return free, nil }
	e := startGateway(t, r, func(c *Config) {
		c.QuotaAnonymous, c.QuotaUser, c.MinFreeDisk = 100<<10, 150<<10, 1<<30
		c.MaxTaskBytes = 64 << 10
		c.freeDisk = readFree
	})
	alice, bob := e.createKey("alice"), e.createKey("bob")
	file := bytes.Repeat([]byte("z"), 60<<10)
	async := func(key string) resp {
		var h []string
		if key != "" {
			h = bearer(key)
		}
		return e.postForm("/process/file?async=true", nil, "f.bin", file, h...)
	}
	// Anonymous callers share one quota, stored files included.
	if got := async(""); got.Code != 202 {
		t.Fatalf("first anonymous upload: %d %s", got.Code, got.Body)
	}
	if got := async(""); got.Code != 413 || !strings.Contains(string(got.Body), "quota") {
		t.Errorf("second anonymous upload over the shared quota: %d %s, want 413", got.Code, got.Body)
	}
	// Each user has their own.
	for _, k := range []string{alice, alice, bob} {
		if got := async(k); got.Code != 202 {
			t.Fatalf("upload within a user's quota: %d %s", got.Code, got.Body)
		}
	}
	if got := async(alice); got.Code != 413 {
		t.Errorf("alice over her quota: %d %s, want 413", got.Code, got.Body)
	}
	if used := e.gw.files.Used("alice"); used != 2*int64(len(file)) {
		t.Errorf("alice holds %d bytes, want %d (refused uploads must release what they reserved)", used, 2*len(file))
	}
	// Free disk below the floor: 507, nothing stored.
	freeMu <- struct{}{}
	free = 512 << 20
	<-freeMu
	if got := async(bob); got.Code != http.StatusInsufficientStorage {
		t.Errorf("upload below the free-disk floor: %d %s, want 507", got.Code, got.Body)
	}
	// A JSON body larger than a task may be: 413 before Redis sees it.
	big := strings.Repeat("w", 15<<20)
	if got := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://x", "metadata": map[string]any{"blob": big}}); got.Code != 413 {
		t.Errorf("15 MB JSON body: %d %.200s, want 413", got.Code, got.Body)
	}
	// A body under the limit whose task would still be over it.
	mid := strings.Repeat("w", 60<<10)
	if got := e.postJSON("/api/v1/ingest/batch", map[string]any{"items": []any{map[string]any{"a": mid}}}); got.Code != 413 ||
		!strings.Contains(string(got.Body), "-max-task-bytes") {
		t.Errorf("task over -max-task-bytes: %d %.300s, want 413 naming the flag", got.Code, got.Body)
	}
	if n, _ := e.gw.broker.QueueLength(context.Background(), "celery"); n != 4 {
		t.Errorf("celery queue holds %d tasks, want the 4 accepted uploads", n)
	}
}

// Medium: an operator could not refuse anonymous uploads.
func TestAttackAnonymousUploadsSwitch(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, func(c *Config) { c.NoAnonymousUploads = true })
	alice := e.createKey("alice")
	if got := e.postForm("/process/file?async=true", nil, "a.txt", []byte("x")); got.Code != 401 {
		t.Errorf("anonymous upload: %d %s, want 401", got.Code, got.Body)
	}
	if got := e.postForm("/api/v1/ingest/file", nil, "a.txt", []byte("x")); got.Code != 401 {
		t.Errorf("anonymous ingest upload: %d %s, want 401", got.Code, got.Body)
	}
	if got := e.postForm("/process/file?async=true", nil, "a.txt", []byte("x"), bearer(alice)...); got.Code != 202 {
		t.Errorf("upload with a key: %d %s", got.Code, got.Body)
	}
}

// Medium: validate-key and X-Admin-Token guesses were never limited.
// Issue 15 item 3: after 10 invalid keys, even a valid key was refused.
func TestAttackCredentialGuessing(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	alice := e.createKey("alice")
	validate := func(key string) resp {
		return e.do("POST", "/api/v1/auth/validate-key", strings.NewReader("api_key="+key), "Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i < 10; i++ {
		if got := validate(fmt.Sprint("guess-", i)); got.Code != 401 {
			t.Fatalf("guess %d: %d %s", i, got.Code, got.Body)
		}
	}
	if got := validate("guess-more"); got.Code != 429 || got.Header.Get("Retry-After") == "" {
		t.Errorf("11th validate-key guess: %d %s, want 429 with Retry-After", got.Code, got.Body)
	}
	// The same budget covers headers and admin tokens.
	if got := e.do("GET", "/api/v1/auth/keys?user_id=alice", nil, "X-Admin-Token", "guess"); got.Code != 429 {
		t.Errorf("X-Admin-Token guess after 10 failures: %d, want 429", got.Code)
	}
	if got := e.do("GET", "/api/v1/auth/keys?user_id=alice", nil, "X-Admin-Token", adminToken); got.Code != 429 {
		t.Errorf("admin token from a blocked client: %d, want 429 (not compared)", got.Code)
	}
	// A valid key is never refused because of failures.
	if got := validate(alice); got.Code != 200 {
		t.Errorf("valid key via validate-key from a blocked client: %d %s", got.Code, got.Body)
	}
	if got := e.do("GET", "/api/v1/auth/queue-info", nil, bearer(alice)...); got.Code != 200 || got.json(t)["user_id"] != "alice" {
		t.Errorf("valid key in a header from a blocked client: %d %s", got.Code, got.Body)
	}

	// X-Admin-Token guesses count on their own too (a fresh gateway).
	e2 := startGateway(t, testenv.StartRedis(t), nil)
	for i := 0; i < 10; i++ {
		if got := e2.do("GET", "/api/v1/auth/keys?user_id=alice", nil, "X-Admin-Token", fmt.Sprint("guess", i)); got.Code != 403 {
			t.Fatalf("admin guess %d: %d", i, got.Code)
		}
	}
	if got := e2.do("GET", "/api/v1/auth/keys?user_id=alice", nil, "X-Admin-Token", "guess-more"); got.Code != 429 {
		t.Errorf("11th X-Admin-Token guess: %d, want 429", got.Code)
	}
}

// The admin token can come from a file, which must not be readable by
// others.
func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	os.WriteFile(p, []byte("  s3cret-token-from-file \nignored\n"), 0o600)
	cfg := Config{AdminToken: "from-flag", AdminTokenFile: p}
	if err := cfg.defaults(); err != nil || cfg.AdminToken != "s3cret-token-from-file" {
		t.Fatalf("token file: %q %v", cfg.AdminToken, err)
	}
	os.Chmod(p, 0o644)
	cfg = Config{AdminTokenFile: p}
	if err := cfg.defaults(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable token file: %v, want a refusal saying chmod 600", err)
	}
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600)
	cfg = Config{AdminTokenFile: filepath.Join(dir, "empty")}
	if err := cfg.defaults(); err == nil {
		t.Error("an empty token file was accepted")
	}
}

// Low: the refused-URL log took the client IP from a spoofable
// X-Forwarded-For.
func TestAttackSpoofedForwardedFor(t *testing.T) {
	r := testenv.StartRedis(t)
	for _, tc := range []struct {
		trusted []string
		want    string
	}{
		{nil, `"client_ip":"127.0.0.1"`},
		{[]string{"127.0.0.1/32"}, `"client_ip":"203.0.113.9"`},
	} {
		var logs logSink
		e := startGateway(t, r, func(c *Config) {
			c.TrustedProxies = tc.trusted
			c.Logger = zerolog.New(&logs).Level(zerolog.WarnLevel)
		})
		e.do("GET", "/api/v1/files/"+strings.Repeat("a", 32)+"?token=x&expires=1", nil, "X-Forwarded-For", "203.0.113.9")
		if !strings.Contains(logs.String(), tc.want) {
			t.Errorf("trusted proxies %v: log %s, want %s", tc.trusted, logs.String(), tc.want)
		}
	}
	if _, err := parseTrusted([]string{"10.0.0.0/8, 192.0.2.1", "bogus"}); err == nil {
		t.Error("a bad -trusted-proxies entry was accepted")
	}
}

// Low: bad client input was answered 503 "check that Redis is reachable"
// or 500.
func TestAttackBadInputIs4xx(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, func(c *Config) { c.MaxTaskBytes = 64 << 10 })
	alice := e.createKey("alice")
	for name, got := range map[string]resp{
		"truncated upload": e.do("POST", "/api/v1/ingest/file",
			strings.NewReader("--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc"),
			"Content-Type", "multipart/form-data; boundary=B"),
		"oversized JSON":          e.postJSON("/process/url", map[string]any{"url": strings.Repeat("u", 100<<10)}),
		"malformed task id":       e.do("DELETE", "/api/v1/ingest/bad%20id", nil),
		"status of malformed id":  e.do("GET", "/api/v1/status/..%2f..", nil),
		"upload-result bad id":    e.postForm("/api/v1/files/upload-result", map[string]string{"result_data": `{"task_id":"a b"}`}, "", nil, bearer(alice)...),
		"no multipart boundary":   e.do("POST", "/process/file", strings.NewReader("x"), "Content-Type", "multipart/form-data"),
		"urlencoded over limit":   e.do("POST", "/api/v1/files/upload-result", strings.NewReader("result_data="+strings.Repeat("x", 300<<10)), append([]string{"Content-Type", "application/x-www-form-urlencoded"}, bearer(alice)...)...),
		"JSON that is not object": e.do("POST", "/api/v1/ingest/url", strings.NewReader(`[1,2]`), "Content-Type", "application/json"),
	} {
		if got.Code < 400 || got.Code >= 500 {
			t.Errorf("%s: %d %s, want a 4xx", name, got.Code, got.Body)
		}
		var m map[string]any
		if json.Unmarshal(got.Body, &m) != nil || m["detail"] == nil {
			t.Errorf("%s: body %s has no detail", name, got.Body)
		}
	}
}

// Low: task errors shown to clients carried worker temp paths and raw
// ffmpeg output.
func TestAttackTaskErrorsLeakWorkerDetails(t *testing.T) {
	r := testenv.StartRedis(t)
	var logs logSink
	e := startGateway(t, r, func(c *Config) { c.Logger = zerolog.New(&logs).Level(zerolog.InfoLevel) })
	id := e.postJSON("/api/v1/ingest/url", map[string]any{"url": "https://x"}).json(t)["task_id"].(string)
	raw := "ffmpeg failed on /tmp/morag-worker-81723/in/7f3a.mp4: exit status 1\n" +
		"ffmpeg version 5.1.6 Copyright (c) 2000-2024\n  configuration: --prefix=/usr --enable-nvenc\n" +
		"/tmp/morag-worker-81723/in/7f3a.mp4: Invalid data found when processing input"
	if err := e.gw.backend.Store(context.Background(), protocol.StoreRequest{TaskID: id, State: protocol.StateFailure,
		Result: protocol.NewTaskError("RuntimeError", "builtins", raw)}); err != nil {
		t.Fatal(err)
	}
	st := e.do("GET", "/api/v1/status/"+id, nil).json(t)
	msg, _ := st["error"].(string)
	if msg == "" || strings.Contains(msg, "/tmp/") || strings.Contains(msg, "configuration") || strings.Contains(msg, "\n") {
		t.Errorf("client sees %q", msg)
	}
	if !strings.Contains(msg, "ffmpeg failed") {
		t.Errorf("client error %q lost its gist", msg)
	}
	if !strings.Contains(logs.String(), "morag-worker-81723") || !strings.Contains(logs.String(), id) {
		t.Errorf("the full error is not in the log: %s", logs.String())
	}
	if got := publicTaskError(strings.Repeat("é", 1000)); len([]rune(got)) > maxPublicError+1 {
		t.Errorf("long error not shortened: %d runes", len([]rune(got)))
	}
}

// The per-route read deadlines must not cut a synchronous /process call
// that waits for its result longer than -read-timeout or the upload grace.
func TestSyncWaitOutlivesReadDeadlines(t *testing.T) {
	r := testenv.StartRedis(t)
	s := startServed(t, r, func(c *Config) { c.ReadTimeout, c.UploadGrace = time.Second, time.Second })
	// A synchronous call waits only when a live worker consumes the queue.
	liveConsumer(t, s.gw, "py@test", "celery")
	finishLater := func() { // plays the worker: answers the queued task after 2.5 s
		var id string
		eventually(t, 10*time.Second, "the task queued", func() bool {
			raw, err := redis.ByteSlices(r.Do("LRANGE", "celery", 0, 0), nil)
			if err != nil || len(raw) == 0 {
				return false
			}
			m, err := protocol.Decode(raw[0])
			if err != nil {
				t.Fatal(err)
			}
			id = m.ID
			return true
		})
		r.Do("DEL", "celery")
		time.Sleep(2500 * time.Millisecond)
		if err := s.gw.backend.Store(context.Background(), protocol.StoreRequest{TaskID: id, State: protocol.StateSuccess,
			Result: map[string]any{"success": true, "content": "done"}}); err != nil {
			t.Error(err)
		}
	}
	for name, send := range map[string]func() resp{
		"process/url":  func() resp { return s.postJSON("/process/url", map[string]any{"url": "https://x"}) },
		"process/file": func() resp { return s.postForm("/process/file", nil, "a.txt", []byte("abc")) },
	} {
		done := make(chan resp, 1)
		go func() { done <- send() }() // owner: this test; the request ends with its answer
		finishLater()
		got := <-done
		if got.Code != 200 || !strings.Contains(string(got.Body), `"content":"done"`) {
			t.Errorf("%s waited past the read deadline: %d %s, want the result", name, got.Code, got.Body)
		}
	}
}

// The per-IP connection cap counts an IPv6 client by its /64, so one host
// cannot multiply its share by rotating addresses.
func TestConnCapGroupsIPv6By64(t *testing.T) {
	l := newConnLimiter(100, 2, nil, zerolog.Nop())
	admit := func(s string) bool {
		ok, _, _ := l.admit(clientBucket(netip.MustParseAddr(s)), false)
		return ok
	}
	if !admit("2001:db8::1") || !admit("2001:db8::2") {
		t.Fatal("first two connections refused")
	}
	if admit("2001:db8::ffff:1") {
		t.Error("a third address in the same /64 was admitted over the per-IP cap of 2")
	}
	if !admit("2001:db8:0:1::1") || !admit("192.0.2.1") {
		t.Error("another /64 or an IPv4 client was refused")
	}
	if ok, _, _ := l.admit(clientBucket(netip.MustParseAddr("2001:db8::3")), true); !ok {
		t.Error("an exempt (trusted proxy) client was capped")
	}
}

// A worker downloading an upload slowly must not be cut by the write
// deadline other routes have.
func TestSlowDownloadIsNotCut(t *testing.T) {
	r := testenv.StartRedis(t)
	s := startServed(t, r, func(c *Config) { c.ReadTimeout, c.WriteTimeout = time.Second, time.Second })
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB, more than the socket buffers
	up, err := s.gw.files.Save(context.Background(), "", "big.bin", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.gw.files.SignedURL(s.url, up.ID, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got bytes.Buffer
	buf := make([]byte, 1<<20)
	for { // about 4 MiB/s: the download lasts about 4 s, past the 2 s others get
		n, err := io.ReadFull(resp.Body, buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if resp.StatusCode != 200 || got.Len() != len(data) {
		t.Fatalf("slow download: %d, %d of %d bytes", resp.StatusCode, got.Len(), len(data))
	}
}
