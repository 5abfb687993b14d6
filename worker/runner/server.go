package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/protocol"
)

// Server is a Celery worker: it fetches tasks from Config.Queues and runs
// them with the handlers registered on its Mux.
type Server struct {
	cfg Config
	mux *Mux
	log zerolog.Logger
	pid int
	db  int

	// tr is the broker, backend, events and remote control (transport.go).
	tr      Transport
	commits *committer

	revoked    *revokedSet
	limiter    *rateLimiter
	taskEvents atomic.Bool
	running    atomic.Bool

	abortOnce sync.Once
	abortCh   chan struct{} // closed to stop waiting for running tasks

	// work owns the fetch loop, the execution slots and the ETA waiters.
	work sync.WaitGroup

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on changes everyone must see (stopping, pool size)
	slotWake   chan struct{} // closed and replaced when ready grows: slots re-check
	fetchWake  chan struct{} // closed and replaced when room for fetching opens
	held       map[string]*request
	ready      []*request // reserved, in fetch order
	active     int
	fetching   int // messages fetches in flight may add to ready
	committing int // finished tasks whose result is still on its way to Redis
	// rateWaiting counts received tasks waiting for their rate limit: like
	// Python's, their unacked messages count against the prefetch limit
	// (ETA tasks do not).
	rateWaiting int
	// parked counts the slots and fetch loops (by waiter) blocked in
	// waitFor. While every fetch loop is parked, no fetch can start until
	// something wakes them: tests read it instead of sleeping to show that
	// nothing more is fetched.
	parked [2]int

	// The pool (pool.go): its size may change at runtime.
	concurrency int // slots wanted
	slots       int // slot goroutines running
	nextSlot    int
	prefetch    int     // messages that may wait for a slot
	prefetchPer float64 // prefetch per slot, kept when the pool resizes
	autoscale   AutoscaleRange
	lastScaleUp time.Time
	writes      map[int]int64 // tasks started per live slot
	slotCtx     slotContexts
	stop        context.CancelFunc // starts a graceful shutdown
	stopping    bool
	startTime   time.Time
	processed   int64
	total       map[string]int64
}

// NewServer checks cfg, fills in its defaults and prepares the connections.
// Nothing connects before Run.
func NewServer(cfg Config, mux *Mux) (*Server, error) {
	if mux == nil {
		return nil, errors.New("runner: NewServer needs a Mux; use runner.NewMux()")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		mux:       mux,
		log:       cfg.Logger.With().Str("worker", cfg.Hostname).Logger(),
		pid:       os.Getpid(),
		revoked:   newRevokedSet(revokedMax, revokedMaxBytes, revokedExpires),
		limiter:   newRateLimiter(),
		abortCh:   make(chan struct{}),
		changed:   make(chan struct{}),
		slotWake:  make(chan struct{}),
		fetchWake: make(chan struct{}),
		held:      map[string]*request{},
		total:     map[string]int64{},
	}
	if cfg.NewTransport != nil {
		tr, err := cfg.NewTransport(TransportConfig{Hostname: cfg.Hostname, Queues: cfg.Queues,
			VisibilityTimeout: cfg.VisibilityTimeout, ResultExpires: cfg.ResultExpires, Logger: s.log})
		if err != nil {
			return nil, err
		}
		s.tr = tr
	} else {
		pool, err := protocol.NewPool(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("runner: redis URL %q: %w", redactURL(cfg.RedisURL), err)
		}
		if s.db, err = protocol.ParseDB(cfg.RedisURL); err != nil {
			pool.Close()
			return nil, fmt.Errorf("runner: redis URL %q: %w", redactURL(cfg.RedisURL), err)
		}
		s.tr = newRedisTransport(cfg, pool, s.db)
	}
	s.commits = newCommitter(s)
	s.initPoolLocked()
	s.taskEvents.Store(cfg.Events)
	s.registerControl()
	return s, nil
}

// Hostname is the node name the server answers to.
func (s *Server) Hostname() string { return s.cfg.Hostname }

// Run serves until ctx is cancelled (or a remote `shutdown`), then shuts
// down gracefully: it stops fetching, requeues tasks that have not started,
// waits up to ShutdownGrace for running handlers, requeues whatever is
// still unfinished, sends worker-offline and returns nil. Run may be called
// once per Server.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("runner: Server.Run called twice; create a new Server")
	}
	defer s.tr.Close()

	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	base := context.WithoutCancel(ctx)
	// ioCtx bounds the Redis writes that keep a task in hand (results,
	// acks, republishes); it only ends when shutdown stops waiting.
	ioCtx, abortIO := context.WithCancelCause(base)
	defer abortIO(nil)
	bgCtx, stopBG := context.WithCancel(base)
	defer stopBG()

	s.mu.Lock()
	s.stop = stop
	s.startTime = s.cfg.Clock.Now()
	s.mu.Unlock()

	if !s.startup(stopCtx) {
		s.log.Info().Msg("stopped before Redis answered")
		return nil
	}

	var bg sync.WaitGroup
	bg.Go(func() { s.runMailbox(bgCtx) })
	bg.Go(func() { s.heartbeatLoop(bgCtx) })
	bg.Go(func() { s.leaseLoop(bgCtx) })
	bg.Go(func() { s.restoreLoop(stopCtx) })

	// The committer outlives the work goroutines: every commit a task
	// waits for is answered before requeueRemaining looks at what is left.
	s.commits.start(ioCtx)
	fetchDone := make(chan struct{})
	s.work.Go(func() {
		defer close(fetchDone)
		var fetchers sync.WaitGroup
		for range s.fetchers() {
			fetchers.Go(func() { s.fetchLoop(stopCtx, ioCtx) })
		}
		fetchers.Wait()
	})
	s.mu.Lock()
	s.slotCtx = slotContexts{stop: stopCtx, io: ioCtx, base: base}
	for s.slots < s.concurrency {
		s.startSlotLocked()
	}
	s.mu.Unlock()
	bg.Go(func() { s.autoscaleLoop(bgCtx) })
	// Announce the worker only once remote control can hear it: a
	// `celery inspect` sent right after "ready." must not be missed.
	subscribed := s.cfg.Clock.NewTimer(10 * time.Second)
	select {
	case <-s.tr.ControlReady():
	case <-stopCtx.Done():
	case <-subscribed.C():
		s.log.Warn().Msg("remote control is not subscribed yet; starting anyway (it keeps retrying)")
	}
	subscribed.Stop()
	s.workerEvent(ioCtx, "worker-online", nil)
	// Lifecycle lines are logged at every level (no "level" field), as
	// Celery prints its banner and "ready." whatever its log level.
	s.log.Log().Strs("queues", s.cfg.Queues).Int("concurrency", s.cfg.Concurrency).
		Int("prefetch", s.cfg.Prefetch).Int("max_deliveries", s.cfg.MaxDeliveries).
		Bool("task_events", s.taskEvents.Load()).Strs("tasks", s.mux.Names()).Msg("ready.")

	<-stopCtx.Done()
	s.mu.Lock()
	s.stopping = true
	s.broadcastLocked()
	s.mu.Unlock()
	s.log.Log().Dur("grace", s.cfg.ShutdownGrace).Msg("warm shutdown: no new tasks; waiting for running tasks")

	grace := s.cfg.Clock.NewTimer(s.cfg.ShutdownGrace)
	defer grace.Stop()
	workDone := make(chan struct{})
	go func() { // owner: Run; ends when every work goroutine has
		s.work.Wait()
		close(workDone)
	}()

	// waitOr waits for ch unless the grace period ends or a second signal
	// forces the shutdown first; then it stops the Redis retries of
	// running tasks and reports false.
	waitOr := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-grace.C():
			abortIO(errors.New("shutdown grace period over"))
		case <-s.abortCh:
			abortIO(errors.New("shutdown forced"))
		}
		return false
	}
	// Tasks that have not started go back to their queues at once, so that
	// other workers can take them while this one drains.
	if waitOr(fetchDone) {
		s.requeueWaiting(ioCtx)
		waitOr(workDone)
	}
	if ioCtx.Err() != nil {
		s.log.Warn().Str("reason", context.Cause(ioCtx).Error()).Msg("not waiting for running tasks any longer; requeueing them")
		stuck := s.cfg.Clock.NewTimer(10 * time.Second)
		select {
		case <-workDone:
		case <-stuck.C():
			s.log.Error().Msg("execution slots did not stop within 10s of the forced shutdown")
		}
		stuck.Stop()
	}
	s.commits.stop()
	s.requeueRemaining()

	offCtx, cancel := context.WithTimeout(base, 3*time.Second)
	s.workerEvent(offCtx, "worker-offline", nil)
	cancel()
	stopBG()
	bg.Wait()
	s.log.Log().Msg("worker stopped")
	return nil
}

// Shutdown starts a graceful shutdown, as a cancelled Run context does.
func (s *Server) Shutdown() {
	s.mu.Lock()
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// abort stops waiting for running handlers: their messages are requeued
// and Run returns promptly (the second Ctrl-C).
func (s *Server) abort() {
	s.abortOnce.Do(func() { close(s.abortCh) })
	s.Shutdown()
}

// startup declares the consumed queues and restores expired unacked
// messages, retrying until Redis answers. It reports false when ctx ended
// first.
func (s *Server) startup(ctx context.Context) bool {
	err := persist(ctx, s.log, "connect to Redis and declare queues", func(ctx context.Context) error {
		for _, q := range s.queues() {
			if err := s.tr.DeclareQueue(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false
	}
	s.restoreExpired(ctx)
	return true
}

// queues lists the queues consumed right now.
func (s *Server) queues() []string { return s.tr.Queues() }

// broadcastLocked wakes everything waiting for a state change.
func (s *Server) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// wakeSlotsLocked wakes the slots waiting for a reserved task; a wake-up
// of goroutines that cannot act on it costs a context switch each, so
// slots and fetch loops are woken apart.
func (s *Server) wakeSlotsLocked() {
	close(s.slotWake)
	s.slotWake = make(chan struct{})
}

// wakeFetchersLocked wakes the fetch loops waiting for room.
func (s *Server) wakeFetchersLocked() {
	close(s.fetchWake)
	s.fetchWake = make(chan struct{})
}

// waiter says which wake-ups a waitFor call listens to besides broadcasts.
type waiter int

const (
	slotWaiter waiter = iota
	fetchWaiter
)

// waitFor blocks until cond (called with s.mu held) is true or ctx ends.
func (s *Server) waitFor(ctx context.Context, who waiter, cond func() bool) bool {
	for parked := false; ; parked = true {
		s.mu.Lock()
		if parked {
			s.parked[who]--
		}
		if cond() {
			s.mu.Unlock()
			return true
		}
		ch, wake := s.changed, s.slotWake
		if who == fetchWaiter {
			wake = s.fetchWake
		}
		s.parked[who]++
		s.mu.Unlock()
		select {
		case <-ch:
		case <-wake:
		case <-ctx.Done():
			s.mu.Lock()
			s.parked[who]--
			s.mu.Unlock()
			return false
		}
	}
}

// hold and unhold do not broadcast: nothing waits on held itself, and a
// wake-up per change costs every fetcher and slot a context switch.
func (s *Server) hold(r *request) {
	s.mu.Lock()
	s.held[r.d.Tag] = r
	n := len(s.held)
	s.mu.Unlock()
	s.cfg.Observer.Held(n)
}

func (s *Server) unhold(r *request) {
	s.mu.Lock()
	if s.held[r.d.Tag] == r {
		delete(s.held, r.d.Tag)
	}
	n := len(s.held)
	s.mu.Unlock()
	s.cfg.Observer.Held(n)
}

func (s *Server) enqueue(r *request) {
	s.mu.Lock()
	s.ready = append(s.ready, r)
	s.wakeSlotsLocked()
	s.mu.Unlock()
}

// snapshot returns the held requests.
func (s *Server) snapshot() []*request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*request, 0, len(s.held))
	for _, r := range s.held {
		out = append(out, r)
	}
	return out
}

// requeueWaiting puts every held task that has not started back on its
// queue (kombu's restore: to the head, marked redelivered).
func (s *Server) requeueWaiting(ctx context.Context) {
	n := 0
	for _, r := range s.snapshot() {
		if !r.transition(stateDone, stateReserved, stateScheduled) {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.tr.Restore(ctx, r.d.Tag); err != nil {
			r.log.Error().Err(err).Msg("could not requeue task on shutdown; it returns to its queue after the visibility timeout")
		} else {
			n++
		}
		cancel()
		s.unhold(r)
	}
	if n > 0 {
		s.log.Info().Int("tasks", n).Msg("requeued tasks that had not started")
	}
}

// requeueRemaining runs last: whatever is still held either has its result
// stored (ack it) or did not finish (requeue it).
func (s *Server) requeueRemaining() {
	for _, r := range s.snapshot() {
		r.mu.Lock()
		stored, counted := r.stored, r.counted
		r.state = stateDone
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		switch {
		case stored:
			_, err = s.tr.Ack(ctx, r.d.Tag)
		case counted:
			// Given back alive: this start says nothing about poison.
			err = s.tr.RestoreStarted(ctx, r.d.Tag)
		default:
			err = s.tr.Restore(ctx, r.d.Tag)
		}
		if err == nil && !stored {
			r.log.Warn().Msg("requeued unfinished task on shutdown")
		}
		cancel()
		if err != nil {
			r.log.Error().Err(err).Msg("could not requeue task on shutdown; it returns to its queue after the visibility timeout")
		}
		s.unhold(r)
	}
}
