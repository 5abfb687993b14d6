package runner

import (
	"context"
	"errors"
	"fmt"
	"morag-gpu/internal/clock"
	"morag-gpu/protocol"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Config configures a Server. The zero value of every field means "the
// default" (noted per field), so Config{Queues: []string{"q"}} is complete.
type Config struct {
	// Queues to consume from, fairly within each priority band. Default
	// ["celery"].
	Queues []string
	// Concurrency is how many handlers run at once. Default 1.
	Concurrency int
	// Prefetch is how many fetched messages may wait for a free slot (ETA
	// tasks do not count). Default Concurrency. Negative: fetch only when a
	// slot is free.
	Prefetch int
	// Hostname is the Celery node name, "name@host". %h, %n and %d expand as
	// in Celery; a name without "@" is taken as the host part. Default
	// "<DefaultNodeName>@<hostname>".
	Hostname string
	// DefaultNodeName is the name part of the node name when Hostname is
	// empty or has no "@". Default "celery", as `celery worker`.
	DefaultNodeName string
	// SWIdent and SWVersion are the worker's software identity in worker
	// events, `inspect stats` and `inspect report` (Python sends sw_ident
	// "py-celery" and Celery's version). Monitors and fleet directories
	// tell implementations apart by it. Default "go-celery" and this
	// library's version.
	SWIdent, SWVersion string
	// RedisURL is the broker and result backend. Default
	// redis://localhost:6379/0.
	RedisURL string
	// NewTransport, when set, replaces the Redis transport: NewServer
	// calls it once with the settled config, and RedisURL, KeyPrefix and
	// ResultKeyPrefix are then unused (see Transport).
	NewTransport func(TransportConfig) (Transport, error)
	// VisibilityTimeout must equal the broker_transport_options
	// visibility_timeout of every Python participant. Default 1h.
	VisibilityTimeout time.Duration
	// ShutdownGrace bounds how long a graceful shutdown waits for running
	// handlers before their messages are requeued. Default 30s.
	ShutdownGrace time.Duration
	// ResultExpires is result_expires. Default 24h.
	ResultExpires time.Duration
	// KeyPrefix is broker_transport_options' global_keyprefix: kombu puts it
	// before every broker key and channel (queues, unacked, bindings,
	// events, remote control). It must match every other participant's.
	// Default "".
	KeyPrefix string
	// ResultKeyPrefix is result_backend_transport_options'
	// global_keyprefix (Celery 5.3+; 5.2 has none, so leave it empty with
	// 5.2 peers), for celery-task-meta-<id>. Celery keeps the two settings
	// apart, and so does this. Default "".
	ResultKeyPrefix string
	// Events enables task events at start (worker events are always sent,
	// as Python does without -E). enable_events/disable_events toggle it.
	Events bool
	// MaxDeliveries is how many times a message may start on Go workers
	// without finishing (each worker that took it died or hung) before it
	// is failed as a poison message and dead-lettered instead of run
	// again. Default 3; negative: never.
	MaxDeliveries int
	// CountBeforeRun commits every start's count before its handler runs,
	// as it always is for a message delivered before. By default a first
	// delivery's start is counted while its handler runs, which spares
	// short tasks a round trip each; a task that kills its worker before
	// that commit lands (within about a millisecond of starting) is then
	// counted from its second delivery on, so it fails as a poison message
	// one delivery later.
	CountBeforeRun bool
	// Autoscale, when Max > 0, lets the number of slots follow the work in
	// hand between Min and Max, as `celery worker --autoscale=max,min`
	// does; Concurrency is then the starting point.
	Autoscale AutoscaleRange
	// ForwardUnknown is the queue messages with unregistered task names are
	// forwarded to, unchanged. Empty: unknown tasks fail with NotRegistered.
	ForwardUnknown string
	// LiveConsumers, when set, lists the live workers that consume a
	// queue. The server then fails a task, saying what is missing, instead
	// of forwarding it (Forward, or an unknown name) to a queue that no
	// live worker other than this one consumes (or none that
	// ForwardError.Accept accepts), where it would wait forever. It is
	// asked just before such a forward and should confirm an empty answer
	// afresh (e.g. with an active_queues broadcast) rather than trust a
	// stale view; when it fails and lists no one, the task is forwarded
	// anyway. Nil: forward without asking.
	LiveConsumers func(ctx context.Context, queue string) ([]WorkerInfo, error)
	// Route picks the queue for canvas continuations (link, link_error,
	// chain) whose signature names no queue, as Python's task_routes would.
	// Default: "celery".
	Route func(taskName string) string
	// Logger receives structured logs. The zero value logs to stderr at
	// info level; zerolog.Nop() silences the server.
	Logger zerolog.Logger
	// Info holds extra fields for `inspect stats` and for handlers
	// (Task.Info), e.g. {"gpu": [...]}.
	Info map[string]any
	// Observer is told about tasks, held messages, lease refreshes and dead
	// letters, for metrics. Default NopObserver.
	Observer Observer
	// Clock is where the worker reads the time and waits for it: ETA and
	// rate-limit waits, time limits, lease refresh and lease-loss checks,
	// revoke expiry, heartbeats, autoscale, the shutdown grace, and the
	// broker's lease scores (protocol.BrokerOptions.Clock). Tests pass a
	// clock.Fake to move time exactly; production keeps the default, the
	// wall clock, which Python peers read too. Retry backoff and the
	// deadlines of single Redis calls stay on the wall clock: they pace
	// I/O with a real Redis. Default clock.Real{}.
	Clock clock.Clock
}

// WorkerInfo is a live worker as Config.LiveConsumers reports it.
type WorkerInfo struct {
	Hostname string
	// Detail is what else the application knows of the worker, for its
	// ForwardError.Accept to read; the runner does not look at it.
	Detail any
}

// AutoscaleRange bounds autoscaling: Max 0 means off.
type AutoscaleRange struct{ Max, Min int }

const (
	defaultMaxDeliveries = 3
	defaultRedisURL      = "redis://localhost:6379/0"
	defaultVisibility    = time.Hour
	defaultShutdownGrace = 30 * time.Second
	defaultResultExpires = 24 * time.Hour
	defaultQueue         = protocol.DefaultQueue
	defaultNodeName      = "celery"
	defaultSWIdent       = "go-celery"
	defaultSWVersion     = "0.1.0"
)

// withDefaults returns cfg with every zero field filled in, or an error
// saying which field is invalid.
func (cfg Config) withDefaults() (Config, error) {
	var queues []string
	for _, q := range cfg.Queues {
		q = strings.TrimSpace(q)
		if q != "" && !contains(queues, q) {
			queues = append(queues, q)
		}
	}
	if len(queues) == 0 {
		queues = []string{defaultQueue}
	}
	cfg.Queues = queues
	if cfg.Concurrency < 0 {
		return cfg, fmt.Errorf("runner: Concurrency %d is negative; use 1 or more", cfg.Concurrency)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = cfg.Concurrency
	}
	if cfg.Prefetch < 0 {
		cfg.Prefetch = 0
	}
	if cfg.MaxDeliveries == 0 {
		cfg.MaxDeliveries = defaultMaxDeliveries
	}
	if a := cfg.Autoscale; a.Max < 0 || a.Min < 0 || (a.Max > 0 && a.Min > a.Max) {
		return cfg, fmt.Errorf("runner: Autoscale max=%d min=%d: use 0 <= min <= max", a.Max, a.Min)
	}
	if a := cfg.Autoscale; a.Max > 0 {
		cfg.Concurrency = min(max(cfg.Concurrency, a.Min, 1), a.Max)
	}
	if cfg.RedisURL == "" {
		cfg.RedisURL = defaultRedisURL
	}
	if cfg.VisibilityTimeout < 0 || cfg.ShutdownGrace < 0 {
		return cfg, errors.New("runner: VisibilityTimeout and ShutdownGrace must not be negative")
	}
	if cfg.VisibilityTimeout == 0 {
		cfg.VisibilityTimeout = defaultVisibility
	}
	if cfg.VisibilityTimeout < time.Second {
		return cfg, fmt.Errorf("runner: VisibilityTimeout %s is below 1s; kombu counts it in whole seconds", cfg.VisibilityTimeout)
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = defaultShutdownGrace
	}
	if cfg.ResultExpires == 0 {
		cfg.ResultExpires = defaultResultExpires
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	if cfg.DefaultNodeName == "" {
		cfg.DefaultNodeName = defaultNodeName
	}
	cfg.Hostname = expandNodename(cfg.Hostname, cfg.DefaultNodeName, host)
	if cfg.SWIdent == "" {
		cfg.SWIdent = defaultSWIdent
	}
	if cfg.SWVersion == "" {
		cfg.SWVersion = defaultSWVersion
	}
	if cfg.Route == nil {
		cfg.Route = func(string) string { return defaultQueue }
	}
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if reflect.ValueOf(cfg.Logger).IsZero() {
		cfg.Logger = zerolog.New(os.Stderr).With().Timestamp().Logger().Level(zerolog.InfoLevel)
	}
	return cfg, nil
}

// ExpandNodename turns a -hostname value into a Celery node name the way
// `celery worker -n` does: "%h" is the host name, "%n" its first label,
// "%d" the rest (the domain), "%%" a percent sign; a value without "@" is
// the host part of "celery@<value>"; an empty value is "celery@<host>".
func ExpandNodename(value, host string) string {
	return expandNodename(value, defaultNodeName, host)
}

// expandNodename is ExpandNodename with defaultName in place of "celery"
// (Config.DefaultNodeName).
func expandNodename(value, defaultName, host string) string {
	if value == "" {
		value = defaultName + "@%h"
	}
	name, domain, _ := strings.Cut(host, ".")
	var b strings.Builder
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c != '%' || i+1 == len(value) {
			b.WriteByte(c)
			continue
		}
		i++
		switch value[i] {
		case 'h':
			b.WriteString(host)
		case 'n':
			b.WriteString(name)
		case 'd':
			b.WriteString(domain)
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(value[i])
		}
	}
	out := b.String()
	if !strings.Contains(out, "@") {
		out = defaultName + "@" + out
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
