package protocol_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

// The fetch scripts read an envelope's delivery tag, exchange, routing key
// and redelivered flag with plain string searches (fields_std) when the
// envelope has the standard layout, and with cjson (fields_any) otherwise.
// Where fields_std answers, it must give what cjson reads: the same tag,
// the same exchange and routing key (as JSON values), and redelivered
// whenever cjson says so. It must answer for what Celery, kombu's restore
// and Encode write, or it saves nothing.
func TestHoldFieldsAgree(t *testing.T) {
	r := testenv.StartRedis(t)
	c := r.Conn()
	defer c.Close()

	check := func(name, envelope string) bool { return checkHoldFields(t, c, name, envelope) }

	// Written by Celery 5.2, each one as it is and as kombu's restore
	// writes it back (flags added to headers and delivery_info).
	for _, fx := range protocol.CeleryFixtures(t) {
		file, env := fx.Path, strings.TrimSpace(string(fx.Raw))
		if !check(file, env) {
			t.Errorf("%s (written by Celery) did not take the string path", file)
		}
		red := kombuRestored(t, env)
		if !check(file+" restored", red) {
			t.Errorf("%s as kombu restores it did not take the string path", file)
		}
		if s, _, _ := protocol.HoldFields(c, red, "q"); s[3] != "1" {
			t.Errorf("%s as kombu restores it: not read as redelivered", file)
		}
	}

	// Written by Encode.
	for name, m := range map[string]*protocol.Message{
		"plain":         {Task: "t.noop", RoutingKey: "q"},
		"no routing":    {Task: "t.noop"},
		"exchange":      {Task: "t.noop", Exchange: "ex/change", RoutingKey: "a/b"},
		"unicode":       {Task: "t.ü", RoutingKey: "qüeue", Origin: "hôte"},
		"headers":       {Task: "t.h", RoutingKey: "q", Headers: map[string]any{"properties": map[string]any{"delivery_tag": "evil"}}},
		"priority":      {Task: "t.p", RoutingKey: "q", Priority: 7, ReplyTo: "rt", CorrelationID: "c"},
		"quote in task": {Task: `t."q"`, RoutingKey: "q"},
	} {
		raw, err := protocol.Encode(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !check(name, string(raw)) {
			t.Errorf("%s (written by Encode) did not take the string path", name)
		}
	}

	// Edits the string path must refuse, or read as cjson does.
	simple, err := os.ReadFile(filepath.Join("testdata", "simple.json"))
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSpace(string(simple))
	const tag = `"delivery_tag": "554725c3-af33-4774-8e9d-b168f1c181dc"`
	const di = `"delivery_info": {"exchange": "", "routing_key": "celery"}`
	edits := map[string][2]string{
		"header named properties": {`"headers": {`, `"headers": {"properties": {"delivery_info": {"exchange": "", "routing_key": "x"}, "delivery_tag": "evil"}, `},
		"escaped key":             {tag, tag + `, "x\"delivery_tag": "evil"`},
		"escaped tag":             {tag, `"delivery_tag": "a\"b"`},
		"unicode escape in tag":   {tag, `"delivery_tag": "a\u0062"`},
		"backslash in tag":        {tag, `"delivery_tag": "a\\b"`},
		"escaped exchange":        {`"exchange": ""`, `"exchange": "\u0065"`},
		"duplicate tag":           {tag, tag + `, "delivery_tag": "second"`},
		"tag not last":            {tag, tag + `, "x": 1`},
		"numeric tag":             {tag, `"delivery_tag": 5`},
		"empty tag":               {tag, `"delivery_tag": ""`},
		"long tag":                {tag, `"delivery_tag": "` + strings.Repeat("t", 300) + `"`},
		"brace in reply_to":       {`"reply_to": "`, `"reply_to": "}`},
		"open brace in reply_to":  {`"reply_to": "`, `"reply_to": "{`},
		"brace after":             {tag, `"x": "}", ` + tag},
		"delivery_info extra":     {`"routing_key": "celery"}`, `"routing_key": "celery", "x": 1}`},
		"routing_key twice":       {`"routing_key": "celery"}`, `"routing_key": "celery", "routing_key": "other"}`},
		"delivery_info string":    {di, `"delivery_info": "x", "y": {"exchange": "", "routing_key": "celery"}`},
		"delivery_info escaped":   {di, `"x\"delivery_info": {"exchange": "", "routing_key": "celery"}`},
		"delivery_info twice":     {tag, `"delivery_info": "x", ` + tag},
		"delivery_info first":     {`"properties": {`, `"properties": {` + di + `, `},
		"empty routing key":       {`"routing_key": "celery"`, `"routing_key": ""`},
		"escaped routing key":     {`"routing_key": "celery"`, `"routing_key": "cel\u0065ry"`},
		"slash in exchange":       {`"exchange": ""`, `"exchange": "a/b"`},
		"redelivered false":       {`"routing_key": "celery"}`, `"routing_key": "celery", "redelivered": false}`},
		"redelivered header":      {`"headers": {`, `"headers": {"redelivered": true, `},
		"trailing data":           {`}}`, `}} x`},
		"trailing newline":        {`}}`, "}}\n"},
		"leading space":           {`{"body"`, ` {"body"`},
		"leading data":            {`{"body"`, `x{"body"`},
		"pretty":                  {`, "properties": {`, ",\n  \"properties\": {\n    "},
		"tabs":                    {`"delivery_tag": "`, "\"delivery_tag\":\t\""},
		"properties first":        {`"content-encoding"`, `"properties": {"delivery_info": {"exchange": "", "routing_key": "x"}, "delivery_tag": "evil"}, "content-encoding"`},
		"properties nested":       {tag, `"properties": {"delivery_info": {"exchange": "", "routing_key": "x"}, "delivery_tag": "evil"}, ` + tag},
		"nested in properties":    {`"priority": 0`, `"priority": {"x": {"y": 1}}`},
	}
	for name, edit := range edits {
		env := strings.Replace(base, edit[0], edit[1], 1)
		if env == base {
			t.Fatalf("%s: %q not in the envelope", name, edit[0])
		}
		check(name, env)
	}

	// Moving properties before headers and hiding a properties object at
	// the end of the headers cannot fool it: only an object that closes
	// just before the envelope does qualifies, and that one is a level too
	// deep.
	props := base[strings.Index(base, `"properties": {`):strings.LastIndex(base, "}")]
	head := base[strings.Index(base, `"headers": {`) : strings.Index(base, `, "properties": {`)-1]
	moved := strings.Replace(base, head+"}, "+props, props+", "+head+`, "properties": {"delivery_info": {"exchange": "", "routing_key": "x"}, "delivery_tag": "evil"}}`, 1)
	if moved == base {
		t.Fatal("could not move the properties")
	}
	check("properties hidden in headers", moved)

	// Not JSON, but with a standard tail: the string path holds it, and
	// the consumer's decoder refuses it, so it is dead-lettered a moment
	// later instead of at once.
	broken := strings.Replace(base, `"content-encoding": "utf-8"`, `"content-encoding": "utf-8`, 1)
	if s, a, _ := protocol.HoldFields(c, broken, "q"); s[0] == "" || a[0] != "" {
		t.Errorf("broken JSON: fields_std %v, fields_any %v; want held by the string path only", s, a)
	}
	if _, err := protocol.Decode([]byte(broken)); err == nil {
		t.Error("Decode accepted broken JSON")
	}
}

// checkHoldFields fails t where fields_std answers for envelope with
// anything but what cjson reads; it reports whether fields_std answered.
func checkHoldFields(t *testing.T, c redis.Conn, name, envelope string) (std bool) {
	t.Helper()
	s, a, err := protocol.HoldFields(c, envelope, "the-queue")
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if s[0] == "" {
		return false
	}
	if a[0] == "" {
		if json.Valid([]byte(envelope)) {
			t.Errorf("%s: fields_std held an envelope cjson cannot: %v\n%s", name, s, envelope)
		}
		return true
	}
	if s[0] != a[0] {
		t.Errorf("%s: tag %q, cjson reads %q\n%s", name, s[0], a[0], envelope)
	}
	for i, what := range map[int]string{1: "exchange", 2: "routing key"} {
		var sv, av any
		if err := json.Unmarshal([]byte(s[i]), &sv); err != nil {
			t.Errorf("%s: %s %q is not JSON: %v", name, what, s[i], err)
		}
		_ = json.Unmarshal([]byte(a[i]), &av)
		if sv != av {
			t.Errorf("%s: %s %s, cjson reads %s\n%s", name, what, s[i], a[i], envelope)
		}
	}
	if a[3] == "1" && s[3] != "1" {
		t.Errorf("%s: cjson reads it as redelivered, fields_std does not\n%s", name, envelope)
	}
	return true
}

// FuzzHoldFields: on any envelope, fields_std answers only as cjson
// reads it (where cjson reads it at all: the string path may hold what
// is not JSON, and the consumer's decoder dead-letters that). An envelope
// is fuzzed as two parts split before "properties", so that mutations
// reach the tail fields_std reads as often as the rest. Seeded with
// Celery's envelopes and Encode's; needs a redis-server.
//
//	go test ./protocol -run '^$' -fuzz FuzzHoldFields -fuzztime 60s
func FuzzHoldFields(f *testing.F) {
	add := func(env string) {
		i := strings.LastIndex(env, `"properties"`)
		if i < 0 {
			i = len(env) / 2
		}
		f.Add(env[:i], env[i:])
	}
	for _, fx := range protocol.CeleryFixtures(f) {
		add(strings.TrimSpace(string(fx.Raw)))
	}
	for _, m := range []*protocol.Message{{Task: "t.noop", RoutingKey: "q"}, {Task: "t.x", Exchange: "e", RoutingKey: "a/b", Priority: 3}} {
		raw, err := protocol.Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		add(string(raw))
	}
	r := testenv.StartRedis(f)
	c := r.Conn()
	defer c.Close()
	f.Fuzz(func(t *testing.T, head, tail string) {
		checkHoldFields(t, c, "fuzzed", head+tail)
	})
}

// kombuRestored is env as kombu's _do_restore_message writes it back:
// headers.redelivered and properties.delivery_info.redelivered set, then
// json.dumps. Python does it, so the bytes are kombu's.
func kombuRestored(t *testing.T, env string) string {
	t.Helper()
	const py = `import json, sys
m = json.loads(sys.stdin.read())
try:
    m['headers']['redelivered'] = True
    m['properties']['delivery_info']['redelivered'] = True
except KeyError:
    pass
sys.stdout.write(json.dumps(m))`
	cmd := exec.Command(pythonForFixtures(t), "-c", py)
	cmd.Stdin = strings.NewReader(env)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python json round trip: %v", err)
	}
	return string(out)
}

// pythonForFixtures is a Python 3 to write JSON as kombu does (json.dumps
// is the same in every Python 3).
func pythonForFixtures(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skip("skipped: no python3 to write kombu's restored envelopes (make test installs it)")
	return ""
}
