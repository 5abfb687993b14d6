// Package fleet is a live directory of Celery workers, Go and Python alike,
// for the gateway (where to route) and the Go worker (where it may forward).
// It learns hostnames from worker events (heartbeats, online, offline), each
// worker's queues from pidbox active_queues replies and what it can finish
// from `inspect stats`, and answers auth.Liveness: is some worker consuming
// a queue alive, and can one of them transcribe?
package fleet

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/protocol"
)

// Defaults for Options.
const (
	DefaultAliveWindow = 10 * time.Second
	DefaultRefresh     = 5 * time.Second
	// replyWait bounds one active_queues broadcast; live workers answer in
	// milliseconds, and a slow one is simply asked again next round.
	replyWait = time.Second
)

// Options configure a Directory.
type Options struct {
	DB        int    // Redis database of the broker (for the fanout channel names)
	KeyPrefix string // kombu global_keyprefix
	// AliveWindow: a worker is alive when it was heard from this recently
	// (default 10 s).
	AliveWindow time.Duration
	// Refresh is how often every worker's queues are asked for (default 5 s).
	Refresh time.Duration
	// GPUQueue says whether a queue is for GPU workers: a worker consuming
	// one has Worker.GPU. Default: none is (only a worker's own "gpu"
	// field sets it).
	GPUQueue func(queue string) bool
	// GoSWIdents are the sw_idents, besides those starting with "go",
	// that mark a Go worker (Implementation "go"): the application's own
	// workers, which report Capabilities.
	GoSWIdents []string
	Logger     zerolog.Logger
}

// Worker is one worker as the directory sees it.
type Worker struct {
	Hostname string `json:"hostname"`
	// Implementation is "go" for Go workers (Options.GoSWIdents), "python"
	// for Celery.
	Implementation string    `json:"implementation"`
	SWIdent        string    `json:"sw_ident,omitempty"`
	SWVersion      string    `json:"sw_ver,omitempty"`
	Queues         []string  `json:"queues"`
	GPU            bool      `json:"gpu"`
	ActiveTasks    int       `json:"active_tasks"`
	Processed      int64     `json:"processed"`
	MaxTasks       int       `json:"max_tasks,omitempty"`
	LastSeen       time.Time `json:"last_seen"`
	Alive          bool      `json:"alive"`
	// Capabilities is what a Go worker reported in `inspect stats`; nil for
	// Python workers (they finish everything they register) and for Go
	// workers whose stats have not answered yet.
	Capabilities *Capabilities `json:"capabilities,omitempty"`
}

type worker struct {
	Worker
	queuesKnown bool
	statsKnown  bool
}

// Directory is the live worker directory. Run feeds it; every other method
// is safe for concurrent use.
type Directory struct {
	pool    *redis.Pool
	control *protocol.Control
	opts    Options
	log     zerolog.Logger
	now     func() time.Time

	mu          sync.Mutex
	workers     map[string]*worker
	lastRefresh time.Time
	inflight    *refreshCall  // the shared Refresh running now, if any
	newHost     chan struct{} // poked when an unknown hostname shows up
}

// New returns a directory on pool. It does nothing until Run.
func New(pool *redis.Pool, opts Options) *Directory {
	if opts.AliveWindow <= 0 {
		opts.AliveWindow = DefaultAliveWindow
	}
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	return &Directory{
		pool:    pool,
		control: protocol.NewControl(pool, opts.DB, opts.KeyPrefix),
		opts:    opts,
		log:     opts.Logger.With().Str("component", "fleet").Logger(),
		now:     time.Now,
		workers: map[string]*worker{},
		newHost: make(chan struct{}, 1),
	}
}

// Run receives worker events and refreshes queues until ctx ends. It owns
// both goroutines and returns when they have stopped.
func (d *Directory) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = protocol.ReceiveEvents(ctx, d.pool, d.opts.DB, d.opts.KeyPrefix, "worker.*", d.observe,
			protocol.WithLogger(d.log))
	}()
	d.refreshLoop(ctx)
	wg.Wait()
	return nil
}

func (d *Directory) refreshLoop(ctx context.Context) {
	t := time.NewTicker(d.opts.Refresh)
	defer t.Stop()
	d.Refresh(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.newHost:
		}
		d.Refresh(ctx)
	}
}

// observe handles one worker event.
func (d *Directory) observe(e protocol.Event) {
	host := e.Hostname()
	if host == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Type() == "worker-offline" {
		delete(d.workers, host)
		d.log.Info().Str("worker", host).Msg("worker went offline")
		return
	}
	if w, ok := d.workers[host]; ok && e.Type() == "worker-online" {
		// A restart under the same name may bring other capabilities
		// (a whisper build, another model): ask again.
		w.statsKnown, w.queuesKnown = false, false
	}
	w, ok := d.workers[host]
	if !ok {
		w = &worker{Worker: Worker{Hostname: host, Queues: []string{}}}
		d.workers[host] = w
		d.log.Info().Str("worker", host).Str("event", e.Type()).Msg("new worker seen; asking for its queues")
		select {
		case d.newHost <- struct{}{}:
		default:
		}
	}
	w.LastSeen = d.now()
	if s, ok := e["sw_ident"].(string); ok {
		w.SWIdent = s
	}
	if s, ok := e["sw_ver"].(string); ok {
		w.SWVersion = s
	}
	if n, ok := number(e["active"]); ok {
		w.ActiveTasks = int(n)
	}
	if n, ok := number(e["processed"]); ok {
		w.Processed = n
	}
	if g, ok := e["gpu"].(bool); ok && g {
		w.GPU = true
	}
	w.Implementation = d.implementation(w.SWIdent)
}

// Refresh asks every worker for its queues (pidbox active_queues) and
// records the answers; a reply also counts as a sign of life. It returns
// the broadcast's error, after which the last known queues stay in use.
func (d *Directory) Refresh(ctx context.Context) error {
	replies, err := d.control.Broadcast(ctx, "active_queues", nil, nil, replyWait)
	if err != nil && ctx.Err() == nil {
		d.log.Warn().Err(err).Msg("active_queues broadcast failed; keeping the last known queues")
	}
	now := d.now()
	d.mu.Lock()
	if err == nil {
		d.lastRefresh = now
	}
	d.mu.Unlock()
	if len(replies) == 0 {
		return err
	}
	var unknownStats []string
	d.mu.Lock()
	for host, reply := range replies {
		list, ok := reply.([]any)
		if !ok {
			continue
		}
		queues := make([]string, 0, len(list))
		for _, q := range list {
			if m, ok := q.(map[string]any); ok {
				if name, ok := m["name"].(string); ok && name != "" {
					queues = append(queues, name)
				}
			}
		}
		sort.Strings(queues)
		w, ok := d.workers[host]
		if !ok {
			w = &worker{Worker: Worker{Hostname: host, Implementation: "python"}}
			d.workers[host] = w
		}
		if !w.statsKnown {
			unknownStats = append(unknownStats, host)
		}
		w.Queues, w.queuesKnown, w.LastSeen = queues, true, now
		for _, q := range queues {
			if d.opts.GPUQueue != nil && d.opts.GPUQueue(q) {
				w.GPU = true
			}
		}
	}
	d.mu.Unlock()
	if len(unknownStats) > 0 {
		d.fetchStats(ctx, unknownStats)
	}
	return err
}

// fetchStats reads pool size, implementation and capabilities once per new
// (or restarted) worker: they do not change while it runs.
func (d *Directory) fetchStats(ctx context.Context, hosts []string) {
	replies, _ := d.control.Broadcast(ctx, "stats", nil, hosts, replyWait)
	d.mu.Lock()
	defer d.mu.Unlock()
	for host, reply := range replies {
		m, ok := reply.(map[string]any)
		w := d.workers[host]
		if !ok || w == nil {
			continue
		}
		if pool, ok := m["pool"].(map[string]any); ok {
			if n, ok := number(pool["max-concurrency"]); ok {
				w.MaxTasks = int(n)
			}
		}
		if s, ok := m["sw_ident"].(string); ok && w.SWIdent == "" {
			w.SWIdent = s
			w.Implementation = d.implementation(s)
		}
		if g, ok := m["gpu"].(bool); ok && g {
			w.GPU = true
		}
		w.statsKnown = true
		if w.Implementation == "go" {
			w.Capabilities = parseCapabilities(m)
		}
	}
}

// Workers lists the live workers, sorted by hostname. Workers not heard from
// within the alive window are dropped from the directory.
func (d *Directory) Workers() []Worker {
	cutoff := d.now().Add(-d.opts.AliveWindow)
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Worker, 0, len(d.workers))
	for host, w := range d.workers {
		if w.LastSeen.Before(cutoff) {
			// Forget silent workers after a while; they come back with
			// their next heartbeat.
			if w.LastSeen.Before(cutoff.Add(-time.Minute)) {
				delete(d.workers, host)
			}
			continue
		}
		c := w.Worker
		c.Queues = slices.Clone(w.Queues)
		c.Alive = true
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hostname < out[j].Hostname })
	return out
}

// ActiveTaskIDs asks every worker for the tasks it is running (pidbox
// active) and returns their ids.
func (d *Directory) ActiveTaskIDs(ctx context.Context) ([]string, error) {
	replies, err := d.control.Broadcast(ctx, "active", nil, nil, replyWait)
	ids := []string{}
	for _, reply := range replies {
		list, _ := reply.([]any)
		for _, t := range list {
			if m, ok := t.(map[string]any); ok {
				if id, ok := m["id"].(string); ok {
					ids = append(ids, id)
				}
			}
		}
	}
	sort.Strings(ids)
	return ids, err
}

func (d *Directory) implementation(swIdent string) string {
	if strings.HasPrefix(swIdent, "go") || slices.Contains(d.opts.GoSWIdents, swIdent) {
		return "go"
	}
	return "python"
}

func number(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i, true
		}
		f, err := n.Float64()
		return int64(f), err == nil
	case float64:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		return i, err == nil
	}
	return 0, false
}
