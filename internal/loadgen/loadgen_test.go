package loadgen

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunCountsRequestsStatusesAndErrors(t *testing.T) {
	var hits atomic.Int64
	var badBodies atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || string(b) != `{"x":1}` || r.Header.Get("X-Test") != "yes" {
			badBodies.Add(1)
		}
		if n%3 == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"ok":true}`)
	}))
	defer srv.Close()

	res, err := Run(context.Background(), Config{
		URL:      srv.URL + "/x",
		Header:   http.Header{"X-Test": {"yes"}},
		Body:     []byte(`{"x":1}`),
		Clients:  4,
		Requests: 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := hits.Load(); got != 30 {
		t.Fatalf("server saw %d requests, want exactly 30", got)
	}
	if badBodies.Load() != 0 {
		t.Fatalf("%d requests arrived without the configured method, body or header", badBodies.Load())
	}
	if res.Requests != 30 || res.Errors != 10 {
		t.Fatalf("Requests=%d Errors=%d, want 30 and 10: %s", res.Requests, res.Errors, res)
	}
	if res.Status[202] != 20 || res.Status[500] != 10 {
		t.Fatalf("status counts %v, want 20×202 and 10×500", res.Status)
	}
	if !strings.Contains(res.FirstError, "500") {
		t.Fatalf("FirstError %q does not mention the 500", res.FirstError)
	}
	if res.Rate <= 0 || res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 {
		t.Fatalf("implausible measurements: %s", res)
	}
}

func TestRunForDurationStops(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	start := time.Now()
	res, err := Run(context.Background(), Config{URL: srv.URL, Clients: 2, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("a 300ms run took %s", took)
	}
	if res.Requests == 0 || res.Errors != 0 {
		t.Fatalf("want some requests and no errors: %s", res)
	}
}

func TestRunTransportErrorIsCounted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	url := srv.URL
	srv.Close() // nothing listens there any more
	res, err := Run(context.Background(), Config{URL: url, Requests: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 3 || res.Errors != 3 || res.FirstError == "" {
		t.Fatalf("want 3 failed requests with a reason: %s", res)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"not loopback ip":   {URL: "http://192.0.2.1/", Requests: 1},
		"not loopback name": {URL: "http://example.com/", Requests: 1},
		"bad scheme":        {URL: "ftp://127.0.0.1/", Requests: 1},
		"no amount":         {URL: "http://127.0.0.1/"},
		"too many clients":  {URL: "http://127.0.0.1/", Requests: 1, Clients: MaxClients + 1},
		"too long":          {URL: "http://127.0.0.1/", Duration: MaxDuration + time.Second},
		"negative requests": {URL: "http://127.0.0.1/", Requests: -1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: Run accepted %+v", name, cfg)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := newHistogram()
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, 1000 * time.Millisecond}} {
		got := h.quantile(c.q)
		if diff := float64(got-c.want) / float64(c.want); diff > 0.02 || diff < -0.02 {
			t.Errorf("quantile(%v) = %s, want %s within 2%%", c.q, got, c.want)
		}
	}
	small := newHistogram()
	small.record(42 * time.Microsecond)
	if got := small.quantile(0.5); got != 42*time.Microsecond {
		t.Errorf("small values must be exact: got %s", got)
	}
	if got := newHistogram().quantile(0.99); got != 0 {
		t.Errorf("empty histogram quantile = %s, want 0", got)
	}
}

// The client keeps its connection across requests, redials when the
// server closes it (Connection: close, a body too large to skip), and
// reads chunked and fixed-length bodies whole, so every request is
// answered and counted.
func TestRunConnectionReuseAndBodies(t *testing.T) {
	var hits, conns atomic.Int64
	big := strings.Repeat("x", maxBodyRead+10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch hits.Add(1) % 10 {
		case 3:
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		case 5: // chunked: flushed in pieces without a length
			for i := 0; i < 3; i++ {
				io.WriteString(w, strings.Repeat("c", 5000))
				w.(http.Flusher).Flush()
			}
		case 7:
			io.WriteString(w, big)
		default:
			io.WriteString(w, `{"ok":true}`)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	res, err := Run(context.Background(), Config{URL: srv.URL, Clients: 2, Requests: 100})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 100 || res.Errors != 0 || res.Status[200] != 100 {
		t.Fatalf("want 100 answered requests and no errors: %s", res)
	}
	if hits.Load() != 100 {
		t.Fatalf("server saw %d requests, want 100", hits.Load())
	}
	// 2 first dials, plus one after each of the 10 closes and 10 big
	// bodies; a client that dialled per request would make ~100.
	if n := conns.Load(); n < 12 || n > 22 {
		t.Fatalf("%d connections for 100 requests, want 12-22: keep-alive and redial after close", n)
	}
}

// A server that does not answer fails the request after Timeout, and a
// duration-bound run ends on time without counting what it cut off.
func TestRunTimeoutsAndCutOff(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	res, err := Run(context.Background(), Config{URL: srv.URL, Requests: 2, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 2 || res.Errors != 2 || !strings.Contains(res.FirstError, "timeout") {
		t.Fatalf("want 2 timed-out requests: %s", res)
	}

	start := time.Now()
	res, err = Run(context.Background(), Config{URL: srv.URL, Clients: 3, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a 200ms run against a server that never answers took %s", took)
	}
	if res.Requests != 0 || res.Errors != 0 {
		t.Fatalf("requests cut off by the end of the run were counted: %s", res)
	}
}
