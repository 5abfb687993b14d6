package integration_test

import (
	"testing"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
)

// TestKeyPrefixWithPython: a Python client whose broker uses
// global_keyprefix gets its result from a Go worker started with the same
// -key-prefix. Celery 5.2's result backend has no prefix (5.3 added
// result_backend_transport_options' own), so the result key is the one key
// without it.
func TestKeyPrefixWithPython(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	startWorker(t, r.URL(), "-queues", "kp", "-key-prefix", "pfx:")
	lines := python(t, r.URL(), `
from diagapp import app, emit
app.conf.broker_transport_options = {"global_keyprefix": "pfx:"}
res = app.send_task("diag.echo", args=[1, "x"], queue="kp")
emit({"id": res.id, "result": res.get(timeout=30)})
`)
	if len(lines) != 1 {
		t.Fatalf("python output: %v", lines)
	}
	res, _ := lines[0]["result"].(map[string]any)
	if args, _ := res["args"].([]any); len(args) != 2 || args[1] != "x" {
		t.Fatalf("result through the prefixed backend: %v", lines[0])
	}
	keys, err := redis.Strings(r.Do("KEYS", "*"), nil)
	if err != nil {
		t.Fatal(err)
	}
	result := "celery-task-meta-" + lines[0]["id"].(string)
	for _, k := range keys {
		if k != result && (len(k) < 4 || k[:4] != "pfx:") {
			t.Errorf("unprefixed key %q", k)
		}
	}
	if n, _ := redis.Int(r.Do("EXISTS", result), nil); n != 1 {
		t.Errorf("no %s; keys: %q", result, keys)
	}
}
