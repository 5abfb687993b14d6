package protocol

import (
	"strings"
	"testing"
)

func TestParseRedisURLForms(t *testing.T) {
	cases := []struct {
		url                  string
		kind, addr, user, pw string
		db                   int
		tls, skipVerify      bool
		sentinels            []string
		master               string
	}{
		{url: "redis://localhost:6379/0", kind: "tcp", addr: "localhost:6379"},
		{url: "redis://h", kind: "tcp", addr: "h:6379"},
		{url: "redis://alice:s3cret@10.0.0.1:6380/2", kind: "tcp", addr: "10.0.0.1:6380", user: "alice", pw: "s3cret", db: 2},
		{url: "redis://:pw@h/1", kind: "tcp", addr: "h:6379", pw: "pw", db: 1},
		{url: "redis://justpw@h/1", kind: "tcp", addr: "h:6379", pw: "justpw", db: 1},
		{url: "rediss://h:6390/0?ssl_cert_reqs=required", kind: "tcp", addr: "h:6390", tls: true},
		{url: "rediss://h/0?ssl_cert_reqs=CERT_REQUIRED", kind: "tcp", addr: "h:6379", tls: true},
		{url: "rediss://h/0?ssl_cert_reqs=CERT_OPTIONAL", kind: "tcp", addr: "h:6379", tls: true},
		{url: "rediss://h/0?ssl_cert_reqs=none", kind: "tcp", addr: "h:6379", tls: true, skipVerify: true},
		{url: "rediss://h/0?ssl_cert_reqs=CERT_NONE", kind: "tcp", addr: "h:6379", tls: true, skipVerify: true},
		{url: "rediss://h/3", kind: "tcp", addr: "h:6379", tls: true, db: 3},
		{url: "unix:///run/redis.sock?db=4", kind: "unix", addr: "/run/redis.sock", db: 4},
		{url: "sentinel://s1:26379;sentinel://s2:26380;sentinel://s3/1?master_name=mymaster", kind: "sentinel",
			sentinels: []string{"s1:26379", "s2:26380", "s3:26379"}, master: "mymaster", db: 1},
		{url: "sentinel://:pw@s1:26379;sentinel://:pw@s2:26379?master_name=m", kind: "sentinel",
			sentinels: []string{"s1:26379", "s2:26379"}, master: "m", pw: "pw"},
	}
	for _, c := range cases {
		got, err := parseRedisURL(c.url)
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		if got.kind != c.kind || got.addr != c.addr && c.kind != "sentinel" || got.username != c.user || got.password != c.pw || got.db != c.db {
			t.Errorf("%s: got kind=%s addr=%s user=%q pw=%q db=%d", c.url, got.kind, got.addr, got.username, got.password, got.db)
		}
		if (got.tls != nil) != c.tls || got.tls != nil && got.tls.InsecureSkipVerify != c.skipVerify {
			t.Errorf("%s: tls=%v, want tls=%v skipVerify=%v", c.url, got.tls != nil, c.tls, c.skipVerify)
		}
		if c.kind == "sentinel" && (strings.Join(got.sentinels, ",") != strings.Join(c.sentinels, ",") || got.masterName != c.master) {
			t.Errorf("%s: sentinels %v master %q", c.url, got.sentinels, got.masterName)
		}
	}
}

func TestParseRedisURLErrorsSayWhatToDo(t *testing.T) {
	cases := map[string]string{
		"http://h/0":                                         "scheme must be",
		"redis://h/x":                                        "not a number",
		"redis://h/0?ssl_cert_reqs=required":                 "rediss://",
		"rediss://h/0?ssl_cert_reqs=maybe":                   "use required, optional or none",
		"rediss://h/0?ssl_ca_certs=/nonexistent.pem":         "ssl_ca_certs",
		"rediss://h/0?ssl_keyfile=/k.pem":                    "give both",
		"sentinel://s1:26379;sentinel://s2:26379":            "master_name",
		"sentinel://s1:26379;redis://s2:26379?master_name=m": "sentinel:// URL",
		"unix://": "socket path",
	}
	for u, want := range cases {
		_, err := parseRedisURL(u)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to mention %q", u, err, want)
		}
	}
}

func TestWithMasterNameAndRedact(t *testing.T) {
	if got := WithMasterName("sentinel://a:1;sentinel://b:2/0", "mm"); got != "sentinel://a:1;sentinel://b:2/0?master_name=mm" {
		t.Errorf("WithMasterName: %s", got)
	}
	if got := WithMasterName("sentinel://a:1?master_name=x", "mm"); got != "sentinel://a:1?master_name=x" {
		t.Errorf("WithMasterName kept the URL's own name? %s", got)
	}
	if got := WithMasterName("redis://a/0", "mm"); got != "redis://a/0" {
		t.Errorf("WithMasterName changed a redis:// URL: %s", got)
	}
	red := RedactURL("sentinel://:pw1@a:1;sentinel://u:pw2@b:2/0?master_name=m&sentinel_password=pw3")
	for _, secret := range []string{"pw1", "pw2", "pw3"} {
		if strings.Contains(red, secret) {
			t.Errorf("RedactURL left %s in %s", secret, red)
		}
	}
	if red := RedactURL("redis://lonepw@h/0"); strings.Contains(red, "lonepw") {
		t.Errorf("RedactURL left a lone password: %s", red)
	}
}
