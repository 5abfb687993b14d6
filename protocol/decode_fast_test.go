package protocol

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// checkFastAgrees fails when decodeFast answers for raw with anything but
// what decodeGeneral decodes; it reports whether it answered.
func checkFastAgrees(t *testing.T, name string, raw []byte) bool {
	t.Helper()
	fm, ok := decodeFast(raw)
	if !ok {
		return false
	}
	gm, err := decodeGeneral(raw)
	if err != nil {
		t.Errorf("%s: the fast path decoded what the general one refuses (%v)\n%s", name, err, raw)
		return true
	}
	if !reflect.DeepEqual(fm, gm) {
		t.Errorf("%s: the two decoders disagree\nfast:    %+v\ngeneral: %+v\n%s", name, fm, gm, raw)
	}
	return true
}

// The fast path gives exactly the general decoder's Message, and takes
// the envelopes Celery 5.2 and this package write for ordinary tasks (it
// would save nothing otherwise).
func TestDecodeFastAgreesWithGeneral(t *testing.T) {
	fast := map[string]bool{}
	for _, fx := range CeleryFixtures(t) {
		fast[filepath.Base(fx.Path)] = checkFastAgrees(t, fx.Path, fx.Raw)
	}
	// Written by Celery 5.2: ordinary tasks take the fast path; compressed,
	// protocol 1, custom headers and escaped (non-ASCII) text do not.
	for _, f := range []string{"simple.json", "eta_expires_limits.json", "priority5.json", "group_0.json", "link.json", "chain.json"} {
		if !fast[f] {
			t.Errorf("%s (written by Celery) did not take the fast path", f)
		}
	}
	for _, f := range []string{"compression_zlib.json", "protocol1.json", "custom_headers.json", "unicode_nested.json"} {
		if fast[f] {
			t.Errorf("%s took the fast path; it needs the general one", f)
		}
	}

	eta := time.Date(2030, 1, 2, 3, 4, 5, 600000, time.UTC)
	gi := 3
	for name, m := range map[string]*Message{
		"plain":   {Task: "t.noop", RoutingKey: "q"},
		"full":    {Task: "t.full", ID: "i-1", RoutingKey: "q", Args: []any{"a", 1.5, nil}, Kwargs: map[string]any{"k": []any{true}}, ETA: &eta, Expires: &eta, Group: "g", GroupIndex: &gi, Retries: 2, TimeLimit: TimeLimit{Hard: 9 * time.Second, Soft: 3 * time.Second}, IgnoreResult: true, Priority: 7, ParentID: "p", RootID: "r", Shadow: "s", ReplyTo: "rt", CorrelationID: "c"},
		"headers": {Task: "t.h", RoutingKey: "q", Headers: map[string]any{"x-custom": "v"}},
		"chord":   {Task: "t.c", RoutingKey: "q", Embed: Embed{Chord: &Signature{Task: "t.body"}, Callbacks: []Signature{{Task: "t.cb"}}}},
		"unicode": {Task: "t.ü", RoutingKey: "q", Origin: "hôte"},
	} {
		raw, err := Encode(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		took := checkFastAgrees(t, name, raw)
		if want := name == "plain" || name == "full" || name == "chord"; took != want {
			t.Errorf("%s: fast path taken = %v; want %v", name, took, want)
		}
		red, err := markRedelivered(raw)
		if err != nil {
			t.Fatal(err)
		}
		checkFastAgrees(t, name+" redelivered", red)
	}

	// Edits of a canonical envelope the fast path must refuse or decode
	// exactly as the general one does.
	base, err := Encode(&Message{Task: "t.e", ID: "id-e", RoutingKey: "q", Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string][2]string{
		"duplicate key":       {`"retries":1`, `"retries":1,"retries":2`},
		"float retries":       {`"retries":1`, `"retries":1.0`},
		"leading zero":        {`"retries":1`, `"retries":01`},
		"string retries":      {`"retries":1`, `"retries":"1"`},
		"escaped task":        {`"task":"t.e"`, `"task":"t.\u0065"`},
		"null task":           {`"task":"t.e"`, `"task":null`},
		"no id":               {`"id":"id-e"`, `"id":null`},
		"bad eta":             {`"eta":null`, `"eta":"soon"`},
		"object header":       {`"retries":1`, `"retries":{"__type__":"x"}`},
		"timelimit of one":    {`"timelimit":[null,null]`, `"timelimit":[5]`},
		"timelimit string":    {`"timelimit":[null,null]`, `"timelimit":["5",null]`},
		"utf-8 body":          {`"body_encoding":"base64"`, `"body_encoding":"utf-8"`},
		"negative priority":   {`"priority":0`, `"priority":-4`},
		"huge priority":       {`"priority":0`, `"priority":12`},
		"text content":        {`"application/json"`, `"text/plain"`},
		"trailing data":       {`}}`, `}} x`},
		"delivery_info extra": {`"routing_key":"q"`, `"routing_key":"q","priority":1`},
		"no task header":      {`"task":"t.e",`, ``},
		"no body_encoding":    {`"body_encoding":"base64",`, ``},
	} {
		raw := []byte(strings.Replace(string(base), edit[0], edit[1], 1))
		if string(raw) == string(base) {
			t.Fatalf("%s: %q not in the envelope %s", name, edit[0], base)
		}
		checkFastAgrees(t, name, raw)
	}
}
