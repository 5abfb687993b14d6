package auth

import (
	"bytes"
	"encoding/json"
	"morag-gpu/contract"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestEcho serves /whoami (the caller's user_id or "anonymous", plus
// the user seen through the request context) and /private (RequireUser).
func newTestEcho(svc *KeyService, opts MiddlewareOptions) *echo.Echo {
	e := echo.New()
	e.Use(Middleware(svc, opts))
	who := func(c echo.Context) error {
		name := "anonymous"
		if u := UserFrom(c); u != nil {
			name = u.UserID
		}
		ctxName := "anonymous"
		if u := FromContext(c.Request().Context()); u != nil {
			ctxName = u.UserID
		}
		return c.String(http.StatusOK, name+" "+ctxName)
	}
	e.GET("/whoami", who)
	e.GET("/private", who, RequireUser)
	return e
}

type hdr map[string]string

func do(e *echo.Echo, path, ip string, h hdr) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = ip + ":40000"
	for k, v := range h {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func wantWho(t *testing.T, rec *httptest.ResponseRecorder, who string) {
	t.Helper()
	if rec.Code != http.StatusOK || rec.Body.String() != who+" "+who {
		t.Fatalf("got %d %q, want 200 %q", rec.Code, rec.Body.String(), who+" "+who)
	}
}

func TestMiddlewareIdentifiesCaller(t *testing.T) {
	svc, _, _ := newTestService(t)
	alice, _ := mustCreate(t, svc, "alice", "", 0)
	bob, _ := mustCreate(t, svc, "bob", "", 0)
	var logs syncBuffer
	e := newTestEcho(svc, MiddlewareOptions{Logger: zerolog.New(&logs)})
	const ip = "192.0.2.10"

	wantWho(t, do(e, "/whoami", ip, nil), "anonymous")
	wantWho(t, do(e, "/whoami", ip, hdr{"Authorization": "Bearer " + alice}), "alice")
	wantWho(t, do(e, "/whoami", ip, hdr{"X-API-Key": alice}), "alice")
	wantWho(t, do(e, "/whoami", ip, hdr{"Authorization": "bearer " + alice}), "alice")
	wantWho(t, do(e, "/whoami", ip, hdr{"Authorization": "BEARER  " + alice + " "}), "alice")
	// Bearer wins over X-API-Key, as in MoRAG.
	wantWho(t, do(e, "/whoami", ip, hdr{"Authorization": "Bearer " + alice, "X-API-Key": bob}), "alice")
	// Another scheme is not a key; X-API-Key is still read.
	wantWho(t, do(e, "/whoami", ip, hdr{"Authorization": "Basic " + alice, "X-API-Key": bob}), "bob")
	wantWho(t, do(e, "/whoami", ip, hdr{"Authorization": "Bearer ", "X-API-Key": bob}), "bob")

	// Invalid keys continue anonymously and are logged, without the key.
	bogus := strings.Repeat("x", 43)
	wantWho(t, do(e, "/whoami", ip, hdr{"Authorization": "Bearer " + bogus}), "anonymous")
	wantWho(t, do(e, "/whoami", ip, hdr{"X-API-Key": bogus}), "anonymous")
	if !strings.Contains(logs.String(), "invalid API key") || !strings.Contains(logs.String(), ip) {
		t.Fatalf("invalid key not logged with the client IP: %s", logs.String())
	}
	if strings.Contains(logs.String(), bogus) || strings.Contains(logs.String(), alice) {
		t.Fatal("a key was written to the log")
	}
}

func TestRequireUser(t *testing.T) {
	svc, _, _ := newTestService(t)
	alice, _ := mustCreate(t, svc, "alice", "", 0)
	e := newTestEcho(svc, MiddlewareOptions{Logger: zerolog.Nop()})
	for _, h := range []hdr{nil, {"Authorization": "Bearer wrong"}} {
		rec := do(e, "/private", "192.0.2.20", h)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("RequireUser without a valid key: %d %s", rec.Code, rec.Body.String())
		}
		if got := rec.Header().Get("WWW-Authenticate"); got != "Bearer" {
			t.Fatalf("WWW-Authenticate = %q, want Bearer", got)
		}
		var body map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["detail"] != "Valid API key required" || len(body) != 1 {
			t.Fatalf("401 body = %s, want MoRAG's {\"detail\": \"Valid API key required\"}", rec.Body.String())
		}
	}
	wantWho(t, do(e, "/private", "192.0.2.20", hdr{"X-API-Key": alice}), "alice")
}

func TestMiddlewareRejectsExpiredAndRevokedKeys(t *testing.T) {
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	e := newTestEcho(svc, MiddlewareOptions{Logger: zerolog.Nop()})
	expiredKey, data := mustCreate(t, svc, "alice", "", 1)
	past := pyISOFormat(time.Now().Add(-time.Hour))
	data.ExpiresAt = &past
	r.Do("SET", contract.APIKeyKey(HashKey(expiredKey)), encodeKeyData(data), "KEEPTTL")
	revoked, _ := mustCreate(t, svc, "alice", "", 0)
	if ok, err := svc.Revoke(ctx, revoked); !ok || err != nil {
		t.Fatal(ok, err)
	}
	wantWho(t, do(e, "/whoami", "192.0.2.30", hdr{"X-API-Key": expiredKey}), "anonymous")
	wantWho(t, do(e, "/whoami", "192.0.2.30", hdr{"Authorization": "Bearer " + revoked}), "anonymous")
}

func TestMiddlewareRateLimitsFailuresPerIP(t *testing.T) {
	svc, _, _ := newTestService(t)
	alice, _ := mustCreate(t, svc, "alice", "", 0)
	// One failure a minute refills: nothing comes back during the test.
	e := newTestEcho(svc, MiddlewareOptions{Logger: zerolog.Nop(), FailuresPerMinute: 1, Burst: 3})
	const attacker, other = "198.51.100.7", "198.51.100.8"
	for i := 0; i < 3; i++ {
		wantWho(t, do(e, "/whoami", attacker, hdr{"X-API-Key": "guess" + strconv.Itoa(i)}), "anonymous")
	}
	rec := do(e, "/whoami", attacker, hdr{"X-API-Key": "guess-again"})
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("4th failure from one IP: %d %s, want 429", rec.Code, rec.Body.String())
	}
	if ra, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After = %q, want 1..60 seconds", rec.Header().Get("Retry-After"))
	}
	if !strings.Contains(rec.Body.String(), `"detail"`) {
		t.Fatalf("429 body %s has no detail", rec.Body.String())
	}
	// A valid key is never refused because of failures (issue 15: the
	// 429 came before validation, locking out everyone behind the IP)...
	wantWho(t, do(e, "/whoami", attacker, hdr{"Authorization": "Bearer " + alice}), "alice")
	// ...while invalid ones stay refused, and forging X-Forwarded-For does
	// not escape (no IPExtractor configured).
	if rec := do(e, "/whoami", attacker, hdr{"X-API-Key": "x", "X-Forwarded-For": "203.0.113.99"}); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("forged X-Forwarded-For bypassed the limit: %d", rec.Code)
	}
	// Requests without a key are not limited.
	wantWho(t, do(e, "/whoami", attacker, nil), "anonymous")
	// Another IP still works, with a valid key and with failures of its own.
	wantWho(t, do(e, "/whoami", other, hdr{"X-API-Key": alice}), "alice")
	wantWho(t, do(e, "/whoami", other, hdr{"X-API-Key": "typo"}), "anonymous")
}

func TestMiddlewareIPv6ClientsShareTheirSlash64(t *testing.T) {
	svc, _, _ := newTestService(t)
	e := newTestEcho(svc, MiddlewareOptions{Logger: zerolog.Nop(), FailuresPerMinute: 1, Burst: 2})
	do(e, "/whoami", "[2001:db8:1:2::1]", hdr{"X-API-Key": "a"})
	do(e, "/whoami", "[2001:db8:1:2::2]", hdr{"X-API-Key": "b"})
	if rec := do(e, "/whoami", "[2001:db8:1:2:ffff::3]", hdr{"X-API-Key": "c"}); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("third failure from the same /64: %d, want 429", rec.Code)
	}
	wantWho(t, do(e, "/whoami", "[2001:db8:1:3::1]", hdr{"X-API-Key": "d"}), "anonymous")
}

func TestMiddlewareRedisDownIsAnonymous(t *testing.T) {
	svc, r, _ := newTestService(t)
	alice, _ := mustCreate(t, svc, "alice", "", 0)
	var logs syncBuffer
	e := newTestEcho(svc, MiddlewareOptions{Logger: zerolog.New(&logs), FailuresPerMinute: 1, Burst: 2})
	wantWho(t, do(e, "/whoami", "192.0.2.40", hdr{"X-API-Key": alice}), "alice")
	r.Stop()
	// More attempts than the burst: Redis errors are not the client's fault,
	// so they neither identify the caller nor trip the limiter.
	for i := 0; i < 4; i++ {
		wantWho(t, do(e, "/whoami", "192.0.2.40", hdr{"X-API-Key": alice}), "anonymous")
	}
	if rec := do(e, "/private", "192.0.2.40", hdr{"X-API-Key": alice}); rec.Code != http.StatusUnauthorized {
		t.Fatalf("RequireUser with Redis down: %d, want 401", rec.Code)
	}
	if !strings.Contains(logs.String(), "API key check failed") {
		t.Fatalf("Redis failure not logged: %s", logs.String())
	}
}

func TestMiddlewareWithRealServer(t *testing.T) {
	// The same path through net/http, to catch anything httptest recorders hide.
	svc, _, _ := newTestService(t)
	alice, _ := mustCreate(t, svc, "alice", "", 0)
	srv := httptest.NewServer(newTestEcho(svc, MiddlewareOptions{Logger: zerolog.Nop()}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/private", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK || b.String() != "alice alice" {
		t.Fatalf("GET /private over TCP: %d %q", resp.StatusCode, b.String())
	}
}

// TestMiddlewareCountsAdminTokenGuesses: X-Admin-Token guesses went
// uncounted, so the admin token could be guessed without limit. Now every
// credential counts against one budget, and a blocked client's admin tokens
// are not even compared (the right one is refused too).
func TestMiddlewareCountsAdminTokenGuesses(t *testing.T) {
	svc, _, _ := newTestService(t)
	alice, _ := mustCreate(t, svc, "alice", "", 0)
	const admin = "the-admin-token-0123456789"
	e := echo.New()
	e.Use(Middleware(svc, MiddlewareOptions{Logger: zerolog.Nop(), AdminToken: admin, FailuresPerMinute: 1, Burst: 3}))
	e.GET("/admin", func(c echo.Context) error {
		if !IsAdmin(c) {
			return c.String(http.StatusForbidden, "no")
		}
		return c.String(http.StatusOK, "admin")
	})
	const guesser = "198.51.100.20"
	if rec := do(e, "/admin", guesser, hdr{"X-Admin-Token": admin}); rec.Code != 200 {
		t.Fatalf("right admin token: %d", rec.Code)
	}
	if rec := do(e, "/admin", guesser, hdr{"Authorization": "Bearer " + admin}); rec.Code != 200 {
		t.Fatalf("right admin token as Bearer: %d", rec.Code)
	}
	for i := 0; i < 3; i++ {
		if rec := do(e, "/admin", guesser, hdr{"X-Admin-Token": "guess" + strconv.Itoa(i)}); rec.Code != http.StatusForbidden {
			t.Fatalf("wrong admin token %d: %d, want 403", i, rec.Code)
		}
	}
	for name, h := range map[string]hdr{
		"X-Admin-Token guess": {"X-Admin-Token": "guess-more"},
		"Bearer guess":        {"Authorization": "Bearer guess-more"},
		"right X-Admin-Token": {"X-Admin-Token": admin},
		"right Bearer admin":  {"Authorization": "Bearer " + admin},
	} {
		if rec := do(e, "/admin", guesser, h); rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s from a blocked client: %d, want 429 with Retry-After", name, rec.Code)
		}
	}
	// A valid API key still works from there, and the admin from elsewhere.
	if rec := do(e, "/admin", guesser, hdr{"X-API-Key": alice}); rec.Code != http.StatusForbidden {
		t.Errorf("valid API key from the blocked client: %d, want 403 (served, not admin)", rec.Code)
	}
	if rec := do(e, "/admin", "198.51.100.21", hdr{"X-Admin-Token": admin}); rec.Code != 200 {
		t.Errorf("admin from another client: %d", rec.Code)
	}
}
