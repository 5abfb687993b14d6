package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/contract"
	"morag-gpu/internal/testenv"
)

// pyPrelude gives a script MoRAG's own APIKeyService on the test Redis.
const pyPrelude = `import asyncio, json, os, sys
from datetime import datetime
import redis
from morag.services.auth_service import APIKeyService
r = redis.Redis.from_url(os.environ["REDIS_URL"])
svc = APIKeyService(r)
`

func newTestService(t *testing.T) (*KeyService, *testenv.Redis, *redis.Pool) {
	t.Helper()
	r := testenv.StartRedis(t)
	pool := &redis.Pool{
		MaxIdle:     4,
		IdleTimeout: time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", r.Addr(),
				redis.DialConnectTimeout(time.Second),
				redis.DialReadTimeout(5*time.Second),
				redis.DialWriteTimeout(5*time.Second))
		},
	}
	t.Cleanup(func() { pool.Close() })
	return NewKeyService(pool), r, pool
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustCreate(t *testing.T, svc *KeyService, user, desc string, days int) (string, KeyData) {
	t.Helper()
	key, data, err := svc.Create(ctxT(t), user, desc, days)
	if err != nil {
		t.Fatalf("Create(%q): %v", user, err)
	}
	return key, data
}

func ttl(t *testing.T, r *testenv.Redis, name string) int64 {
	t.Helper()
	n, err := redis.Int64(r.Do("TTL", name), nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCreateKeyFormatAndStorage(t *testing.T) {
	svc, r, _ := newTestService(t)
	key, data := mustCreate(t, svc, "alice", "laptop", 0)
	if len(key) != 43 || strings.ContainsAny(key, "+/=") {
		t.Fatalf("key %q: want 43 URL-safe base64 characters like secrets.token_urlsafe(32)", key)
	}
	if data.ExpiresAt != nil || !data.Active || data.UserID != "alice" || data.Description != "laptop" {
		t.Fatalf("data = %+v", data)
	}
	if _, err := parsePyISO(data.CreatedAt); err != nil {
		t.Fatalf("created_at %q: %v", data.CreatedAt, err)
	}
	name := contract.APIKeyKey(HashKey(key))
	stored, err := redis.Bytes(r.Do("GET", name), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", name, err)
	}
	if !bytes.Equal(stored, encodeKeyData(data)) {
		t.Fatalf("stored %s, want %s", stored, encodeKeyData(data))
	}
	if got := ttl(t, r, name); got < 365*86400-60 || got > 365*86400 {
		t.Fatalf("TTL of a key without expiry = %d, want 365 days", got)
	}
	if bytes.Contains(stored, []byte(key)) {
		t.Fatal("plaintext key stored in Redis")
	}
	key2, _ := mustCreate(t, svc, "alice", "", 0)
	if key2 == key {
		t.Fatal("two keys are equal")
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	for _, c := range []struct {
		user, desc string
		days       int
		want       string
	}{
		{"../x", "", 0, "user_id"},
		{"alice", "", -1, "expires_days"},
		{"alice", "", MaxExpiresDays + 1, "expires_days"},
		{"alice", strings.Repeat("d", MaxDescriptionLen+1), 0, "description"},
	} {
		if _, _, err := svc.Create(ctx, c.user, c.desc, c.days); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Create(%q, %d-byte description, %d) error = %v, want one about %s", c.user, len(c.desc), c.days, err, c.want)
		}
	}
	if n, _ := redis.Int(r.Do("DBSIZE"), nil); n != 0 {
		t.Fatalf("refused creates left %d keys in Redis", n)
	}
}

func TestGoKeyValidatesInPython(t *testing.T) {
	testenv.RequireCelery(t)
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	desc := "Ünïcode \"quotes\" \\ <tags> & emoji 😀 \t tab \x7f"
	key7, data7 := mustCreate(t, svc, "alice", desc, 7)
	keyNone, dataNone := mustCreate(t, svc, "user_1.2-x", "", 0)

	out := testenv.RunPython(t, ctx, r.URL(), pyPrelude+`
res = []
for k in sys.argv[1:]:
    d = asyncio.run(svc.validate_api_key(k))
    # Python must be able to read created_at too (isoformat round trip).
    datetime.fromisoformat(d["created_at"])
    res.append(d)
print(json.dumps(res))
`, key7, keyNone)
	var got []KeyData
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	if len(got) != 2 {
		t.Fatalf("python validated %d keys: %s", len(got), out)
	}
	for i, want := range []KeyData{data7, dataNone} {
		g := got[i]
		if g.UserID != want.UserID || g.Description != want.Description || g.CreatedAt != want.CreatedAt ||
			g.Active != want.Active || (g.ExpiresAt == nil) != (want.ExpiresAt == nil) ||
			(g.ExpiresAt != nil && *g.ExpiresAt != *want.ExpiresAt) {
			t.Errorf("python validate_api_key = %+v, want %+v", g, want)
		}
	}
	if got := ttl(t, r, contract.APIKeyKey(HashKey(key7))); got < 7*86400-60 || got > 7*86400 {
		t.Fatalf("TTL with expires_days=7 = %d, want %d like Python", got, 7*86400)
	}
}

func TestGoValueIsWhatPythonJSONDumpsWrites(t *testing.T) {
	testenv.RequireCelery(t)
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	descs := []string{"", "plain", "Ünïcode \"q\" \\ </script> & 😀 \u2028 \x00\x1f\x7f \b\f\n\r\t", strings.Repeat("é", 300)}
	for i, d := range descs {
		key, _ := mustCreate(t, svc, "alice", d, i)
		name := contract.APIKeyKey(HashKey(key))
		stored, err := redis.Bytes(r.Do("GET", name), nil)
		if err != nil {
			t.Fatal(err)
		}
		// Python decodes the stored value and dumps it again; a byte
		// difference means Go does not write what Python writes.
		redumped := testenv.RunPython(t, ctx, r.URL(), pyPrelude+`
sys.stdout.write(json.dumps(json.loads(r.get(sys.argv[1]))))
`, name)
		if redumped != string(stored) {
			t.Errorf("description %q:\n go wrote     %s\n python dumps %s", d, stored, redumped)
		}
	}
}

func TestPythonKeyValidatesInGo(t *testing.T) {
	testenv.RequireCelery(t)
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	out := testenv.RunPython(t, ctx, r.URL(), pyPrelude+`
k7 = asyncio.run(svc.create_api_key("alice", "from python é", 7))
kn = asyncio.run(svc.create_api_key("bob"))
print(k7)
print(kn)
`)
	keys := strings.Fields(out)
	if len(keys) != 2 {
		t.Fatalf("python printed %q", out)
	}
	for i, want := range []struct {
		user, desc string
		ttl        int64
		expires    bool
	}{{"alice", "from python é", 7 * 86400, true}, {"bob", "", 365 * 86400, false}} {
		d, err := svc.Validate(ctx, keys[i])
		if err != nil || d == nil {
			t.Fatalf("Validate(python key for %s) = %v, %v", want.user, d, err)
		}
		if d.UserID != want.user || d.Description != want.desc || !d.Active || (d.ExpiresAt != nil) != want.expires {
			t.Errorf("Validate(python key) = %+v", d)
		}
		name := contract.APIKeyKey(HashKey(keys[i]))
		if got := ttl(t, r, name); got < want.ttl-60 || got > want.ttl {
			t.Errorf("python TTL %d, want %d", got, want.ttl)
		}
		// Go's encoder reproduces the bytes Python wrote.
		stored, _ := redis.Bytes(r.Do("GET", name), nil)
		if enc := encodeKeyData(*d); !bytes.Equal(enc, stored) {
			t.Errorf("python wrote %s\n go would write %s", stored, enc)
		}
	}
	if d, err := svc.Validate(ctx, keys[0]+"x"); d != nil || err != nil {
		t.Fatalf("Validate(wrong key) = %v, %v; want nil, nil", d, err)
	}
	if d, err := svc.Validate(ctx, ""); d != nil || err != nil {
		t.Fatalf("Validate(\"\") = %v, %v; want nil, nil", d, err)
	}
}

func TestExpiredKeyIsInvalid(t *testing.T) {
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	key, data := mustCreate(t, svc, "alice", "", 1)
	if d, err := svc.Validate(ctx, key); d == nil || err != nil {
		t.Fatalf("fresh key: Validate = %v, %v", d, err)
	}
	past := pyISOFormat(time.Now().Add(-time.Hour))
	data.ExpiresAt = &past
	name := contract.APIKeyKey(HashKey(key))
	r.Do("SET", name, encodeKeyData(data), "KEEPTTL")
	if d, err := svc.Validate(ctx, key); d != nil || err != nil {
		t.Fatalf("key with expires_at in the past: Validate = %+v, %v; want nil, nil", d, err)
	}
	// An offset Python cannot compare, or garbage, fails closed.
	for _, bad := range []string{"2999-01-01T00:00:00+00:00", "never"} {
		data.ExpiresAt = &bad
		r.Do("SET", name, encodeKeyData(data), "KEEPTTL")
		if d, _ := svc.Validate(ctx, key); d != nil {
			t.Errorf("expires_at %q: Validate = %+v, want nil", bad, d)
		}
	}
	testenv.RequireCelery(t) // the Go checks above have run
	data.ExpiresAt = &past
	r.Do("SET", name, encodeKeyData(data), "KEEPTTL")
	out := testenv.RunPython(t, ctx, r.URL(), pyPrelude+`print(asyncio.run(svc.validate_api_key(sys.argv[1])))`, key)
	if strings.TrimSpace(out) != "None" {
		t.Fatalf("python validate_api_key of the expired key = %s, want None", out)
	}
}

func TestRevokeKeepsTTL(t *testing.T) {
	testenv.RequireCelery(t)
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	key, _ := mustCreate(t, svc, "alice", "to revoke", 30)
	name := contract.APIKeyKey(HashKey(key))
	before, _ := redis.Bytes(r.Do("GET", name), nil)
	ttlBefore := ttl(t, r, name)

	// What Python's revoke_api_key would write for this value.
	want := testenv.RunPython(t, ctx, r.URL(), pyPrelude+`
d = json.loads(sys.argv[1]); d["active"] = False
sys.stdout.write(json.dumps(d))
`, string(before))

	ok, err := svc.Revoke(ctx, key)
	if !ok || err != nil {
		t.Fatalf("Revoke = %v, %v", ok, err)
	}
	after, _ := redis.Bytes(r.Do("GET", name), nil)
	if string(after) != want {
		t.Fatalf("revoked value\n go     %s\n python %s", after, want)
	}
	if got := ttl(t, r, name); got <= 0 || got > ttlBefore {
		t.Fatalf("TTL after Revoke = %d, want kept (%d)", got, ttlBefore)
	}
	if d, err := svc.Validate(ctx, key); d != nil || err != nil {
		t.Fatalf("Validate(revoked) = %+v, %v; want nil, nil", d, err)
	}
	out := testenv.RunPython(t, ctx, r.URL(), pyPrelude+`print(asyncio.run(svc.validate_api_key(sys.argv[1])))`, key)
	if strings.TrimSpace(out) != "None" {
		t.Fatalf("python validate_api_key(revoked by Go) = %s, want None", out)
	}
	// Revoking twice still reports the key, and revoking by hash works.
	if ok, err := svc.Revoke(ctx, HashKey(key)); !ok || err != nil {
		t.Fatalf("Revoke(hash) = %v, %v", ok, err)
	}
	if ok, err := svc.Revoke(ctx, "no-such-key"); ok || err != nil {
		t.Fatalf("Revoke(unknown) = %v, %v; want false, nil", ok, err)
	}

	// The upstream defect this fixes: Python's revoke_api_key uses a plain
	// SET, so the revoked key loses its TTL and stays in Redis forever.
	pyKey, _ := mustCreate(t, svc, "alice", "python revokes", 30)
	out = testenv.RunPython(t, ctx, r.URL(), pyPrelude+`print(asyncio.run(svc.revoke_api_key(sys.argv[1])))`, pyKey)
	if strings.TrimSpace(out) != "True" {
		t.Fatalf("python revoke_api_key = %s", out)
	}
	if got := ttl(t, r, contract.APIKeyKey(HashKey(pyKey))); got != -1 {
		t.Fatalf("TTL after Python's revoke = %d; upstream drops it (-1). If this changed, update the docs", got)
	}
	if d, _ := svc.Validate(ctx, pyKey); d != nil {
		t.Fatalf("Validate(key revoked by Python) = %+v, want nil", d)
	}
}

func TestRevokeCorruptValue(t *testing.T) {
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	r.Do("SET", contract.APIKeyKey(HashKey("k")), "not json")
	if ok, err := svc.Revoke(ctx, "k"); ok || err == nil || !strings.Contains(err.Error(), "DEL") {
		t.Fatalf("Revoke(corrupt) = %v, %v; want an error that says how to remove it", ok, err)
	}
	if d, err := svc.Validate(ctx, "k"); d != nil || err != nil {
		t.Fatalf("Validate(corrupt) = %v, %v; want nil, nil", d, err)
	}
}

func TestListUsesPerUserIndex(t *testing.T) {
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	a1, _ := mustCreate(t, svc, "alice", "one", 0)
	a2, _ := mustCreate(t, svc, "alice", "two", 10)
	b1, _ := mustCreate(t, svc, "bob", "bob's", 0)
	gone, _ := mustCreate(t, svc, "alice", "expires", 1)
	if _, err := svc.Revoke(ctx, a2); err != nil {
		t.Fatal(err)
	}
	r.Do("DEL", contract.APIKeyKey(HashKey(gone))) // as if its TTL ran out

	list, err := svc.List(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]KeyInfo{}
	for _, k := range list {
		got[k.KeyHash] = k
	}
	if len(list) != 2 || got[HashKey(a1)].Description != "one" || got[HashKey(a2)].Description != "two" {
		t.Fatalf("List(alice) = %+v; want exactly her two live keys", list)
	}
	if !got[HashKey(a1)].Active || got[HashKey(a2)].Active {
		t.Fatalf("List(alice) active flags wrong: %+v", list)
	}
	if _, ok := got[HashKey(b1)]; ok {
		t.Fatal("List(alice) shows bob's key")
	}
	js, _ := json.Marshal(list)
	for _, k := range []string{a1, a2} {
		if strings.Contains(string(js), k) {
			t.Fatal("List exposes a plaintext key")
		}
	}
	if !strings.Contains(string(js), `"key_hash":"`+HashKey(a1)+`"`) || !strings.Contains(string(js), `"user_id":"alice"`) {
		t.Fatalf("List JSON = %s", js)
	}
	// The expired key's hash was pruned from the index.
	if n, _ := redis.Int(r.Do("SISMEMBER", contract.UserKeysKey("alice"), HashKey(gone)), nil); n != 0 {
		t.Fatal("expired key's hash still in alice's index")
	}
	// The index lives at least as long as the longest-lived key in it.
	if it, kt := ttl(t, r, contract.UserKeysKey("alice")), ttl(t, r, contract.APIKeyKey(HashKey(a1))); it < kt {
		t.Fatalf("index TTL %d < key TTL %d", it, kt)
	}
	bl, err := svc.List(ctx, "bob")
	if err != nil || len(bl) != 1 || bl[0].KeyHash != HashKey(b1) {
		t.Fatalf("List(bob) = %+v, %v", bl, err)
	}
	if nl, err := svc.List(ctx, "nobody"); err != nil || nl == nil || len(nl) != 0 {
		t.Fatalf("List(nobody) = %#v, %v; want an empty, non-nil list", nl, err)
	}
	if _, err := svc.List(ctx, "a:b"); err == nil {
		t.Fatal("List accepted an invalid user_id")
	}
}

func TestReindexPicksUpPythonKeys(t *testing.T) {
	testenv.RequireCelery(t)
	svc, r, _ := newTestService(t)
	ctx := ctxT(t)
	out := testenv.RunPython(t, ctx, r.URL(), pyPrelude+`
print(asyncio.run(svc.create_api_key("carol", "py", 3)))
asyncio.run(svc.create_api_key("bad user"))
`)
	key := strings.TrimSpace(out)
	if l, _ := svc.List(ctx, "carol"); len(l) != 0 {
		t.Fatalf("Python keeps no index, yet List(carol) = %+v", l)
	}
	n, err := svc.Reindex(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Reindex = %d, %v; want 1 (the bad user_id skipped)", n, err)
	}
	l, err := svc.List(ctx, "carol")
	if err != nil || len(l) != 1 || l[0].KeyHash != HashKey(key) {
		t.Fatalf("List(carol) after Reindex = %+v, %v", l, err)
	}
	if it := ttl(t, r, contract.UserKeysKey("carol")); it < 3*86400-60 {
		t.Fatalf("index TTL %d shorter than the key's", it)
	}
}

func TestValidateUserID(t *testing.T) {
	for _, bad := range []string{"../x", "a b", "", strings.Repeat("a", 65), "alice:gpu", ".", "..", "é", "a/b", "a\x00"} {
		err := ValidateUserID(bad)
		if err == nil {
			t.Errorf("ValidateUserID(%q) = nil, want an error", bad)
			continue
		}
		if bad != "." && bad != ".." && !strings.Contains(err.Error(), "A-Z") {
			t.Errorf("ValidateUserID(%q) error %q does not say what is allowed", bad, err)
		}
	}
	for _, good := range []string{"alice", "user_1.2-x", strings.Repeat("a", 64), "A", "..a"} {
		if err := ValidateUserID(good); err != nil {
			t.Errorf("ValidateUserID(%q) = %v", good, err)
		}
	}
}
