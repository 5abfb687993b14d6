package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"morag-gpu/protocol"
)

// Remote control relay: the gateway runs a pidbox mailbox (protocol.Mailbox)
// for every gateway-mediated worker whose control poll reaches it. A
// request for that worker (inspect ping/stats/active_queues, revoke,
// terminate, ...) is handed to the worker on its control long poll, the
// worker runs its own handler and posts the reply, and the mailbox sends it
// on Redis as the worker's. So these workers show in `inspect ping`, the
// fleet and /api/v1/status/workers like any other.

const (
	pathControlPoll  = "/control/poll"
	pathControlReply = "/control/reply"
	// relayIdle is how long a relay lives without a control poll.
	relayIdle = 30 * time.Second
	// relayReplyWait bounds the wait for a worker's reply (pidbox callers
	// wait 1 s by default; a late reply is dropped by them anyway).
	relayReplyWait = 10 * time.Second
	// relayQueue bounds the requests waiting for the worker's next poll.
	relayQueue = 64
	maxMethods = 64
	// Each relay holds a Redis subscription (the worker's pidbox) and a
	// goroutine, so they are counted: per user, and in all, well below the
	// Redis pool's 512 connections that every request shares.
	maxRelaysPerUser = 16
	maxRelays        = 256
)

// errTooMany is a request over a count limit: 429, with what to do.
type errTooMany struct{ msg string }

func (e *errTooMany) Error() string { return e.msg }

type controlPollRequest struct {
	// Methods are the commands the worker answers.
	Methods []string `json:"methods"`
	WaitMS  int64    `json:"wait_ms"`
}

type wireControl struct {
	ID      string                   `json:"id"`
	Request *protocol.ControlRequest `json:"request"`
}

type controlPollReply struct {
	Requests []wireControl `json:"requests"`
}

type controlReplyRequest struct {
	ID      string          `json:"id"`
	Reply   json.RawMessage `json:"reply,omitempty"`
	Error   string          `json:"error,omitempty"`
	NoReply bool            `json:"no_reply,omitempty"`
}

type relayReply struct {
	reply json.RawMessage
	err   error
}

type relayCall struct {
	id    string
	req   *protocol.ControlRequest
	reply chan relayReply
}

// relay is one worker's mailbox in this gateway.
type relay struct {
	user, hostname string
	mb             *protocol.Mailbox
	stop           context.CancelFunc
	done           chan struct{}
	pending        chan *relayCall

	mu       sync.Mutex
	calls    map[string]*relayCall
	methods  map[string]bool
	lastPoll time.Time
}

// relays are the mailboxes this gateway runs, by worker node name.
type relays struct {
	mu   sync.Mutex
	byID map[string]*relay
	ctx  context.Context // Run's; nil before Run
}

// Run keeps the relays until ctx ends (it starts no mailbox before it
// runs, and closes idle ones) and restores expired messages. The gateway
// runs it with its other background loops.
func (s *Server) Run(ctx context.Context) error {
	s.relays.mu.Lock()
	s.relays.ctx = ctx
	s.relays.mu.Unlock()
	t := time.NewTicker(relayIdle / 3)
	defer t.Stop()
	// The gateway restores expired messages itself too, as every kombu
	// consumer does: an unconfirmed fetch answer comes back within the
	// confirm window even when no worker is left to ask for a restore.
	restore := time.NewTicker(min(10*time.Second, max(time.Second, s.opts.Confirm/2)))
	defer restore.Stop()
	for {
		select {
		case <-restore.C:
			if _, err := s.broker.RestoreExpired(ctx); err != nil && ctx.Err() == nil {
				s.log.Debug().Err(err).Msg("could not restore expired messages")
			}
		case <-ctx.Done():
			s.relays.mu.Lock()
			all := s.relays.byID
			s.relays.byID = nil
			s.relays.mu.Unlock()
			for _, r := range all {
				r.stop()
				<-r.done
			}
			return nil
		case <-t.C:
			s.reapRelays(false)
		}
	}
}

func (s *Server) reapRelays(all bool) {
	s.relays.mu.Lock()
	var idle []*relay
	for name, r := range s.relays.byID {
		r.mu.Lock()
		old := time.Since(r.lastPoll) > relayIdle
		r.mu.Unlock()
		if all || old {
			idle = append(idle, r)
			delete(s.relays.byID, name)
		}
	}
	s.relays.mu.Unlock()
	for _, r := range idle {
		r.stop()
		<-r.done
		s.log.Info().Str("worker", r.hostname).Msg("remote control relay closed: the worker stopped polling")
	}
}

// closeRelay stops k.worker's relay, if this gateway runs one for k's user.
func (s *Server) closeRelay(k caller) {
	s.relays.mu.Lock()
	r := s.relays.byID[k.worker]
	if r == nil || r.user != k.user {
		s.relays.mu.Unlock()
		return
	}
	delete(s.relays.byID, k.worker)
	s.relays.mu.Unlock()
	r.stop()
	<-r.done
}

// relayFor returns k.worker's relay, starting its mailbox when needed.
func (s *Server) relayFor(k caller, methods []string) (*relay, error) {
	s.relays.mu.Lock()
	defer s.relays.mu.Unlock()
	if s.relays.ctx == nil || s.relays.ctx.Err() != nil {
		return nil, errors.New("remote control relay is not running in this gateway")
	}
	r := s.relays.byID[k.worker]
	if r != nil && r.user != k.user {
		return nil, &errForbidden{fmt.Sprintf("worker name %q is relayed for another user", k.worker)}
	}
	if r == nil {
		if s.relays.byID == nil {
			s.relays.byID = map[string]*relay{}
		}
		mine := 0
		for _, o := range s.relays.byID {
			if o.user == k.user {
				mine++
			}
		}
		switch {
		case mine >= maxRelaysPerUser:
			return nil, &errTooMany{fmt.Sprintf("user %q already has %d gateway-mediated workers under remote control (the most one user may have); stop one, or give workers fewer distinct names", k.user, mine)}
		case len(s.relays.byID) >= maxRelays:
			return nil, &errTooMany{fmt.Sprintf("this gateway relays remote control for %d workers, its most; retry later or run another gateway", len(s.relays.byID))}
		}
		ctx, cancel := context.WithCancel(s.relays.ctx)
		r = &relay{user: k.user, hostname: k.worker, stop: cancel, done: make(chan struct{}),
			pending: make(chan *relayCall, relayQueue), calls: map[string]*relayCall{}, methods: map[string]bool{},
			mb: protocol.NewMailbox(s.opts.Pool, s.opts.DB, k.worker, s.opts.KeyPrefix, protocol.WithLogger(s.log))}
		s.relays.byID[k.worker] = r
		go func() { // owner: the relay; stopped by reapRelays or Run
			defer close(r.done)
			if err := r.mb.Run(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Str("worker", k.worker).Msg("remote control relay stopped")
			}
		}()
		s.log.Info().Str("worker", k.worker).Str("user_id", k.user).Msg("remote control relay started")
	}
	r.mu.Lock()
	r.lastPoll = time.Now()
	r.mu.Unlock()
	for _, m := range methods {
		r.mu.Lock()
		known := r.methods[m]
		r.methods[m] = true
		r.mu.Unlock()
		if !known {
			r.mb.Handle(m, r.handler)
		}
	}
	return r, nil
}

// handler hands a request to the worker and waits for its reply.
func (r *relay) handler(ctx context.Context, req *protocol.ControlRequest) (any, error) {
	call := &relayCall{id: protocol.NewID(), req: req, reply: make(chan relayReply, 1)}
	r.mu.Lock()
	r.calls[call.id] = call
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.calls, call.id)
		r.mu.Unlock()
	}()
	select {
	case r.pending <- call:
	default:
		return nil, errors.New("the worker has too many control requests waiting")
	}
	t := time.NewTimer(relayReplyWait)
	defer t.Stop()
	select {
	case rep := <-call.reply:
		if rep.err != nil {
			return nil, rep.err
		}
		if rep.reply == nil {
			return nil, protocol.ErrNoReply
		}
		return rep.reply, nil
	case <-t.C:
		return nil, protocol.ErrNoReply // too late for any caller
	case <-ctx.Done():
		return nil, protocol.ErrNoReply
	}
}

var methodRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,63}$`)

func (s *Server) controlPoll(c echo.Context, k caller, req *controlPollRequest) error {
	if len(req.Methods) > maxMethods {
		return badRequest(c, "at most %d methods", maxMethods)
	}
	for _, m := range req.Methods {
		if !methodRe.MatchString(m) {
			return badRequest(c, "%q is not a control method name", m)
		}
	}
	ctx := c.Request().Context()
	if err := s.claim(ctx, k); err != nil {
		return s.answer(c, k, err)
	}
	r, err := s.relayFor(k, req.Methods)
	if err != nil {
		return s.answer(c, k, err)
	}
	wait := min(max(time.Duration(req.WaitMS)*time.Millisecond, 0), s.opts.MaxWait)
	t := time.NewTimer(wait)
	defer t.Stop()
	out := controlPollReply{Requests: []wireControl{}}
	// The first poll returns once the mailbox listens, so that the worker
	// announces itself only when remote control can reach it.
	select {
	case <-r.mb.Ready():
	case <-ctx.Done():
		return nil
	case <-t.C:
		return c.JSON(http.StatusOK, out)
	}
	take := func(call *relayCall) {
		out.Requests = append(out.Requests, wireControl{ID: call.id, Request: call.req})
	}
	select {
	case call := <-r.pending:
		take(call)
	case <-t.C:
	case <-ctx.Done():
		return nil // calls stay pending for the next poll
	}
	for len(out.Requests) < relayQueue {
		select {
		case call := <-r.pending:
			take(call)
			continue
		default:
		}
		break
	}
	r.mu.Lock()
	r.lastPoll = time.Now()
	r.mu.Unlock()
	return c.JSON(http.StatusOK, out)
}

func (s *Server) controlReply(c echo.Context, k caller, req *controlReplyRequest) error {
	s.relays.mu.Lock()
	r := s.relays.byID[k.worker]
	s.relays.mu.Unlock()
	if r == nil || r.user != k.user {
		return s.forbidden(c, k, "no control relay of worker %q for this key", k.worker)
	}
	r.mu.Lock()
	call := r.calls[req.ID]
	r.mu.Unlock()
	if call == nil {
		return c.JSON(http.StatusOK, heldReply{}) // too late; the caller gave up
	}
	rep := relayReply{}
	switch {
	case req.Error != "":
		rep.err = errors.New(limitString(req.Error, 1000))
	case req.NoReply:
	default:
		if !json.Valid(req.Reply) {
			return badRequest(c, "the reply is not JSON")
		}
		rep.reply = req.Reply
	}
	select {
	case call.reply <- rep:
	default:
	}
	return c.JSON(http.StatusOK, heldReply{Held: true})
}
