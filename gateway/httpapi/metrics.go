package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"morag-gpu/auth"
)

// maxRoutedQueues bounds the queues remembered from routing decisions: one
// per GPU user at most, and the queue label set must stay bounded.
const maxRoutedQueues = 1024

// metrics are the gateway's Prometheus metrics. Counters are kept as things
// happen; the gauges are read at scrape time from state that costs O(1) per
// known queue (LLEN of its priority bands) and nothing per Redis key: no
// scrape walks the keyspace.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	routing  *prometheus.CounterVec
	outcomes *prometheus.CounterVec

	http http.Handler // set by watch

	mu     sync.Mutex
	queues map[string]struct{} // queues this gateway routed to
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "morag_gateway_requests_total", Help: "HTTP requests by method, route and status code.",
		}, []string{"method", "route", "code"}),
		routing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "morag_gateway_routing_decisions_total", Help: "Routing decisions by target and reason.",
		}, []string{"target", "reason"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "morag_gateway_task_outcomes_total", Help: "Outcomes of tasks the gateway waited for.",
		}, []string{"outcome"}),
		queues: map[string]struct{}{},
	}
	m.reg.MustRegister(m.requests, m.routing, m.outcomes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) request(method, route string, code int) {
	// The method is the client's to choose: an unknown one would grow the
	// label set (and memory) without bound.
	switch method {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
	default:
		method = "OTHER"
	}
	m.requests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
}

// routed counts a routing decision and remembers its queue, so that the
// queue's length is reported even after the workers consuming it are gone.
func (m *metrics) routed(d auth.Decision) {
	kind := "default"
	if d.GPU {
		kind = "gpu"
	}
	reason := d.Reason
	if i := strings.Index(reason, ":"); i >= 0 {
		reason = reason[:i] // liveness-unknown: <error> would explode the label set
	}
	m.routing.WithLabelValues(kind, reason).Inc()
	if d.Queue == "" {
		return
	}
	m.mu.Lock()
	if len(m.queues) < maxRoutedQueues {
		m.queues[d.Queue] = struct{}{}
	}
	m.mu.Unlock()
}

func (m *metrics) outcome(o string) { m.outcomes.WithLabelValues(o).Inc() }

// routedQueues are the queues routed to since start, sorted.
func (m *metrics) routedQueues() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.queues))
	for q := range m.queues {
		out = append(out, q)
	}
	sort.Strings(out)
	return out
}

// watch adds the gauges read from g at scrape time and makes the handler
// that serves the registry in Prometheus text format. A failed queue read
// is logged and leaves that gauge out; the rest is still served.
func (m *metrics) watch(g *Gateway) {
	m.reg.MustRegister(newStateCollector(g))
	m.http = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{g.log},
	})
}

type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn().Str("component", "metrics").Msg(strings.TrimSpace(fmt.Sprintln(v...)))
}

// stateCollector reads the fleet (kept in memory from events) and the
// length of each known queue.
type stateCollector struct {
	g                        *Gateway
	queueLength, liveWorkers *prometheus.Desc
}

func newStateCollector(g *Gateway) stateCollector {
	return stateCollector{g: g,
		queueLength: prometheus.NewDesc("morag_queue_length",
			"Messages waiting in a queue, all priority bands.", []string{"queue"}, nil),
		liveWorkers: prometheus.NewDesc("morag_live_workers",
			"Workers heard from within the liveness window.", []string{"type"}, nil),
	}
}

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.queueLength
	ch <- c.liveWorkers
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	// A scrape has no request context here; bound the Redis reads so a
	// stalled Redis cannot hold the scrape forever.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lengths, err := c.g.queueLengths(ctx)
	for q, n := range lengths {
		ch <- prometheus.MustNewConstMetric(c.queueLength, prometheus.GaugeValue, float64(n), q)
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.queueLength, err)
	}
	workers := c.g.fleet.Workers()
	gpu := 0
	for _, w := range workers {
		if w.GPU {
			gpu++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.liveWorkers, prometheus.GaugeValue, float64(len(workers)), "all")
	ch <- prometheus.MustNewConstMetric(c.liveWorkers, prometheus.GaugeValue, float64(gpu), "gpu")
}
