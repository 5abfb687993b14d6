package protocol

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/internal/testenv"
	"morag-gpu/protocol/internal/kombujson"
)

// codecVector is one entry of testdata/manifest.json, written by
// test/python/capture_vectors.py from apply_async's arguments.
type codecVector struct {
	Name         string           `json:"name"`
	File         string           `json:"file"`
	ListKey      string           `json:"list_key"`
	SentBetween  [2]float64       `json:"sent_between"`
	Protocol     int              `json:"protocol"`
	Task         string           `json:"task"`
	ID           string           `json:"id"`
	RootID       *string          `json:"root_id"`
	ParentID     *string          `json:"parent_id"`
	Group        *string          `json:"group"`
	GroupIndex   *int             `json:"group_index"`
	Args         []any            `json:"args"`
	Kwargs       map[string]any   `json:"kwargs"`
	Priority     int              `json:"priority"`
	Exchange     string           `json:"exchange"`
	RoutingKey   string           `json:"routing_key"`
	Retries      int              `json:"retries"`
	Timelimit    [2]*float64      `json:"timelimit"`
	IgnoreResult bool             `json:"ignore_result"`
	Shadow       *string          `json:"shadow"`
	Headers      map[string]any   `json:"headers"`
	Callbacks    []codecSigExpect `json:"callbacks"`
	Errbacks     []codecSigExpect `json:"errbacks"`
	Chain        []codecSigExpect `json:"chain"`
	Compression  *string          `json:"compression"`
	EtaCountdown *float64         `json:"eta_countdown"`
	EtaExact     *string          `json:"eta_exact"`
	ExpiresIn    *float64         `json:"expires_in"`
}

type codecSigExpect struct {
	Task      string         `json:"task"`
	Args      []any          `json:"args"`
	Kwargs    map[string]any `json:"kwargs"`
	Immutable bool           `json:"immutable"`
	TaskID    *string        `json:"task_id"`
}

func codecReadManifest(t testing.TB, dir string) []codecVector {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	var man struct {
		Cases []codecVector `json:"cases"`
	}
	if err := kombujson.DecodeNumbers(raw, &man); err != nil {
		t.Fatalf("parse manifest: %v", err)
	}
	if len(man.Cases) < 10 {
		t.Fatalf("manifest has only %d cases", len(man.Cases))
	}
	return man.Cases
}

// canon renders v as sorted compact JSON for comparisons.
func codecCanon(t testing.TB, v any) string {
	t.Helper()
	b, err := marshalJSON(v)
	if err != nil {
		t.Fatalf("canon: %v", err)
	}
	return string(b)
}

func codecStr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// codecListKey is kombu's _q_for_pri with the default priority steps.
func codecListKey(queue string, pri int) string {
	step := 0
	for _, s := range []int{0, 3, 6, 9} {
		if pri >= s {
			step = s
		}
	}
	if step == 0 {
		return queue
	}
	return fmt.Sprintf("%s\x06\x16%d", queue, step)
}

func codecSeconds(f *float64) time.Duration {
	if f == nil {
		return 0
	}
	return time.Duration(*f * float64(time.Second))
}

func codecUnix(f float64) time.Time {
	return time.Unix(0, int64(f*1e9))
}

// codecCheckVectors decodes every vector in dir and compares it with the
// manifest, then checks EnvelopeInfo and a Go re-encode of it.
func codecCheckVectors(t *testing.T, dir string) {
	cases := codecReadManifest(t, dir)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, c.File))
			if err != nil {
				t.Fatal(err)
			}
			m, err := Decode(raw)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			codecCheckCase(t, c, m)

			tag, pri, ex, rk, err := envelopeInfo(raw)
			if err != nil || tag != m.DeliveryTag || tag == "" || pri != c.Priority || ex != c.Exchange || rk != c.RoutingKey {
				t.Errorf("EnvelopeInfo = %q %d %q %q %v; want tag %q priority %d exchange %q routing key %q",
					tag, pri, ex, rk, err, m.DeliveryTag, c.Priority, c.Exchange, c.RoutingKey)
			}
			if got := codecListKey(rk, pri); got != c.ListKey {
				t.Errorf("priority %d maps to list %q, but kombu put the message on %q", pri, got, c.ListKey)
			}
			if c.Compression != nil {
				var env struct {
					Headers map[string]any `json:"headers"`
				}
				_ = json.Unmarshal(raw, &env)
				if env.Headers["compression"] != *c.Compression {
					t.Errorf("vector has compression header %v, want %q", env.Headers["compression"], *c.Compression)
				}
			}

			// Go re-encodes what Python sent: same task, every field kept.
			enc, err := Encode(m)
			if err != nil {
				t.Fatalf("Encode(decoded): %v", err)
			}
			m2, err := Decode(enc)
			if err != nil {
				t.Fatalf("Decode(Encode(decoded)): %v", err)
			}
			m.Protocol = 2
			if a, b := codecCanon(t, codecView(m)), codecCanon(t, codecView(m2)); a != b {
				t.Errorf("re-encode changed the message:\n  before %s\n  after  %s", a, b)
			}
		})
	}
}

func codecCheckCase(t *testing.T, c codecVector, m *Message) {
	t.Helper()
	eq := func(what string, got, want any) {
		t.Helper()
		if g, w := codecCanon(t, got), codecCanon(t, want); g != w {
			t.Errorf("%s = %s, want %s", what, g, w)
		}
	}
	eq("protocol", m.Protocol, c.Protocol)
	eq("task", m.Task, c.Task)
	eq("id", m.ID, c.ID)
	eq("root_id", m.RootID, codecStr(c.RootID))
	eq("parent_id", m.ParentID, codecStr(c.ParentID))
	eq("group", m.Group, codecStr(c.Group))
	eq("group_index", m.GroupIndex, c.GroupIndex)
	eq("args", m.Args, c.Args)
	eq("kwargs", m.Kwargs, c.Kwargs)
	eq("priority", m.Priority, c.Priority)
	eq("exchange", m.Exchange, c.Exchange)
	eq("routing_key", m.RoutingKey, c.RoutingKey)
	eq("retries", m.Retries, c.Retries)
	eq("timelimit", []time.Duration{m.TimeLimit.Hard, m.TimeLimit.Soft}, []time.Duration{codecSeconds(c.Timelimit[0]), codecSeconds(c.Timelimit[1])})
	eq("ignore_result", m.IgnoreResult, c.IgnoreResult)
	eq("shadow", m.Shadow, codecStr(c.Shadow))
	eq("correlation_id", m.CorrelationID, c.ID)
	if len(c.Headers) == 0 {
		c.Headers = nil
	}
	eq("custom headers", m.Headers, c.Headers)
	if m.Protocol == 2 && m.Lang != "py" {
		t.Errorf("lang = %q, want py", m.Lang)
	}
	if m.Protocol == 2 && (!strings.HasPrefix(m.Origin, "gen") || m.ArgsRepr == "" || m.KwargsRepr != "{}" && len(c.Kwargs) == 0) {
		t.Errorf("origin %q argsrepr %q kwargsrepr %q do not look like Celery's", m.Origin, m.ArgsRepr, m.KwargsRepr)
	}
	if m.ReplyTo == "" {
		t.Error("reply_to is empty; Celery sends its thread oid")
	}

	sigs := func(what string, got []Signature, want []codecSigExpect) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: %d signatures, want %d", what, len(got), len(want))
			return
		}
		for i, w := range want {
			g := got[i]
			eq(fmt.Sprintf("%s[%d].task", what, i), g.Task, w.Task)
			eq(fmt.Sprintf("%s[%d].args", what, i), g.Args, w.Args)
			eq(fmt.Sprintf("%s[%d].kwargs", what, i), g.Kwargs, w.Kwargs)
			eq(fmt.Sprintf("%s[%d].immutable", what, i), g.Immutable, w.Immutable)
			if w.TaskID != nil {
				eq(fmt.Sprintf("%s[%d].options.task_id", what, i), g.Options["task_id"], *w.TaskID)
			}
		}
	}
	sigs("callbacks", m.Embed.Callbacks, c.Callbacks)
	sigs("errbacks", m.Embed.Errbacks, c.Errbacks)
	sigs("chain", m.Embed.Chain, c.Chain)

	window := func(what string, got *time.Time, after *float64) {
		t.Helper()
		if after == nil {
			if got != nil {
				t.Errorf("%s = %v, want none", what, got)
			}
			return
		}
		lo := codecUnix(c.SentBetween[0] + *after).Add(-time.Millisecond)
		hi := codecUnix(c.SentBetween[1] + *after).Add(time.Millisecond)
		if got == nil || got.Before(lo) || got.After(hi) || got.Location() != time.UTC {
			t.Errorf("%s = %v, want a UTC time in [%v, %v]", what, got, lo, hi)
		}
	}
	if c.EtaExact != nil {
		want, err := time.Parse(time.RFC3339Nano, *c.EtaExact)
		if err != nil {
			t.Fatal(err)
		}
		if m.ETA == nil || !m.ETA.Equal(want) {
			t.Errorf("eta = %v, want %v (a naive eta is UTC)", m.ETA, want)
		}
	} else {
		window("eta", m.ETA, c.EtaCountdown)
	}
	window("expires", m.Expires, c.ExpiresIn)
}

// codecView is a comparable rendering of every Message field.
func codecView(m *Message) map[string]any {
	tp := func(t *time.Time) any {
		if t == nil {
			return nil
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"ID": m.ID, "Task": m.Task, "Lang": m.Lang, "Shadow": m.Shadow, "ETA": tp(m.ETA), "Expires": tp(m.Expires),
		"Group": m.Group, "GroupIndex": m.GroupIndex, "Retries": m.Retries, "TimeLimit": []any{int64(m.TimeLimit.Hard), int64(m.TimeLimit.Soft)},
		"RootID": m.RootID, "ParentID": m.ParentID, "ArgsRepr": m.ArgsRepr, "KwargsRepr": m.KwargsRepr, "Origin": m.Origin,
		"IgnoreResult": m.IgnoreResult, "Headers": m.Headers, "Args": m.Args, "Kwargs": m.Kwargs,
		"Callbacks": m.Embed.Callbacks, "Errbacks": m.Embed.Errbacks, "Chain": m.Embed.Chain, "Chord": m.Embed.Chord,
		"CorrelationID": m.CorrelationID, "ReplyTo": m.ReplyTo, "Priority": m.Priority, "DeliveryTag": m.DeliveryTag,
		"Exchange": m.Exchange, "RoutingKey": m.RoutingKey, "Redelivered": m.Redelivered, "Protocol": m.Protocol,
	}
}

// TestDecodeGoldenVectors decodes the envelopes Celery 5.2.6 wrote (captured
// into testdata by test/python/capture_vectors.py).
func TestDecodeGoldenVectors(t *testing.T) {
	codecCheckVectors(t, "testdata")
}

// TestDecodeLiveCeleryVectors runs the capture script against a fresh Redis
// now, so the decoder is checked against the installed Celery too, not only
// against the committed files.
func TestDecodeLiveCeleryVectors(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script, err := os.ReadFile(filepath.Join(testenv.PythonPath(t), "capture_vectors.py"))
	if err != nil {
		t.Fatal(err)
	}
	out := testenv.RunPython(t, ctx, r.URL(), string(script), dir)
	if !strings.Contains(out, "wrote") {
		t.Fatalf("capture script printed %q", out)
	}
	codecCheckVectors(t, dir)
}

// TestEncodeWire checks the exact envelope shape Celery workers read.
func TestEncodeWire(t *testing.T) {
	m := &Message{Task: "wire.add", Args: []any{2, 2}}
	raw, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	// Defaults are written back.
	if len(m.ID) != 36 || m.RootID != m.ID || m.CorrelationID != m.ID || len(m.DeliveryTag) != 36 || m.DeliveryTag == m.ID ||
		m.RoutingKey != "celery" || m.Lang != "go" || !strings.HasPrefix(m.Origin, fmt.Sprintf("gen%d@", os.Getpid())) ||
		m.ArgsRepr != "(2, 2)" || m.KwargsRepr != "{}" || m.Protocol != 2 {
		t.Fatalf("defaults not filled: %+v", m)
	}
	// Key order of the envelope, headers and properties is Celery's.
	wantOrder := []string{`{"body":`, `"content-encoding":"utf-8"`, `"content-type":"application/json"`, `"headers":{"lang":"go"`,
		`"task":"wire.add"`, `"id":`, `"shadow":null`, `"eta":null`, `"expires":null`, `"group":null`, `"group_index":null`,
		`"retries":0`, `"timelimit":[null,null]`, `"root_id":`, `"parent_id":null`, `"argsrepr":"(2, 2)"`, `"kwargsrepr":"{}"`,
		`"origin":"gen`, `"ignore_result":false}`, `"properties":{"correlation_id":`, `"reply_to":""`, `"delivery_mode":2`,
		`"delivery_info":{"exchange":"","routing_key":"celery"}`, `"priority":0`, `"body_encoding":"base64"`, `"delivery_tag":`}
	pos := 0
	for _, w := range wantOrder {
		i := strings.Index(string(raw[pos:]), w)
		if i < 0 {
			t.Fatalf("envelope lacks %s after offset %d:\n%s", w, pos, raw)
		}
		pos += i + len(w)
	}
	var env struct {
		Body string `json:"body"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	body, err := base64.StdEncoding.DecodeString(env.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := `[[2,2],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]`; string(body) != want {
		t.Errorf("body = %s, want %s", body, want)
	}

	// A second Encode of the same message keeps the filled-in ids.
	id, tag := m.ID, m.DeliveryTag
	if _, err := Encode(m); err != nil || m.ID != id || m.DeliveryTag != tag {
		t.Errorf("re-encode changed ids: %v", err)
	}

	// Custom headers follow; protocol-named and compression ones are dropped.
	m = &Message{Task: "t", Headers: map[string]any{"x-b": 1, "x-a": "<&>", "task": "evil", "compression": "application/x-gzip"}}
	raw, err = Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(`"ignore_result":false,"x-a":"<&>","x-b":1}`)) || bytes.Contains(raw, []byte("evil")) || bytes.Contains(raw, []byte("compression")) {
		t.Errorf("custom headers wrong: %s", raw)
	}
}

func TestEncodeErrors(t *testing.T) {
	for name, m := range map[string]*Message{
		"nil":            nil,
		"no task":        {},
		"negative limit": {Task: "t", TimeLimit: TimeLimit{Soft: -time.Second}},
		"NaN arg":        {Task: "t", Args: []any{codecNaN()}},
		"bad number":     {Task: "t", Kwargs: map[string]any{"n": json.Number("12abc")}},
		"bare envelope":  {Task: "t", Args: []any{map[string]any{"__type__": "x", "__value__": 1}}},
		"bad header":     {Task: "t", Headers: map[string]any{"h": func() {}}},
	} {
		if raw, err := Encode(m); err == nil {
			t.Errorf("%s: Encode succeeded: %s", name, raw)
		}
	}
}

func codecNaN() float64 {
	zero := 0.0
	return zero / zero
}

// TestEncodeDecodeRoundTrip: every field survives Go -> Go.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	eta := time.Date(2030, 5, 1, 12, 0, 10, 123456000, time.UTC)
	exp := time.Date(2030, 5, 1, 13, 0, 0, 0, time.FixedZone("", 2*3600))
	gi := 3
	chordType := "chord"
	m := &Message{
		ID: "id-1", Task: "wire.echo", Lang: "go", Shadow: "shadow", ETA: &eta, Expires: &exp,
		Group: "g", GroupIndex: &gi, Retries: 2, TimeLimit: TimeLimit{Hard: 90 * time.Second, Soft: 1500 * time.Millisecond},
		RootID: "root", ParentID: "parent", ArgsRepr: "(x)", KwargsRepr: "{y}", Origin: "me@host", IgnoreResult: true,
		Headers: map[string]any{"x-big": json.Number("1180591620717411303424"), "x-list": []any{"a", json.Number("1.5")}},
		Args:    []any{json.Number("1180591620717411303424"), "héllo ☃ \u2028 \x01", json.Number("0.1"), true, nil, []any{}, map[string]any{}},
		Kwargs:  map[string]any{"k": map[string]any{"n": json.Number("-9223372036854775809")}},
		Embed: Embed{
			Callbacks: []Signature{{Task: "cb", Args: []any{json.Number("1")}, Kwargs: map[string]any{}, Options: map[string]any{"task_id": "c1"}}},
			Errbacks:  []Signature{{Task: "eb", Args: []any{}, Kwargs: map[string]any{}, Options: map[string]any{}, Immutable: true}},
			Chain:     []Signature{{Task: "last", Args: []any{}, Kwargs: map[string]any{}, Options: map[string]any{}}, {Task: "next", Args: []any{}, Kwargs: map[string]any{}, Options: map[string]any{}}},
			Chord:     &Signature{Task: "body", Args: []any{}, Kwargs: map[string]any{}, Options: map[string]any{}, SubtaskType: &chordType},
		},
		CorrelationID: "corr", ReplyTo: "reply", Priority: 6, DeliveryTag: "tag", Exchange: "", RoutingKey: "q2", Protocol: 2,
	}
	raw, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := codecCanon(t, codecView(m)), codecCanon(t, codecView(got)); a != b {
		t.Errorf("round trip changed the message:\n  sent %s\n  got  %s", a, b)
	}
	if !bytes.Contains(raw, []byte(`"eta":"2030-05-01T12:00:10.123456+00:00","expires":"2030-05-01T11:00:00+00:00"`)) ||
		!bytes.Contains(raw, []byte(`"timelimit":[90,1.5]`)) || !bytes.Contains(raw, []byte(`"group_index":3`)) {
		t.Errorf("header formatting: %s", raw)
	}
}

// envelope builds a kombu envelope around body bytes for the decode tests.
func codecEnvelope(headers, body string, mod ...func(map[string]any)) []byte {
	env := map[string]any{
		"body":             base64.StdEncoding.EncodeToString([]byte(body)),
		"content-encoding": "utf-8",
		"content-type":     "application/json",
		"headers":          json.RawMessage(headers),
		"properties": map[string]any{
			"correlation_id": "c", "reply_to": "", "delivery_mode": 2,
			"delivery_info": map[string]any{"exchange": "", "routing_key": "celery"},
			"priority":      0, "body_encoding": "base64", "delivery_tag": "tag-1",
		},
	}
	for _, f := range mod {
		f(env)
	}
	b, err := json.Marshal(env)
	if err != nil {
		panic(err)
	}
	return b
}

func codecProps(f func(p map[string]any)) func(map[string]any) {
	return func(env map[string]any) { f(env["properties"].(map[string]any)) }
}

const codecV2Headers = `{"lang":"py","task":"wire.add","id":"id-1","root_id":"id-1","timelimit":[null,null]}`

func TestDecodeVariants(t *testing.T) {
	var zbuf, gbuf bytes.Buffer
	zw := zlib.NewWriter(&zbuf)
	zw.Write([]byte(`[[7],{},null]`))
	zw.Close()
	gw := gzip.NewWriter(&gbuf)
	gw.Write([]byte(`[[8],{},null]`))
	gw.Close()
	compressed := func(b []byte, kind string) []byte {
		return codecEnvelope(`{"task":"t","id":"i","compression":"`+kind+`","x-keep":1}`, "", func(env map[string]any) {
			env["body"] = base64.StdEncoding.EncodeToString(b)
		})
	}

	for _, tc := range []struct {
		name  string
		raw   []byte
		check func(*Message) bool
	}{
		{"v2 utf-8 body verbatim", codecEnvelope(codecV2Headers, "", func(env map[string]any) {
			env["body"] = `[[1, 2], {"a": 1}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`
			env["properties"].(map[string]any)["body_encoding"] = "utf-8"
		}), func(m *Message) bool { return codecCanon(t, m.Args) == "[1,2]" && m.Kwargs["a"] == json.Number("1") }},
		{"v2 body_encoding absent", codecEnvelope(codecV2Headers, "", func(env map[string]any) {
			env["body"] = `[[3], {}]`
			delete(env["properties"].(map[string]any), "body_encoding")
		}), func(m *Message) bool { return codecCanon(t, m.Args) == "[3]" && m.Embed.Chain == nil }},
		{"v2 embed null", codecEnvelope(codecV2Headers, `[[], {}, null]`), func(m *Message) bool { return len(m.Args) == 0 && m.Args != nil && m.Kwargs != nil }},
		{"v2 embed missing keys", codecEnvelope(codecV2Headers, `[[], {}, {}]`), func(m *Message) bool { return m.Embed.Chord == nil }},
		{"base64 with newlines", codecEnvelope(codecV2Headers, "", func(env map[string]any) {
			s := base64.StdEncoding.EncodeToString([]byte(`[["abcdefghijklmnopqrstuvwxyz0123456789"], {}]`))
			env["body"] = s[:20] + "\n" + s[20:]
		}), func(m *Message) bool { return len(m.Args) == 1 }},
		{"zlib", compressed(zbuf.Bytes(), "application/x-gzip"), func(m *Message) bool {
			return codecCanon(t, m.Args) == "[7]" && codecCanon(t, m.Headers) == `{"x-keep":1}`
		}},
		{"zlib alias", compressed(zbuf.Bytes(), "zlib"), func(m *Message) bool { return codecCanon(t, m.Args) == "[7]" }},
		{"real gzip", compressed(gbuf.Bytes(), "gzip"), func(m *Message) bool { return codecCanon(t, m.Args) == "[8]" }},
		{"hybrid: headers override body", codecEnvelope(`{"task":"hdr.task","id":"hdr-id","retries":4}`,
			`{"task":"body.task","id":"body-id","args":[1],"kwargs":{"k":2},"retries":1,"eta":"2030-01-01T00:00:00",`+
				`"root_id":"r","timelimit":[5,null],"callbacks":[{"task":"cb","args":[],"kwargs":{},"options":{},"subtask_type":null,"immutable":false}]}`),
			func(m *Message) bool {
				return m.Protocol == 2 && m.Task == "hdr.task" && m.ID == "hdr-id" && m.Retries == 4 && m.RootID == "r" &&
					codecCanon(t, m.Args) == "[1]" && m.Kwargs["k"] == json.Number("2") && m.TimeLimit.Hard == 5*time.Second &&
					m.ETA != nil && m.ETA.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) && len(m.Embed.Callbacks) == 1
			}},
		{"v1 taskset is the group", codecEnvelope(`{}`,
			`{"task":"t1","id":"i1","args":[1,"a"],"kwargs":{},"group":null,"taskset":"ts","retries":2,"eta":null,"expires":"2030-01-01T00:00:00.5+01:00","utc":true,"timelimit":[null,2.5]}`),
			func(m *Message) bool {
				return m.Protocol == 1 && m.Task == "t1" && m.Group == "ts" && m.Retries == 2 && m.TimeLimit == TimeLimit{Soft: 2500 * time.Millisecond, SoftRaw: "2.5"} &&
					m.Expires.Equal(time.Date(2029, 12, 31, 23, 0, 0, 5e8, time.UTC)) && m.ArgsRepr == "(1, 'a')" && m.KwargsRepr == "{}"
			}},
		{"priority null", codecEnvelope(codecV2Headers, `[[],{}]`, codecProps(func(p map[string]any) { p["priority"] = nil })), func(m *Message) bool { return m.Priority == 0 }},
		{"priority missing", codecEnvelope(codecV2Headers, `[[],{}]`, codecProps(func(p map[string]any) { delete(p, "priority") })), func(m *Message) bool { return m.Priority == 0 }},
		{"priority float", codecEnvelope(codecV2Headers, `[[],{}]`, codecProps(func(p map[string]any) { p["priority"] = 6.7 })), func(m *Message) bool { return m.Priority == 6 }},
		{"priority string", codecEnvelope(codecV2Headers, `[[],{}]`, codecProps(func(p map[string]any) { p["priority"] = "4" })), func(m *Message) bool { return m.Priority == 4 }},
		{"priority clamped", codecEnvelope(codecV2Headers, `[[],{}]`, codecProps(func(p map[string]any) { p["priority"] = 255 })), func(m *Message) bool { return m.Priority == 9 }},
		{"timelimit floats and ints", codecEnvelope(`{"task":"t","id":"i","timelimit":[1.5,3]}`, `[[],{}]`), func(m *Message) bool {
			// The raw numbers keep int and float apart, as Python does.
			return m.TimeLimit == TimeLimit{Hard: 1500 * time.Millisecond, Soft: 3 * time.Second, HardRaw: "1.5", SoftRaw: "3"}
		}},
		{"timelimit null", codecEnvelope(`{"task":"t","id":"i","timelimit":null}`, `[[],{}]`), func(m *Message) bool { return m.TimeLimit == TimeLimit{} }},
		{"aware eta with Z", codecEnvelope(`{"task":"t","id":"i","eta":"2030-01-01T10:00:00Z","expires":"2030-01-01T10:00:00.000001-02:30"}`, `[[],{}]`), func(m *Message) bool {
			return m.ETA.Equal(time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)) && m.Expires.Equal(time.Date(2030, 1, 1, 12, 30, 0, 1000, time.UTC))
		}},
		{"redelivered header", codecEnvelope(`{"task":"t","id":"i","redelivered":true}`, `[[],{}]`), func(m *Message) bool {
			return m.Redelivered && m.Headers["redelivered"] == true
		}},
		{"redelivered delivery_info", codecEnvelope(codecV2Headers, `[[],{}]`, codecProps(func(p map[string]any) {
			p["delivery_info"] = map[string]any{"exchange": "ex", "routing_key": "rk", "redelivered": true}
		})), func(m *Message) bool { return m.Redelivered && m.Exchange == "ex" && m.RoutingKey == "rk" }},
		{"unknown headers kept", codecEnvelope(`{"task":"t","id":"i","stamped_headers":null,"stamps":{},"replaced_task_nesting":0,"x":{"y":[1]}}`, `[[],{}]`),
			func(m *Message) bool {
				return codecCanon(t, m.Headers) == `{"replaced_task_nesting":0,"stamped_headers":null,"stamps":{},"x":{"y":[1]}}`
			}},
		{"kombu 5.3 types in args", codecEnvelope(codecV2Headers, `[[{"__type__": "datetime", "__value__": "2024-05-01T12:00:10.123456+00:00"},`+
			`{"__type__": "uuid", "__value__": {"hex": "e3b0c44298fc4c149afbf4c8996fb924", "version": 4}}], {"d": {"__type__": "decimal", "__value__": "1.10"}}]`),
			func(m *Message) bool {
				ts, ok := m.Args[0].(time.Time)
				return ok && ts.Equal(time.Date(2024, 5, 1, 12, 0, 10, 123456000, time.UTC)) &&
					m.Args[1] == "e3b0c442-98fc-4c14-9afb-f4c8996fb924" && m.Kwargs["d"] == json.Number("1.10")
			}},
		{"large ints exact", codecEnvelope(codecV2Headers, `[[1180591620717411303424, -1e400], {}]`), func(m *Message) bool {
			return m.Args[0] == json.Number("1180591620717411303424") && m.Args[1] == json.Number("-1e400")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(tc.raw)
			if err != nil {
				t.Fatalf("Decode: %v\n%s", err, tc.raw)
			}
			if m.DeliveryTag != "tag-1" || !tc.check(m) {
				t.Errorf("decoded %s", codecCanon(t, codecView(m)))
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		raw          []byte
	}{
		{"not json", "invalid-json", []byte(`{"body": `)},
		{"not an object", "invalid-json", []byte(`[1,2]`)},
		{"empty", "invalid-json", nil},
		{"no properties", "no-delivery-tag", []byte(`{"body":"","headers":{"task":"t","id":"i"},"content-type":"application/json"}`)},
		{"no delivery tag", "no-delivery-tag", codecEnvelope(codecV2Headers, `[[],{}]`, codecProps(func(p map[string]any) { delete(p, "delivery_tag") }))},
		{"numeric delivery tag", "no-delivery-tag", codecEnvelope(codecV2Headers, `[[],{}]`, codecProps(func(p map[string]any) { p["delivery_tag"] = 5 }))},
		{"properties not object", "bad-envelope", codecEnvelope(codecV2Headers, `[[],{}]`, func(env map[string]any) { env["properties"] = "x" })},
		{"headers not object", "bad-envelope", codecEnvelope(`[1]`, `[[],{}]`)},
		{"pickle", "unsupported-content-type", codecEnvelope(codecV2Headers, `[[],{}]`, func(env map[string]any) { env["content-type"] = "application/x-python-serialize" })},
		{"no content type", "unsupported-content-type", codecEnvelope(codecV2Headers, `[[],{}]`, func(env map[string]any) { delete(env, "content-type") })},
		{"content type with params", "unsupported-content-type", codecEnvelope(codecV2Headers, `[[],{}]`, func(env map[string]any) { env["content-type"] = "application/json; charset=utf-8" })},
		{"brotli", "unsupported-compression", codecEnvelope(`{"task":"t","id":"i","compression":"application/x-brotli"}`, `[[],{}]`)},
		{"broken zlib", "bad-body", codecEnvelope(`{"task":"t","id":"i","compression":"application/x-gzip"}`, `[[],{}]`)},
		{"bad base64", "bad-body", codecEnvelope(codecV2Headers, "", func(env map[string]any) { env["body"] = "%%%%=" })},
		{"body not a string", "bad-body", codecEnvelope(codecV2Headers, "", func(env map[string]any) { env["body"] = 5 })},
		{"body not json", "bad-body", codecEnvelope(codecV2Headers, `[[],{}`)},
		{"unknown body_encoding", "bad-body", codecEnvelope(codecV2Headers, `[[],{}]`, codecProps(func(p map[string]any) { p["body_encoding"] = "rot13" }))},
		{"v2 body object without args", "bad-body", codecEnvelope(codecV2Headers, `{"task":"t"}`)},
		{"v2 body one element", "bad-body", codecEnvelope(codecV2Headers, `[[]]`)},
		{"v2 kwargs not mapping", "bad-body", codecEnvelope(codecV2Headers, `[[], []]`)},
		{"v2 args not list", "bad-body", codecEnvelope(codecV2Headers, `["a", {}]`)},
		{"bad callback", "bad-body", codecEnvelope(codecV2Headers, `[[], {}, {"callbacks": [5]}]`)},
		{"unknown kombu type", "bad-body", codecEnvelope(codecV2Headers, `[[{"__type__":"pickle","__value__":"x"}], {}]`)},
		{"no task anywhere", "unknown-message", codecEnvelope(`{}`, `[[], {}]`)},
		{"v1 body without task", "unknown-message", codecEnvelope(`{}`, `{"id":"i","args":[]}`)},
		{"no id", "invalid-task", codecEnvelope(`{"task":"t"}`, `[[], {}]`)},
		{"id not string", "invalid-task", codecEnvelope(`{"task":"t","id":5}`, `[[], {}]`)},
		{"bad eta", "invalid-task", codecEnvelope(`{"task":"t","id":"i","eta":"tomorrow"}`, `[[], {}]`)},
		{"bad timelimit", "invalid-task", codecEnvelope(`{"task":"t","id":"i","timelimit":["a",null]}`, `[[], {}]`)},
		{"bad retries", "invalid-task", codecEnvelope(`{"task":"t","id":"i","retries":1.5}`, `[[], {}]`)},
		{"bad ignore_result", "invalid-task", codecEnvelope(`{"task":"t","id":"i","ignore_result":"yes"}`, `[[], {}]`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(tc.raw)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode = %+v, %v; want a *DecodeError %q", m, err, tc.reason)
			}
			if de.Reason != tc.reason || m != nil {
				t.Errorf("reason %q (%v), want %q", de.Reason, err, tc.reason)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error text %q does not name the reason", err)
			}
		})
	}
}

func TestDecompressionBomb(t *testing.T) {
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	// The real limit is maxDecompressedBody; a small one keeps the test light.
	if out, err := decompressBody("zlib", z.Bytes(), 1<<20); err != nil || len(out) != 1<<20 {
		t.Fatalf("at the limit: %d bytes, %v", len(out), err)
	}
	_, err := decompressBody("application/x-gzip", z.Bytes(), 1<<20-1)
	var de *DecodeError
	if !errors.As(err, &de) || de.Reason != "bad-body" || !strings.Contains(err.Error(), "expands") {
		t.Fatalf("a %d-byte stream expanding past the limit gave %v, want bad-body", z.Len(), err)
	}
}

func TestEnvelopeInfo(t *testing.T) {
	raw := codecEnvelope(codecV2Headers, "not even json", codecProps(func(p map[string]any) {
		p["priority"] = 7
		p["delivery_info"] = map[string]any{"exchange": "ex", "routing_key": "q"}
	}))
	tag, pri, ex, rk, err := envelopeInfo(raw)
	if err != nil || tag != "tag-1" || pri != 7 || ex != "ex" || rk != "q" {
		t.Errorf("EnvelopeInfo = %q %d %q %q %v", tag, pri, ex, rk, err)
	}
	_, _, _, _, err = envelopeInfo([]byte(`{"properties":{}}`))
	var de *DecodeError
	if !errors.As(err, &de) || de.Reason != "no-delivery-tag" {
		t.Errorf("EnvelopeInfo without tag: %v", err)
	}
}

func TestMarkRedelivered(t *testing.T) {
	raw := codecEnvelope(`{"task":"t","id":"i","x-big":1180591620717411303424,"x-float":1.0,"stamps":{"d":{"__type__":"datetime","__value__":"2024-01-01T00:00:00"}}}`,
		`[[1180591620717411303424, 2.50], {}]`, codecProps(func(p map[string]any) { p["priority"] = 3 }))
	out, err := markRedelivered(raw)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Redelivered || m.Headers["redelivered"] != true || m.Priority != 3 || m.DeliveryTag != "tag-1" {
		t.Errorf("not redelivered: %s", codecCanon(t, codecView(m)))
	}
	for _, want := range []string{`"x-big":1180591620717411303424`, `"x-float":1.0`, `"redelivered":true`,
		`{"__type__":"datetime","__value__":"2024-01-01T00:00:00"}`, `"delivery_info":{"exchange":"","redelivered":true,"routing_key":"celery"}`} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	var a, b struct {
		Body string `json:"body"`
	}
	json.Unmarshal(raw, &a)
	json.Unmarshal(out, &b)
	if a.Body != b.Body || a.Body == "" {
		t.Error("body changed")
	}
	// Headers null (kombu never writes that, but a foreign producer may).
	out, err = markRedelivered([]byte(`{"body":"","headers":null,"properties":{"delivery_tag":"t"}}`))
	if err != nil || !bytes.Contains(out, []byte(`"headers":{"redelivered":true}`)) {
		t.Errorf("null headers: %s %v", out, err)
	}
	if _, err := markRedelivered([]byte(`[]`)); err == nil {
		t.Error("MarkRedelivered of a non-object succeeded")
	}
}

func TestCodecArgsRepr(t *testing.T) {
	long := strings.Repeat("word ", 300)
	for _, tc := range []struct {
		args   []any
		kwargs map[string]any
		want   string
	}{
		{[]any{json.Number("2"), json.Number("2")}, nil, "(2, 2)"},
		{[]any{}, nil, "()"},
		{[]any{"it's"}, nil, `('it\'s',)`},
		{[]any{true, nil, 2.0, 1e20, 0.5}, nil, "(True, None, 2.0, 1e+20, 0.5)"},
		{[]any{[]any{[]any{[]any{1}}}}, nil, "([[[...]]],)"},
		{nil, map[string]any{"b": "x", "a": []any{}}, "{'a': [], 'b': 'x'}"},
	} {
		got := pythonArgsRepr(tc.args)
		if tc.kwargs != nil {
			got = pythonKwargsRepr(tc.kwargs)
		}
		if got != tc.want {
			t.Errorf("repr = %s, want %s", got, tc.want)
		}
	}
	// Long values are cut near 1024 characters, as saferepr(maxlen=1024).
	r := pythonArgsRepr([]any{long, long})
	if utf8.RuneCountInString(r) > 1100 || !strings.HasSuffix(r, "...', ...)") || !strings.HasPrefix(r, "('word word") {
		t.Errorf("long repr (%d chars) = %.60s...%s", len(r), r, r[len(r)-20:])
	}
}

// codecPythonDecodeScript decodes Go envelopes with kombu's own Redis channel
// Message and builds Celery's worker Request from each, printing what the
// worker sees.
const codecPythonDecodeScript = `
import json, sys
from celery.worker.request import Request
from wireapp import app

envs = json.load(open(sys.argv[1]))
out = []
with app.connection_for_write() as conn:
    ch = conn.default_channel
    for raw in envs:
        msg = ch.message_to_python(json.loads(raw))
        args, kwargs, embed = msg.decode()
        req = Request(msg, app=app, task=app.tasks[msg.headers["task"]])
        out.append({
            "id": req.id, "name": req.name, "root_id": req.root_id, "parent_id": req.parent_id,
            "time_limits": list(req.time_limits),
            "eta": req.eta.isoformat() if req.eta else None,
            "expires": req.expires.isoformat() if req.expires else None,
            "args": list(args), "kwargs": kwargs, "embed": embed,
            "argsrepr": req.argsrepr, "kwargsrepr": req.kwargsrepr,
            "delivery_tag": msg.delivery_tag, "priority": msg.properties["priority"],
            "routing_key": req.delivery_info["routing_key"], "exchange": req.delivery_info["exchange"],
            "correlation_id": req.correlation_id, "reply_to": req.reply_to,
            "ignore_result": req._request_dict.get("ignore_result"),
            "x_custom": msg.headers.get("x-custom"),
            "type_big": type(args[0]).__name__ if args else None,
        })
print(json.dumps(out))
`

// TestPythonDecodesGoEnvelopes: kombu and Celery's worker Request read what
// Encode writes, field for field.
func TestPythonDecodesGoEnvelopes(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	eta := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	exp := eta.Add(time.Hour)
	msgs := []*Message{
		{Task: "wire.add", Args: []any{2, 2}},
		{Task: "wire.echo", Args: []any{json.Number("1180591620717411303424"), "héllo ☃ <&> \"q\"", 1.5},
			Kwargs: map[string]any{"nested": map[string]any{"l": []any{1, nil, true}, "é": "ü"}},
			ETA:    &eta, Expires: &exp, TimeLimit: TimeLimit{Hard: 30 * time.Second, Soft: 2500 * time.Millisecond},
			ParentID: "p-1", RootID: "r-1", IgnoreResult: true, Priority: 6, RoutingKey: "other", ReplyTo: "rt",
			Headers: map[string]any{"x-custom": map[string]any{"k": []any{1, 2}}},
			Embed:   Embed{Chain: []Signature{{Task: "wire.add", Args: []any{8}, Options: map[string]any{"task_id": "t3"}}}}},
	}
	var envs []string
	for _, m := range msgs {
		raw, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, string(raw))
	}
	file := filepath.Join(t.TempDir(), "envs.json")
	b, _ := json.Marshal(envs)
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := testenv.RunPython(t, ctx, r.URL(), codecPythonDecodeScript, file)
	var got []map[string]any
	if err := kombujson.DecodeNumbers([]byte(strings.TrimSpace(out)), &got); err != nil || len(got) != len(msgs) {
		t.Fatalf("python output %q: %v", out, err)
	}
	for i, m := range msgs {
		g := got[i]
		tl := func(d time.Duration) any {
			if d == 0 {
				return nil
			}
			return d.Seconds()
		}
		tp := func(t *time.Time) any {
			if t == nil {
				return nil
			}
			return pyfmt.ISOFormat(t.UTC())
		}
		nz := func(s string) any {
			if s == "" {
				return nil
			}
			return s
		}
		want := map[string]any{
			"id": m.ID, "name": m.Task, "root_id": m.RootID, "parent_id": nz(m.ParentID),
			"time_limits": []any{tl(m.TimeLimit.Hard), tl(m.TimeLimit.Soft)}, "eta": tp(m.ETA), "expires": tp(m.Expires),
			"args": m.Args, "kwargs": codecOrEmpty(m.Kwargs), "argsrepr": m.ArgsRepr, "kwargsrepr": m.KwargsRepr,
			"delivery_tag": m.DeliveryTag, "priority": m.Priority, "routing_key": m.RoutingKey, "exchange": "",
			"correlation_id": m.ID, "reply_to": m.ReplyTo, "ignore_result": m.IgnoreResult, "x_custom": m.Headers["x-custom"],
		}
		for k, w := range want {
			// Python prints 30 for a whole float limit as 30; compare numerically-stable JSON.
			if gs, ws := codecCanon(t, g[k]), codecCanon(t, w); gs != ws {
				t.Errorf("message %d: Python sees %s = %s, Go sent %s", i, k, gs, ws)
			}
		}
		if i == 1 {
			if g["type_big"] != "int" {
				t.Errorf("2**70 arrived as Python %v, want int", g["type_big"])
			}
			chain, _ := g["embed"].(map[string]any)["chain"].([]any)
			if len(chain) != 1 || chain[0].(map[string]any)["options"].(map[string]any)["task_id"] != "t3" {
				t.Errorf("embed.chain as Python sees it: %v", g["embed"])
			}
		}
	}
}

func codecOrEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// codecWaitMeta polls celery-task-meta-<id> until the task is ready.
func codecWaitMeta(t *testing.T, r *testenv.Redis, id string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		raw, err := redis.Bytes(r.Do("GET", "celery-task-meta-"+id), nil)
		if err == nil {
			var meta map[string]any
			if err := kombujson.DecodeNumbers(raw, &meta); err != nil {
				t.Fatalf("result of %s is not JSON: %s", id, raw)
			}
			switch meta["status"] {
			case "SUCCESS", "FAILURE", "REVOKED":
				return meta
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("task %s: no ready result within %v", id, timeout)
	return nil
}

// TestPythonWorkerRunsGoMessages: a real Celery 5.2 worker executes
// Go-encoded messages, including callbacks, chains, eta, expires, hard time
// limits and ignore_result.
func TestPythonWorkerRunsGoMessages(t *testing.T) {
	testenv.RequireCelery(t)
	r := testenv.StartRedis(t)
	testenv.StartCeleryWorker(t, r.URL(), "wireapp", "-Q", "celery", "-c", "1")

	big := strings.Repeat("x", 1<<20) + "é☃"
	past := time.Now().Add(-time.Minute)
	soon := time.Now().Add(time.Second)
	nested := map[string]any{"é": []any{json.Number("1180591620717411303424"), map[string]any{"k": nil}}, "t": true}
	type job struct {
		m     *Message
		check func(meta map[string]any) bool
	}
	jobs := []job{
		{&Message{Task: "wire.add", Args: []any{2, 2}}, func(meta map[string]any) bool {
			return meta["status"] == "SUCCESS" && meta["result"] == json.Number("4")
		}},
		{&Message{Task: "wire.echo", Args: []any{"héllo ☃", json.Number("1180591620717411303424")}, Kwargs: nested}, func(meta map[string]any) bool {
			return meta["status"] == "SUCCESS" && codecCanon(t, meta["result"]) == codecCanon(t, map[string]any{
				"args": []any{"héllo ☃", json.Number("1180591620717411303424")}, "kwargs": nested})
		}},
		{&Message{Task: "wire.len", Args: []any{big}}, func(meta map[string]any) bool {
			return meta["status"] == "SUCCESS" && meta["result"] == json.Number(fmt.Sprint(utf8.RuneCountInString(big)))
		}},
		{&Message{Task: "wire.add", Args: []any{1, 1}, IgnoreResult: true}, nil},
		{&Message{Task: "wire.add", Args: []any{1, 2}, Embed: Embed{Callbacks: []Signature{{Task: "wire.add", Args: []any{10}, Options: map[string]any{"task_id": NewID()}}}}}, nil},
		{&Message{Task: "wire.add", Args: []any{2, 2}, Embed: Embed{Chain: []Signature{
			{Task: "wire.add", Args: []any{8}, Options: map[string]any{"task_id": NewID()}},
			{Task: "wire.add", Args: []any{4}, Options: map[string]any{"task_id": NewID()}}}}}, nil},
		{&Message{Task: "wire.add", Args: []any{3, 3}, ETA: &soon}, func(meta map[string]any) bool {
			return meta["status"] == "SUCCESS" && meta["result"] == json.Number("6")
		}},
		{&Message{Task: "wire.add", Args: []any{5, 5}, Expires: &past}, func(meta map[string]any) bool {
			return meta["status"] == "REVOKED"
		}},
		{&Message{Task: "wire.sleep", Args: []any{30}, TimeLimit: TimeLimit{Hard: time.Second}}, func(meta map[string]any) bool {
			res, _ := meta["result"].(map[string]any)
			return meta["status"] == "FAILURE" && res["exc_type"] == "TimeLimitExceeded"
		}},
	}
	conn := r.Conn()
	defer conn.Close()
	for _, j := range jobs {
		raw, err := Encode(j.m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Do("LPUSH", "celery", raw); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range jobs {
		if j.check == nil || j.m.IgnoreResult {
			continue
		}
		meta := codecWaitMeta(t, r, j.m.ID, 90*time.Second)
		if !j.check(meta) {
			t.Errorf("%s%s: result %.300s", j.m.Task, j.m.ArgsRepr, codecCanon(t, meta))
		}
	}
	// Callback: add(1, 2) then add(3, 10) under the signature's task id.
	cb := jobs[4].m.Embed.Callbacks[0].Options["task_id"].(string)
	if meta := codecWaitMeta(t, r, cb, 60*time.Second); meta["result"] != json.Number("13") {
		t.Errorf("callback result %v, want 13", meta["result"])
	}
	// Chain (stored reversed): add(2, 2) -> add(4, 4) -> add(8, 8).
	ch := jobs[5].m.Embed.Chain
	if meta := codecWaitMeta(t, r, ch[1].Options["task_id"].(string), 60*time.Second); meta["result"] != json.Number("8") {
		t.Errorf("chain step 2 result %v, want 8", meta["result"])
	}
	if meta := codecWaitMeta(t, r, ch[0].Options["task_id"].(string), 60*time.Second); meta["result"] != json.Number("16") {
		t.Errorf("chain step 3 result %v, want 16", meta["result"])
	}
	// ignore_result: it ran (the fixture counts runs) but stored nothing;
	// later tasks finished, so its result would exist by now.
	ign := jobs[3].m.ID
	if n, _ := redis.Int(r.Do("GET", "wire:runs:"+ign), nil); n != 1 {
		t.Errorf("ignore_result task ran %d times, want 1", n)
	}
	// (Celery 5.2 still stores STARTED under task_track_started: it checks
	// the task class, not the message, for that one.)
	if raw, err := redis.Bytes(r.Do("GET", "celery-task-meta-"+ign), nil); err == nil && bytes.Contains(raw, []byte("SUCCESS")) {
		t.Errorf("ignore_result task stored its result: %s", raw)
	}
}

// FuzzDecode: no input makes Decode, EnvelopeInfo or MarkRedelivered panic,
// whatever decodes re-encodes into something that decodes again, and the
// fast path decodes nothing differently from the general one.
func FuzzDecode(f *testing.F) {
	for _, fx := range CeleryFixtures(f) {
		f.Add(fx.Raw)
	}
	f.Add(codecEnvelope(`{"task":"t","id":"i","timelimit":[1.5,null],"eta":"2030-01-01T00:00:00"}`, `{"args":[1],"kwargs":{},"callbacks":[{"task":"x"}]}`))
	f.Add(codecEnvelope(`{}`, `{"task":"t","id":"i","args":[],"kwargs":{},"taskset":"g"}`))
	f.Add(codecEnvelope(codecV2Headers, `[[{"__type__":"bytes","__value__":"x"}],{},{"chord":{"task":"c"}}]`))
	f.Add([]byte(`{"properties":{"delivery_tag":"t","priority":"x"},"headers":{"task":1}}`))
	if raw, err := Encode(&Message{Task: "t.fast", RoutingKey: "q", Retries: 2, TimeLimit: TimeLimit{Hard: time.Second}}); err == nil {
		f.Add(raw) // the fast path's shape
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkFastAgrees(t, "fuzz input", raw)
		_, _, _, _, _ = envelopeInfo(raw)
		m, err := Decode(raw)
		var de *DecodeError
		if err != nil && !errors.As(err, &de) {
			t.Fatalf("Decode error is %T, not *DecodeError: %v", err, err)
		}
		if red, err := markRedelivered(raw); err == nil && m != nil {
			m2, err := Decode(red)
			if err != nil || !m2.Redelivered || m2.ID != m.ID {
				t.Fatalf("MarkRedelivered broke a decodable message: %v\n%s\n%s", err, raw, red)
			}
		}
		if m == nil {
			return
		}
		enc, err := Encode(m)
		if err != nil {
			return // e.g. no task name or a negative time limit: refused, fine
		}
		m2, err := Decode(enc)
		if err != nil || m2.ID != m.ID || m2.Task != m.Task {
			t.Fatalf("re-encoded message does not decode: %v\n%s\n%s", err, raw, enc)
		}
	})
}

func codecBenchMessage(arg any) *Message {
	return &Message{
		Task: "morag.tasks.ingest", Args: []any{arg, json.Number("42")},
		Kwargs: map[string]any{"options": map[string]any{"language": "de", "chunk": json.Number("512"), "force": true}},
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, bc := range []struct {
		name string
		arg  any
	}{{"small", "document.pdf"}, {"1MiB", strings.Repeat("x", 1<<20)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m := codecBenchMessage(bc.arg)
				raw, err := Encode(m)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(raw)))
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name string
		arg  any
	}{{"small", "document.pdf"}, {"1MiB", strings.Repeat("x", 1<<20)}} {
		raw, err := Encode(codecBenchMessage(bc.arg))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := Decode(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
