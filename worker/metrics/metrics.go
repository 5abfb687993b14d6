// Package metrics is the Go worker's Prometheus metrics: a runner.Observer
// that counts tasks by name and state, times them, and tracks held
// messages, lease refreshes, forwards and dead letters; gauges for the GPU
// and the transcriber; and Serve, which exposes them on -metrics-addr.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"morag-gpu/media"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// maxTaskNames bounds the task-name label: names come from messages, and
// unknown ones are forwarded, not refused, so a producer could otherwise
// grow the label set without limit. Names past the bound are "other".
const maxTaskNames = 256

// Metrics implements runner.Observer. Create it with New.
type Metrics struct {
	runner.NopObserver // keeps Metrics an Observer when methods are added

	reg         *prometheus.Registry
	received    *prometheus.CounterVec
	started     *prometheus.CounterVec
	done        *prometheus.CounterVec
	runtime     *prometheus.HistogramVec
	forwarded   *prometheus.CounterVec
	held        prometheus.Gauge
	leases      *prometheus.CounterVec
	leaseMsgs   prometheus.Counter
	deadLetters *prometheus.CounterVec
	gpu         *prometheus.GaugeVec
	transcriber prometheus.Gauge

	mu    sync.Mutex
	names map[string]struct{}
}

var _ runner.Observer = (*Metrics)(nil)

// New returns the worker's metrics, registered with Go runtime and process
// metrics on a registry of their own.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "morag_worker_tasks_received_total", Help: "Task messages received and held, by task name.",
		}, []string{"task"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "morag_worker_tasks_started_total", Help: "Task handlers started, by task name.",
		}, []string{"task"}),
		done: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "morag_worker_tasks_total", Help: "Tasks by name and final state (SUCCESS, FAILURE, RETRY, REVOKED, FORWARDED).",
		}, []string{"task", "state"}),
		runtime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "morag_worker_task_duration_seconds", Help: "Time from handler start to final state, by task name and state.",
			// From diag.echo's milliseconds to hour-long transcriptions.
			Buckets: []float64{.005, .025, .1, .5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600},
		}, []string{"task", "state"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "morag_worker_tasks_forwarded_total", Help: "Tasks handed unchanged to another queue, by task name and queue.",
		}, []string{"task", "queue"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "morag_worker_held_messages", Help: "Messages held (received, not yet acknowledged or requeued).",
		}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "morag_worker_lease_refreshes_total", Help: "Lease refreshes of held messages, by result (ok, error).",
		}, []string{"result"}),
		leaseMsgs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "morag_worker_lease_refreshed_messages_total", Help: "Held messages whose lease was refreshed.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "morag_worker_dead_lettered_total", Help: "Undecodable messages moved to the dead-letter list, by reason.",
		}, []string{"reason"}),
		gpu: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "morag_worker_gpu_capability", Help: "1 when a GPU path passed its test run at start (nvdec, nvenc, scale_cuda), else 0.",
		}, []string{"capability"}),
		transcriber: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "morag_worker_transcriber_available", Help: "1 when a whisper.cpp model is loaded, else 0 (audio/video needing a transcript are forwarded or failed).",
		}),
		names: map[string]struct{}{},
	}
	m.reg.MustRegister(m.received, m.started, m.done, m.runtime, m.forwarded, m.held, m.leases, m.leaseMsgs,
		m.deadLetters, m.gpu, m.transcriber,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the metrics are registered, for Handler or a caller's
// own exposition.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetMedia records the GPU capabilities and whether a transcriber is
// loaded, as found at start.
func (m *Metrics) SetMedia(caps media.Capabilities, transcriber bool) {
	m.gpu.WithLabelValues("nvdec").Set(b2f(caps.NVDEC))
	m.gpu.WithLabelValues("nvenc").Set(b2f(caps.NVENC))
	m.gpu.WithLabelValues("scale_cuda").Set(b2f(caps.ScaleCUDA))
	m.transcriber.Set(b2f(transcriber))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// name is the label for task name n: n itself for the first maxTaskNames
// names seen, "other" after.
func (m *Metrics) name(n string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.names[n]; ok {
		return n
	}
	if len(m.names) >= maxTaskNames {
		return "other"
	}
	m.names[n] = struct{}{}
	return n
}

func (m *Metrics) TaskReceived(name string) { m.received.WithLabelValues(m.name(name)).Inc() }

func (m *Metrics) TaskStarted(name string) { m.started.WithLabelValues(m.name(name)).Inc() }

func (m *Metrics) TaskDone(name string, state protocol.State, runtime time.Duration) {
	n := m.name(name)
	m.done.WithLabelValues(n, string(state)).Inc()
	if runtime > 0 {
		m.runtime.WithLabelValues(n, string(state)).Observe(runtime.Seconds())
	}
}

func (m *Metrics) TaskForwarded(name, queue string) {
	n := m.name(name)
	// The queue is the worker's -forward-unknown or one a handler names:
	// bounded by configuration and code, not by producers.
	m.forwarded.WithLabelValues(n, queue).Inc()
	m.done.WithLabelValues(n, "FORWARDED").Inc()
}

func (m *Metrics) Held(n int) { m.held.Set(float64(n)) }

func (m *Metrics) LeaseRefreshed(n int, err error) {
	if err != nil {
		m.leases.WithLabelValues("error").Inc()
		return
	}
	m.leases.WithLabelValues("ok").Inc()
	m.leaseMsgs.Add(float64(n))
}

// DeadLettered counts by the decoder's reason, a short fixed phrase.
func (m *Metrics) DeadLettered(reason string) { m.deadLetters.WithLabelValues(reason).Inc() }
