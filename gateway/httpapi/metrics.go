package httpapi

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"morag-gpu/auth"
)

// metrics are the gateway's counters, written in Prometheus text format by
// hand (no client library). Gauges are read at scrape time.
type metrics struct {
	mu       sync.Mutex
	requests map[[3]string]uint64 // method, route, code
	routing  map[[2]string]uint64 // queue kind, reason
	outcomes map[string]uint64
}

func newMetrics() *metrics {
	return &metrics{requests: map[[3]string]uint64{}, routing: map[[2]string]uint64{}, outcomes: map[string]uint64{}}
}

func (m *metrics) request(method, route string, code int) {
	// The method is the client's to choose: an unknown one would grow the
	// label set (and memory) without bound.
	switch method {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
	default:
		method = "OTHER"
	}
	m.mu.Lock()
	m.requests[[3]string{method, route, fmt.Sprint(code)}]++
	m.mu.Unlock()
}

func (m *metrics) routed(d auth.Decision) {
	kind := "default"
	if d.GPU {
		kind = "gpu"
	}
	reason := d.Reason
	if i := strings.Index(reason, ":"); i >= 0 {
		reason = reason[:i] // liveness-unknown: <error> would explode the label set
	}
	m.mu.Lock()
	m.routing[[2]string{kind, reason}]++
	m.mu.Unlock()
}

func (m *metrics) outcome(o string) {
	m.mu.Lock()
	m.outcomes[o]++
	m.mu.Unlock()
}

func label(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// write emits the counters plus the gauges given.
func (m *metrics) write(w io.Writer, queues map[string]int64, workers, gpuWorkers int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintln(w, "# HELP morag_gateway_requests_total HTTP requests by method, route and status code.")
	fmt.Fprintln(w, "# TYPE morag_gateway_requests_total counter")
	rk := make([][3]string, 0, len(m.requests))
	for k := range m.requests {
		rk = append(rk, k)
	}
	sort.Slice(rk, func(i, j int) bool { return strings.Join(rk[i][:], " ") < strings.Join(rk[j][:], " ") })
	for _, k := range rk {
		fmt.Fprintf(w, "morag_gateway_requests_total{method=\"%s\",route=\"%s\",code=\"%s\"} %d\n", label(k[0]), label(k[1]), k[2], m.requests[k])
	}
	fmt.Fprintln(w, "# HELP morag_gateway_routing_decisions_total Routing decisions by target and reason.")
	fmt.Fprintln(w, "# TYPE morag_gateway_routing_decisions_total counter")
	dk := make([][2]string, 0, len(m.routing))
	for k := range m.routing {
		dk = append(dk, k)
	}
	sort.Slice(dk, func(i, j int) bool { return dk[i][0]+dk[i][1] < dk[j][0]+dk[j][1] })
	for _, k := range dk {
		fmt.Fprintf(w, "morag_gateway_routing_decisions_total{target=\"%s\",reason=\"%s\"} %d\n", k[0], label(k[1]), m.routing[k])
	}
	fmt.Fprintln(w, "# HELP morag_gateway_task_outcomes_total Outcomes of tasks the gateway waited for.")
	fmt.Fprintln(w, "# TYPE morag_gateway_task_outcomes_total counter")
	ok := make([]string, 0, len(m.outcomes))
	for k := range m.outcomes {
		ok = append(ok, k)
	}
	sort.Strings(ok)
	for _, k := range ok {
		fmt.Fprintf(w, "morag_gateway_task_outcomes_total{outcome=\"%s\"} %d\n", label(k), m.outcomes[k])
	}
	fmt.Fprintln(w, "# HELP morag_queue_length Messages waiting in a queue, all priority bands.")
	fmt.Fprintln(w, "# TYPE morag_queue_length gauge")
	qk := make([]string, 0, len(queues))
	for k := range queues {
		qk = append(qk, k)
	}
	sort.Strings(qk)
	for _, q := range qk {
		fmt.Fprintf(w, "morag_queue_length{queue=\"%s\"} %d\n", label(q), queues[q])
	}
	fmt.Fprintln(w, "# HELP morag_live_workers Workers heard from within the liveness window.")
	fmt.Fprintln(w, "# TYPE morag_live_workers gauge")
	fmt.Fprintf(w, "morag_live_workers{type=\"all\"} %d\nmorag_live_workers{type=\"gpu\"} %d\n", workers, gpuWorkers)
}
