package runner

import (
	"strings"
	"testing"
	"time"
)

func TestExpandNodename(t *testing.T) {
	cases := []struct{ in, host, want string }{
		{"", "box.example.com", "celery@box.example.com"},
		{"gpu@%h", "box.example.com", "gpu@box.example.com"},
		{"w1@%n", "box.example.com", "w1@box"},
		{"w1@%n.%d", "box.example.com", "w1@box.example.com"},
		{"100%%@%h", "box", "100%@box"},
		{"myhost", "box", "celery@myhost"},
		{"a@b", "box", "a@b"},
		{"odd%", "box", "celery@odd%"},
	}
	for _, c := range cases {
		if got := ExpandNodename(c.in, c.host); got != c.want {
			t.Errorf("ExpandNodename(%q, %q) = %q, want %q", c.in, c.host, got, c.want)
		}
	}
	// A worker built on the runner names itself (Config.DefaultNodeName).
	for in, want := range map[string]string{"": "gpu@box", "myhost": "gpu@myhost", "w1@%h": "w1@box"} {
		if got := expandNodename(in, "gpu", "box"); got != want {
			t.Errorf("expandNodename(%q, gpu, box) = %q, want %q", in, got, want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Queues) != 1 || cfg.Queues[0] != "celery" {
		t.Errorf("Queues = %v, want [celery]", cfg.Queues)
	}
	if cfg.Concurrency != 1 || cfg.Prefetch != 1 {
		t.Errorf("Concurrency, Prefetch = %d, %d, want 1, 1", cfg.Concurrency, cfg.Prefetch)
	}
	if cfg.VisibilityTimeout != time.Hour || cfg.ShutdownGrace != 30*time.Second || cfg.ResultExpires != 24*time.Hour {
		t.Errorf("durations = %s %s %s", cfg.VisibilityTimeout, cfg.ShutdownGrace, cfg.ResultExpires)
	}
	if cfg.SWIdent != "go-celery" || cfg.SWVersion == "" || cfg.DefaultNodeName != "celery" || !strings.HasPrefix(cfg.Hostname, "celery@") {
		t.Errorf("identity = %q %q %q %q, want go-celery, a version, celery, celery@<host>", cfg.SWIdent, cfg.SWVersion, cfg.DefaultNodeName, cfg.Hostname)
	}
	if cfg.RedisURL != "redis://localhost:6379/0" || cfg.Route("x") != "celery" {
		t.Errorf("RedisURL %q Route %q", cfg.RedisURL, cfg.Route("x"))
	}

	cfg, err = Config{Queues: []string{" a", "b", "a", ""}, Concurrency: 4, Prefetch: -1}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Queues) != 2 || cfg.Queues[0] != "a" || cfg.Queues[1] != "b" {
		t.Errorf("Queues = %q, want [a b]", cfg.Queues)
	}
	if cfg.Prefetch != 0 {
		t.Errorf("Prefetch -1 should mean none (0), got %d", cfg.Prefetch)
	}

	for _, bad := range []Config{{Concurrency: -1}, {VisibilityTimeout: 10 * time.Millisecond}, {ShutdownGrace: -time.Second}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v: want an error", bad)
		}
	}
}
