package httpapi

import (
	"strings"
	"testing"

	"morag-gpu/internal/testenv"
)

// scanCalls is how many SCAN commands Redis has served (INFO commandstats).
func scanCalls(t *testing.T, r *testenv.Redis) string {
	info, _ := r.Do("INFO", "commandstats").([]byte)
	for _, line := range strings.Split(string(info), "\r\n") {
		if strings.HasPrefix(line, "cmdstat_scan:") {
			calls, _, _ := strings.Cut(strings.TrimPrefix(line, "cmdstat_scan:calls="), ",")
			return calls
		}
	}
	return "0"
}

// TestScrapesDoNotWalkTheKeyspace: /metrics and the status endpoints read
// known queues only, so many keys cost nothing; a queue the gateway routed
// to is still reported with no worker consuming it.
func TestScrapesDoNotWalkTheKeyspace(t *testing.T) {
	r := testenv.StartRedis(t)
	e := startGateway(t, r, nil)
	for i := 0; i < 50; i++ {
		r.Do("SADD", "_kombu.binding.q"+strings.Repeat("x", i), "q\x06\x16\x06\x16q")
	}
	e.postJSON("/process/url?async=true", map[string]any{"url": "https://x"})
	before := scanCalls(t, r)
	for _, p := range []string{"/metrics", "/api/v1/status/stats/queues", "/api/v1/status/workers"} {
		if got := e.do("GET", p, nil); got.Code != 200 {
			t.Fatalf("%s: %d %s", p, got.Code, got.Body)
		}
	}
	if after := scanCalls(t, r); after != before {
		t.Errorf("scrapes issued SCAN: %s calls before, %s after", before, after)
	}
	m := string(e.do("GET", "/metrics", nil).Body)
	for _, want := range []string{`morag_queue_length{queue="celery"} 1`, `morag_live_workers{type="all"} 0`, "go_goroutines "} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
	st := e.do("GET", "/api/v1/status/stats/queues", nil).json(t)
	if st["queued"] != 1.0 || path(st, "queues", "celery") != 1.0 {
		t.Errorf("stats: %v", st)
	}
}
