// Package loadgen is a small HTTP load generator for benchmarks on one
// machine: a fixed number of concurrent clients send the same request for a
// fixed count or a fixed duration, and Run reports requests/s, latency
// percentiles and errors.
//
// It only talks to loopback addresses. It is a measuring tool for
// `make bench`, not something to point at other people's servers, and the
// limits below keep a typo in a benchmark from turning into a flood.
package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// Limits on a run.
const (
	MaxClients  = 1024
	MaxRequests = 10_000_000
	MaxDuration = 10 * time.Minute
	// maxBodyRead bounds how much of a response is read (and discarded)
	// so that the connection can be reused.
	maxBodyRead = 1 << 20
)

// Config describes one run.
type Config struct {
	// Method defaults to POST when Body is set, else GET.
	Method string
	// URL must name a loopback host (127.0.0.0/8, ::1 or localhost).
	URL    string
	Header http.Header
	// Body is sent with every request.
	Body []byte
	// Clients is the number of concurrent clients, each with one request in
	// flight at a time. Default 1.
	Clients int
	// Requests is the total number of requests. When 0 the run lasts
	// Duration instead.
	Requests int
	Duration time.Duration
	// Timeout bounds each request. Default 10s.
	Timeout time.Duration
	// OK says which status codes count as success. Default: 2xx.
	OK func(status int) bool
}

// Result is what a run measured. Latencies are of successful requests.
type Result struct {
	// Requests is every request that completed or failed.
	Requests int
	// Errors counts transport errors and responses OK rejected.
	Errors  int
	Elapsed time.Duration
	// Rate is successful requests per second of Elapsed.
	Rate          float64
	P50, P90, P99 time.Duration
	Max           time.Duration
	// Status counts responses by status code.
	Status map[int]int
	// FirstError describes the first failure, for the report.
	FirstError string
}

// String is a one-line summary.
func (r *Result) String() string {
	codes := make([]int, 0, len(r.Status))
	for c := range r.Status {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var sc []string
	for _, c := range codes {
		sc = append(sc, fmt.Sprintf("%d×%d", r.Status[c], c))
	}
	s := fmt.Sprintf("%d requests in %s: %.0f req/s, p50 %s, p90 %s, p99 %s, max %s, %d errors [%s]",
		r.Requests, r.Elapsed.Round(time.Millisecond), r.Rate, r.P50, r.P90, r.P99, r.Max, r.Errors, strings.Join(sc, " "))
	if r.FirstError != "" {
		s += "; first error: " + r.FirstError
	}
	return s
}

func (cfg Config) withDefaults(ctx context.Context) (Config, error) {
	if cfg.Clients == 0 {
		cfg.Clients = 1
	}
	if cfg.Clients < 0 || cfg.Clients > MaxClients {
		return cfg, fmt.Errorf("loadgen: Clients %d out of range; use 1..%d", cfg.Clients, MaxClients)
	}
	if cfg.Requests < 0 || cfg.Requests > MaxRequests {
		return cfg, fmt.Errorf("loadgen: Requests %d out of range; use 1..%d, or 0 with a Duration", cfg.Requests, MaxRequests)
	}
	if cfg.Requests == 0 && (cfg.Duration <= 0 || cfg.Duration > MaxDuration) {
		return cfg, fmt.Errorf("loadgen: give Requests, or a Duration in (0, %s]; got Requests 0, Duration %s", MaxDuration, cfg.Duration)
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
		if cfg.Body != nil {
			cfg.Method = http.MethodPost
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.OK == nil {
		cfg.OK = func(s int) bool { return s >= 200 && s < 300 }
	}
	if err := checkLoopback(ctx, cfg.URL); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// checkLoopback refuses any URL whose host is not a loopback address.
func checkLoopback(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("loadgen: bad URL %q: %w", raw, err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("loadgen: URL %q: scheme must be http (the client speaks plain HTTP/1.1 only)", raw)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("loadgen: URL %q has no host", raw)
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("loadgen: refusing %s: only loopback addresses may be load-tested", host)
		}
		return nil
	}
	if host != "localhost" {
		return fmt.Errorf("loadgen: refusing host %q: only loopback addresses (127.0.0.1, ::1, localhost) may be load-tested", host)
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return fmt.Errorf("loadgen: resolve %s: %w", host, err)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return fmt.Errorf("loadgen: refusing %s: it resolves to %s, which is not loopback", host, a.IP)
		}
	}
	return nil
}

// clientStats is one client's tally, merged after the run, so clients
// share no locks on the hot path.
type clientStats struct {
	hist     *histogram
	requests int
	errors   int
	status   map[int]int
	firstErr string
}

// Run performs the load run and returns its measurements. It stops early,
// with what it measured so far, when ctx is done.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults(ctx)
	if err != nil {
		return nil, err
	}
	request, addr, err := serialize(cfg)
	if err != nil {
		return nil, err
	}
	runCtx := ctx
	if cfg.Requests == 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}

	// tickets hands out request slots for count-bound runs.
	var tickets chan struct{}
	if cfg.Requests > 0 {
		tickets = make(chan struct{}, cfg.Requests)
		for i := 0; i < cfg.Requests; i++ {
			tickets <- struct{}{}
		}
		close(tickets)
	}

	stats := make([]*clientStats, cfg.Clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range stats {
		st := &clientStats{hist: newHistogram(), status: map[int]int{}}
		stats[i] = st
		wg.Add(1)
		c := &rawClient{addr: addr, request: request, timeout: cfg.Timeout}
		go func() {
			defer wg.Done()
			defer c.close()
			for runCtx.Err() == nil {
				if tickets != nil {
					if _, ok := <-tickets; !ok {
						return
					}
				}
				once(runCtx, c, cfg, st)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	res := &Result{Elapsed: elapsed, Status: map[int]int{}}
	all := newHistogram()
	for _, st := range stats {
		all.merge(st.hist)
		res.Requests += st.requests
		res.Errors += st.errors
		for c, n := range st.status {
			res.Status[c] += n
		}
		if res.FirstError == "" {
			res.FirstError = st.firstErr
		}
	}
	if elapsed > 0 {
		res.Rate = float64(res.Requests-res.Errors) / elapsed.Seconds()
	}
	res.P50, res.P90, res.P99, res.Max = all.quantile(0.50), all.quantile(0.90), all.quantile(0.99), all.max
	return res, nil
}

// once sends one request and records its outcome in st. A request cut off
// because a duration-bound run ended is not counted.
func once(ctx context.Context, c *rawClient, cfg Config, st *clientStats) {
	t0 := time.Now()
	status, err := c.do(ctx)
	d := time.Since(t0)
	if err != nil {
		if ctx.Err() != nil && cfg.Requests == 0 {
			return
		}
		st.fail(err.Error())
		return
	}
	st.status[status]++
	if !cfg.OK(status) {
		st.fail(fmt.Sprintf("unexpected status %d %s", status, http.StatusText(status)))
		return
	}
	st.requests++
	st.hist.record(d)
}

func (st *clientStats) fail(msg string) {
	st.requests++
	st.errors++
	if st.firstErr == "" {
		st.firstErr = msg
	}
}
