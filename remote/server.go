package remote

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"morag-gpu/auth"
	"morag-gpu/contract"
	"morag-gpu/protocol"
)

// Defaults and hard bounds of Options.
const (
	DefaultMaxWait  = 25 * time.Second
	DefaultMaxBatch = 64
	DefaultConfirm  = 30 * time.Second
	// DefaultMaxBody bounds one request body: a commit carries results.
	DefaultMaxBody = 64 << 20
	// maxTags bounds the tags of one lease, and maxOps the ops of one
	// commit (the worker sends at most 256) and events of one request.
	maxTags = 1000
	maxOps  = 1024
	// fetchSlice bounds one blocking wait inside a long poll, so a client
	// that went away is noticed within it and nothing is popped for it.
	fetchSlice = 2 * time.Second
	// workerTTL is how long a node name stays registered without a
	// heartbeat.
	workerTTL = 60 * time.Second
	// restoreEvery throttles the restores remote workers ask for.
	restoreEvery = 5 * time.Second
)

// Options configure a Server. Every participant on the Redis must agree on
// VisibilityTimeout and the key prefixes.
type Options struct {
	Pool                       *redis.Pool
	DB                         int
	KeyPrefix, ResultKeyPrefix string
	ResultExpires              time.Duration
	VisibilityTimeout          time.Duration // default 1 h
	// MaxWait bounds a long poll (the client picks up to it), MaxBatch the
	// messages one fetch returns.
	MaxWait  time.Duration
	MaxBatch int
	// Confirm is how long a fetched message may wait for the worker to
	// confirm it received it (a lease refresh) before the normal
	// visibility-timeout restore may take it back: an answer lost on a
	// cut connection returns its messages within Confirm, not after the
	// whole visibility timeout.
	Confirm time.Duration
	MaxBody int64
	Logger  zerolog.Logger
}

// Server is the gateway's half of gateway-mediated workers: echo handlers
// that do the Redis side of the runner's Transport for workers that hold
// an API key and no Redis credentials. A key for user X may consume only
// X's own queues (contract.GPUQueue, contract.CPUQueue) and touch only
// messages held from them; anything else is 403, logged with the user id.
type Server struct {
	opts        Options
	broker      *protocol.Broker
	backend     *protocol.Backend
	eventPrefix string // the events channel before the routing key
	log         zerolog.Logger

	restoreMu   sync.Mutex
	lastRestore time.Time

	relays relays // remote control (control.go)
}

// NewServer builds the handlers on opts.Pool. It starts no goroutines.
func NewServer(opts Options) *Server {
	if opts.VisibilityTimeout <= 0 {
		opts.VisibilityTimeout = time.Hour
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Confirm <= 0 {
		opts.Confirm = DefaultConfirm
	}
	opts.Confirm = min(opts.Confirm, opts.VisibilityTimeout)
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	bo := protocol.BrokerOptions{VisibilityTimeout: opts.VisibilityTimeout, KeyPrefix: opts.KeyPrefix, Logger: opts.Logger}
	s := &Server{opts: opts, log: opts.Logger.With().Str("component", "remote-workers").Logger()}
	s.broker = protocol.NewBroker(opts.Pool, bo)
	s.backend = protocol.NewBackend(opts.Pool, protocol.BackendOptions{Expires: opts.ResultExpires, KeyPrefix: opts.ResultKeyPrefix, Logger: opts.Logger})
	s.eventPrefix = eventChannelPrefix(opts.DB, opts.KeyPrefix)
	return s
}

// eventChannelPrefix is the events channel without its routing key, as
// protocol's dispatcher builds it.
func eventChannelPrefix(db int, keyPrefix string) string {
	d := protocol.NewEventDispatcher(nil, db, "x@x", keyPrefix)
	ch, _, _ := d.Encode("worker-heartbeat", nil)
	return strings.TrimSuffix(ch, "worker.heartbeat")
}

// MaxBody is the largest request body the handlers take; the gateway reads
// bodies of PathPrefix routes up to it.
func (s *Server) MaxBody() int64 { return s.opts.MaxBody }

// MaxWait is the longest long poll; the gateway's write deadline for
// PathPrefix routes must exceed it.
func (s *Server) MaxWait() time.Duration { return s.opts.MaxWait }

// Mount adds the worker API under PathPrefix. Callers must have run
// auth.Middleware before (it identifies the key); every route requires a
// key.
func (s *Server) Mount(e *echo.Echo) {
	g := e.Group(PathPrefix, auth.RequireUser)
	g.POST(pathHello, route(s, s.hello))
	g.POST(pathFetch, route(s, s.fetch))
	g.POST(pathLease, route(s, s.lease))
	g.POST(pathHeld, route(s, s.held))
	g.POST(pathRestoreExp, s.restoreExpired)
	g.POST(pathCommit, route(s, s.commit))
	g.POST(pathAck, route(s, s.ack))
	g.POST(pathRestore, route(s, s.restore))
	g.POST(pathForward, route(s, s.forward))
	g.POST(pathDeadLetter, route(s, s.deadLetter))
	g.POST(pathPoison, route(s, s.poison))
	g.POST(pathStore, route(s, s.store))
	g.POST(pathPublish, route(s, s.publish))
	g.POST(pathEvents, route(s, s.events))
	g.POST(pathControlPoll, route(s, s.controlPoll))
	g.POST(pathControlReply, route(s, s.controlReply))
}

// route adapts a worker route to echo: every one acts for the key's
// caller on a JSON body of its own type, and a body that is not that JSON
// is a 400 before the handler runs.
func route[T any](s *Server, h func(c echo.Context, k caller, req *T) error) echo.HandlerFunc {
	return func(c echo.Context) error {
		now := time.Now()
		c.Response().Header().Set(HeaderTime, strconv.FormatInt(now.UnixMilli(), 10))
		req := new(T)
		if err := bind(c, req); err != nil {
			return badRequest(c, "%v", err)
		}
		k := s.caller(c)
		if v := c.Request().Header.Get(HeaderLeaseUntil); v != "" {
			until, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return badRequest(c, "%s %q is not Unix milliseconds", HeaderLeaseUntil, v)
			}
			if late := now.Sub(time.UnixMilli(until)); late > 0 {
				s.log.Warn().Str("user_id", k.user).Str("worker", k.worker).Str("path", c.Request().URL.Path).
					Dur("late", late).Msg("remote worker request refused: it arrived after the worker's lease could have lapsed")
				return c.JSON(http.StatusConflict, errorReply{Code: codeLeaseExpired,
					Detail: fmt.Sprintf("the request arrived %s after the worker's lease on its messages could have lapsed (a partition?); not applied: another worker may hold them now", late.Round(time.Millisecond))})
			}
		}
		return h(c, k, req)
	}
}

// caller is the key's user and the queues it may consume.
type caller struct {
	user    string
	allowed []string
	worker  string // X-Morag-Worker, unverified until checked
}

func (s *Server) caller(c echo.Context) caller {
	u := auth.UserFrom(c) // RequireUser ran
	return caller{user: u.UserID, allowed: []string{contract.GPUQueue(u.UserID), contract.CPUQueue(u.UserID)},
		worker: c.Request().Header.Get(HeaderWorker)}
}

func (k caller) may(queue string) bool { return slices.Contains(k.allowed, queue) }

// errForbidden is a request outside the key's own queues and messages.
type errForbidden struct{ msg string }

func (e *errForbidden) Error() string { return e.msg }

func (s *Server) forbidden(c echo.Context, k caller, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	s.log.Warn().Str("user_id", k.user).Str("worker", k.worker).Str("path", c.Request().URL.Path).
		Str("client_ip", auth.ClientKey(c)).Msg("remote worker refused: " + msg)
	return c.JSON(http.StatusForbidden, errorReply{Detail: msg, Code: "forbidden"})
}

func badRequest(c echo.Context, format string, args ...any) error {
	return c.JSON(http.StatusBadRequest, errorReply{Detail: fmt.Sprintf(format, args...), Code: "bad_request"})
}

// unavailable answers a Redis failure: the worker retries.
func (s *Server) unavailable(c echo.Context, err error) error {
	s.log.Warn().Err(err).Str("path", c.Request().URL.Path).Msg("remote worker request failed on Redis")
	return c.JSON(http.StatusServiceUnavailable, errorReply{Detail: "Redis is unavailable: " + err.Error(), Code: "unavailable"})
}

// answer maps an error of the ownership checks or of Redis to its reply.
func (s *Server) answer(c echo.Context, k caller, err error) error {
	var fe *errForbidden
	if errors.As(err, &fe) {
		return s.forbidden(c, k, "%s", fe.msg)
	}
	var tm *errTooMany
	if errors.As(err, &tm) {
		s.log.Warn().Str("user_id", k.user).Str("worker", k.worker).Msg("remote worker refused: " + tm.msg)
		return c.JSON(http.StatusTooManyRequests, errorReply{Detail: tm.msg, Code: "too_many"})
	}
	return s.unavailable(c, err)
}

// bind decodes the JSON body (the gateway has already bounded its size).
func bind(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("the body is not the JSON this route takes: %v", err)
	}
	return nil
}

var nodeNameRe = regexp.MustCompile(`^[A-Za-z0-9_.@%+:-]{1,200}$`)

func (s *Server) hello(c echo.Context, k caller, req *helloRequest) error {
	if !nodeNameRe.MatchString(req.Hostname) || !strings.Contains(req.Hostname, "@") {
		return badRequest(c, "hostname %q is not a Celery node name (name@host, up to 200 of A-Z a-z 0-9 _ . @ %% + : -)", req.Hostname)
	}
	if len(req.Queues) == 0 || len(req.Queues) > 16 {
		return badRequest(c, "give 1 to 16 queues")
	}
	for _, q := range req.Queues {
		if !k.may(q) {
			return s.forbidden(c, k, "the key of user %q may consume only %s, not %q", k.user, strings.Join(k.allowed, " and "), q)
		}
	}
	ctx := c.Request().Context()
	k.worker = req.Hostname
	if err := s.claim(ctx, k); err != nil {
		return s.answer(c, k, err)
	}
	for _, q := range req.Queues {
		if err := s.broker.DeclareQueue(ctx, q); err != nil {
			return s.unavailable(c, err)
		}
	}
	s.log.Info().Str("user_id", k.user).Str("worker", req.Hostname).Strs("queues", req.Queues).
		Str("client_ip", auth.ClientKey(c)).Msg("remote worker connected")
	return c.JSON(http.StatusOK, helloReply{
		UserID: k.user, Queues: k.allowed,
		VisibilityTimeoutS: s.opts.VisibilityTimeout.Seconds(),
		MaxWaitS:           s.opts.MaxWait.Seconds(), MaxBatch: s.opts.MaxBatch, ConfirmS: s.opts.Confirm.Seconds(),
	})
}

// claimScript registers a node name for a user, or renews it when the user
// already has it; 0 when another user's key holds it.
var claimScript = redis.NewScript(1, `
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1`)

// claim registers (or renews) k.worker for k.user.
func (s *Server) claim(ctx context.Context, k caller) error {
	if k.worker == "" {
		return &errForbidden{"requests must name their worker in " + HeaderWorker}
	}
	conn, err := s.opts.Pool.GetContext(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	ok, err := redis.Int(claimScript.DoContext(ctx, conn, contract.RemoteWorkerKey(k.worker), k.user, int(workerTTL/time.Second)))
	if err != nil {
		return err
	}
	if ok != 1 {
		return &errForbidden{fmt.Sprintf("worker name %q is registered by another user's key", k.worker)}
	}
	return nil
}

func (s *Server) fetch(c echo.Context, k caller, req *fetchRequest) error {
	arrived := time.Now()
	if len(req.Queues) == 0 || len(req.Queues) > 16 {
		return badRequest(c, "give 1 to 16 queues")
	}
	for _, q := range req.Queues {
		if !k.may(q) {
			return s.forbidden(c, k, "the key of user %q may consume only %s, not %q", k.user, strings.Join(k.allowed, " and "), q)
		}
	}
	limit := min(max(req.Max, 1), s.opts.MaxBatch)
	wait := min(max(time.Duration(req.WaitMS)*time.Millisecond, 0), s.opts.MaxWait)
	ctx := c.Request().Context()
	// Until the worker confirms (its first lease refresh), a message's
	// lease is Confirm from expiring: if this answer never arrives, the
	// restorer brings the messages back soon rather than after the whole
	// visibility timeout. The short lease is written in the step that
	// holds them.
	consumer := s.broker.NewConsumer(req.Queues...)
	consumer.SetFirstLease(s.opts.Confirm)
	deadline := time.Now().Add(wait)
	var ds []*protocol.Delivery
	var err error
	for {
		slice := min(time.Until(deadline), fetchSlice)
		if slice <= 0 {
			slice = 10 * time.Millisecond // one non-blocking look
		}
		// Not cancelled with the request: a pop abandoned half way would
		// leave messages held under tags nobody knows (restored only after
		// the whole visibility timeout). A worker that left is noticed
		// between slices, and what the last slice took is restored below.
		ds, err = consumer.FetchN(context.WithoutCancel(ctx), slice, limit)
		if len(ds) > 0 || err != nil || ctx.Err() != nil || !time.Now().Before(deadline) {
			break
		}
	}
	var tags []string
	out := fetchReply{Deliveries: make([]wireDelivery, 0, len(ds))}
	for _, d := range ds {
		out.Deliveries = append(out.Deliveries, wireDelivery{Queue: d.Queue, Tag: d.Tag, Raw: d.Raw, Starts: d.Starts, DeadLettered: d.Tag == ""})
		if d.Tag != "" {
			tags = append(tags, d.Tag)
		}
	}
	if len(tags) > 0 {
		// The worker runs them only if it confirms them within Confirm of
		// their hold, which came at most a Redis round trip before this.
		ms := time.Since(arrived).Milliseconds()
		out.HeldAfterMS = &ms
	}
	if len(ds) == 0 && err != nil {
		return s.unavailable(c, err)
	}
	if ctx.Err() != nil && len(tags) > 0 {
		// The worker is gone: nobody will read this answer.
		s.restoreAll(tags, k, "the worker left during its long poll")
		return nil
	}
	if werr := c.JSON(http.StatusOK, out); werr != nil && len(tags) > 0 {
		s.restoreAll(tags, k, "the fetch answer could not be written")
		return nil
	}
	return nil
}

// restoreAll puts messages no worker received back on their queues.
func (s *Server) restoreAll(tags []string, k caller, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	for _, tag := range tags {
		if err := s.broker.Restore(ctx, tag); err != nil {
			s.log.Warn().Err(err).Str("delivery_tag", tag).Msg("could not restore an undelivered message; it returns after its unconfirmed lease")
			continue
		}
		n++
	}
	s.log.Warn().Str("user_id", k.user).Str("worker", k.worker).Int("restored", n).Msg(why + "; restored what it had fetched")
}

// heldMessage is a held message's unacked entry, read for an ownership
// check.
type heldMessage struct {
	raw    []byte
	queue  string
	taskID string
}

// owned reads the unacked entries of tags: a tag that is held must come
// from one of k's queues (else errForbidden); one that is not held maps to
// nil. The check reads before the change it guards, in a second step:
// delivery tags are random UUIDs that only the holder learns, so a tag
// held from k's queue now cannot be another user's a moment later.
func (s *Server) owned(ctx context.Context, k caller, tags ...string) (map[string]*heldMessage, error) {
	out := make(map[string]*heldMessage, len(tags))
	if len(tags) == 0 {
		return out, nil
	}
	args := make([]any, 0, len(tags)+1)
	args = append(args, s.opts.KeyPrefix+unackedKey)
	for _, t := range tags {
		if t == "" {
			return nil, &errForbidden{"an empty delivery tag"}
		}
		args = append(args, t)
	}
	conn, err := s.opts.Pool.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	vals, err := redis.ByteSlices(redis.DoContext(conn, ctx, "HMGET", args...))
	if err != nil {
		return nil, fmt.Errorf("read held messages: %w", err)
	}
	for i, v := range vals {
		tag := tags[i]
		if v == nil {
			out[tag] = nil
			continue
		}
		m, err := parseUnacked(v)
		if err != nil {
			return nil, &errForbidden{fmt.Sprintf("message %s is held in a form the gateway cannot check", tag)}
		}
		if !k.may(m.queue) {
			return nil, &errForbidden{fmt.Sprintf("message %s was not fetched from a queue of user %q", tag, k.user)}
		}
		out[tag] = m
	}
	return out, nil
}

// unackedKey is kombu's unacked hash (before the key prefix).
const unackedKey = "unacked"

// parseUnacked reads kombu's [envelope, exchange, routing_key] entry.
func parseUnacked(v []byte) (*heldMessage, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(v, &parts); err != nil || len(parts) != 3 {
		return nil, errors.New("not a [envelope, exchange, routing key] entry")
	}
	var rk string
	if err := json.Unmarshal(parts[2], &rk); err != nil {
		return nil, err
	}
	m := &heldMessage{raw: []byte(parts[0]), queue: rk}
	var env struct {
		Headers struct {
			ID string `json:"id"`
		} `json:"headers"`
	}
	if json.Unmarshal(parts[0], &env) == nil && env.Headers.ID != "" {
		m.taskID = env.Headers.ID
	} else if msg, err := protocol.Decode(parts[0]); err == nil {
		m.taskID = msg.ID // protocol v1: the id is in the body
	}
	return m, nil
}

// storeRequest checks a result meta against the held message it is for and
// returns what to store; nil when the message is no longer held (nothing
// can be checked, so nothing is stored).
func storeRequest(k caller, ws *wireStore, held map[string]*heldMessage) (*protocol.StoreRequest, error) {
	if ws == nil {
		return nil, nil
	}
	m := held[ws.Tag]
	if m == nil {
		return nil, nil
	}
	if ws.TaskID == "" || ws.TaskID != m.taskID {
		return nil, &errForbidden{fmt.Sprintf("a result for task %q cannot be stored through message %s, which holds task %q", ws.TaskID, ws.Tag, m.taskID)}
	}
	if !stateRe.MatchString(ws.State) {
		return nil, &errForbidden{fmt.Sprintf("unknown task state %q", ws.State)}
	}
	id, _ := json.Marshal(ws.TaskID)
	st, _ := json.Marshal(ws.State)
	if !bytes.HasPrefix(ws.Meta, append([]byte(`{"status":`), st...)) ||
		!bytes.HasSuffix(ws.Meta, append(append([]byte(`"task_id":`), id...), '}')) {
		return nil, &errForbidden{fmt.Sprintf("the result meta of task %s does not carry its state and task id", ws.TaskID)}
	}
	return &protocol.StoreRequest{TaskID: ws.TaskID, State: protocol.State(ws.State), Encoded: ws.Meta}, nil
}

func (s *Server) lease(c echo.Context, k caller, req *tagsRequest) error {
	if len(req.Tags) > maxTags {
		return badRequest(c, "at most %d tags per lease refresh", maxTags)
	}
	ctx := c.Request().Context()
	held, err := s.owned(ctx, k, req.Tags...)
	if err != nil {
		return s.answer(c, k, err)
	}
	tags := make([]string, 0, len(held))
	for tag, m := range held {
		if m != nil {
			tags = append(tags, tag)
		}
	}
	if err := s.broker.Touch(ctx, tags...); err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, countReply{N: len(tags), Tags: tags})
}

func (s *Server) held(c echo.Context, k caller, req *tagRequest) error {
	ctx := c.Request().Context()
	held, err := s.owned(ctx, k, req.Tag)
	if err != nil {
		return s.answer(c, k, err)
	}
	if held[req.Tag] == nil {
		return c.JSON(http.StatusOK, heldReply{})
	}
	ok, err := s.broker.Held(ctx, req.Tag)
	if err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, heldReply{Held: ok})
}

// restoreExpired runs the visibility-timeout restore for everyone (as any
// kombu consumer does), at most once per restoreEvery per gateway.
func (s *Server) restoreExpired(c echo.Context) error {
	s.restoreMu.Lock()
	if time.Since(s.lastRestore) < restoreEvery {
		s.restoreMu.Unlock()
		return c.JSON(http.StatusOK, countReply{})
	}
	s.lastRestore = time.Now()
	s.restoreMu.Unlock()
	n, err := s.broker.RestoreExpired(c.Request().Context())
	if err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, countReply{N: n})
}

func (s *Server) commit(c echo.Context, k caller, req *commitRequest) error {
	if len(req.Ops) == 0 || len(req.Ops) > maxOps {
		return badRequest(c, "give 1 to %d ops", maxOps)
	}
	ctx := c.Request().Context()
	var tags []string
	hasEvents := false
	for _, op := range req.Ops {
		switch op.Kind {
		case "s", "f":
			tags = append(tags, op.Tag)
			if op.Store != nil && op.Store.Tag != op.Tag {
				return badRequest(c, "a commit op stores through its own tag only")
			}
		case "p":
			hasEvents = true
		default:
			return badRequest(c, "unknown commit op %q", op.Kind)
		}
	}
	held, err := s.owned(ctx, k, tags...)
	if err != nil {
		return s.answer(c, k, err)
	}
	if hasEvents {
		if err := s.worker(ctx, k); err != nil {
			return s.answer(c, k, err)
		}
	}
	ops := make([]protocol.CommitOp, len(req.Ops))
	for i, op := range req.Ops {
		switch op.Kind {
		case "p":
			ch, err := s.eventChannel(k, op.RoutingKey, op.Payload)
			if err != nil {
				return s.answer(c, k, err)
			}
			ops[i] = protocol.CommitOp{Kind: protocol.CommitPublish, Channel: ch, Payload: op.Payload}
		default:
			st, err := storeRequest(k, op.Store, held)
			if err != nil {
				return s.answer(c, k, err)
			}
			ops[i] = protocol.CommitOp{Kind: protocol.CommitKind(op.Kind[0]), Tag: op.Tag, Store: st, Starts: op.Starts}
		}
	}
	status, err := s.broker.Commit(ctx, s.backend, ops)
	if err != nil {
		var ee *protocol.CommitEncodeError
		if errors.As(err, &ee) {
			return badRequest(c, "%v", err)
		}
		return s.unavailable(c, err)
	}
	out := commitReply{Status: make([]int, len(status))}
	for i, st := range status {
		out.Status[i] = int(st)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) ack(c echo.Context, k caller, req *tagRequest) error {
	ctx := c.Request().Context()
	if _, err := s.owned(ctx, k, req.Tag); err != nil {
		return s.answer(c, k, err)
	}
	ok, err := s.broker.Ack(ctx, req.Tag)
	if err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, heldReply{Held: ok})
}

func (s *Server) restore(c echo.Context, k caller, req *tagRequest) error {
	ctx := c.Request().Context()
	if _, err := s.owned(ctx, k, req.Tag); err != nil {
		return s.answer(c, k, err)
	}
	restore := s.broker.Restore
	if req.Started {
		restore = s.broker.RestoreStarted
	}
	if err := restore(ctx, req.Tag); err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, heldReply{})
}

func (s *Server) forward(c echo.Context, k caller, req *forwardRequest) error {
	if !k.may(req.Queue) {
		return s.forbidden(c, k, "the key of user %q may forward only to %s, not %q", k.user, strings.Join(k.allowed, " and "), req.Queue)
	}
	ctx := c.Request().Context()
	if _, err := s.owned(ctx, k, req.Tag); err != nil {
		return s.answer(c, k, err)
	}
	ok, err := s.broker.Forward(ctx, req.Tag, req.Queue, req.Envelope, req.Priority)
	if err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, heldReply{Held: ok})
}

func (s *Server) publish(c echo.Context, k caller, req *publishRequest) error {
	if !k.may(req.Queue) {
		return s.forbidden(c, k, "the key of user %q may publish only to %s, not %q", k.user, strings.Join(k.allowed, " and "), req.Queue)
	}
	if _, err := protocol.Decode(req.Envelope); err != nil {
		return badRequest(c, "the envelope is not a task message: %v", err)
	}
	if err := s.broker.Publish(c.Request().Context(), req.Queue, req.Envelope, req.Priority); err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, heldReply{})
}

func (s *Server) deadLetter(c echo.Context, k caller, req *deadLetterRequest) error {
	ctx := c.Request().Context()
	held, err := s.owned(ctx, k, req.Tag)
	if err != nil {
		return s.answer(c, k, err)
	}
	m := held[req.Tag]
	if m == nil {
		return c.JSON(http.StatusOK, heldReply{})
	}
	if err := s.broker.DeadLetter(ctx, &protocol.Delivery{Queue: m.queue, Raw: m.raw, Tag: req.Tag}, limitString(req.Reason, 200)); err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, heldReply{Held: true})
}

func (s *Server) poison(c echo.Context, k caller, req *poisonRequest) error {
	if req.Store != nil && req.Store.Tag != req.Tag {
		return badRequest(c, "a poison request stores through its own tag only")
	}
	ctx := c.Request().Context()
	held, err := s.owned(ctx, k, req.Tag)
	if err != nil {
		return s.answer(c, k, err)
	}
	m := held[req.Tag]
	if m == nil {
		return c.JSON(http.StatusOK, heldReply{})
	}
	st, err := storeRequest(k, req.Store, held)
	if err != nil {
		return s.answer(c, k, err)
	}
	ok, err := s.broker.Poison(ctx, s.backend, &protocol.Delivery{Queue: m.queue, Raw: m.raw, Tag: req.Tag}, st, limitString(req.Reason, 500))
	if err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, heldReply{Held: ok})
}

// store writes a state (progress, RETRY, REVOKED ...) of the task of a
// held message.
func (s *Server) store(c echo.Context, k caller, req *wireStore) error {
	ctx := c.Request().Context()
	held, err := s.owned(ctx, k, req.Tag)
	if err != nil {
		return s.answer(c, k, err)
	}
	if held[req.Tag] == nil {
		return s.forbidden(c, k, "message %s is not held, so a result for task %q cannot be checked against it", req.Tag, req.TaskID)
	}
	st, err := storeRequest(k, req, held)
	if err != nil {
		return s.answer(c, k, err)
	}
	if err := s.backend.Store(ctx, *st); err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(http.StatusOK, heldReply{Held: true})
}

// events publishes the worker's events (heartbeats, task events) on the
// events channel, on its behalf. A heartbeat renews its node name.
func (s *Server) events(c echo.Context, k caller, req *eventsRequest) error {
	if len(req.Events) == 0 || len(req.Events) > maxOps {
		return badRequest(c, "give 1 to %d events", maxOps)
	}
	ctx := c.Request().Context()
	if err := s.claim(ctx, k); err != nil {
		return s.answer(c, k, err)
	}
	conn, err := s.opts.Pool.GetContext(ctx)
	if err != nil {
		return s.unavailable(c, err)
	}
	defer conn.Close()
	for _, ev := range req.Events {
		ch, err := s.eventChannel(k, ev.RoutingKey, ev.Envelope)
		if err != nil {
			return s.answer(c, k, err)
		}
		_ = conn.Send("PUBLISH", ch, ev.Envelope)
	}
	if err := conn.Flush(); err != nil {
		return s.unavailable(c, err)
	}
	for range req.Events {
		if _, err := conn.Receive(); err != nil {
			return s.unavailable(c, err)
		}
	}
	for _, ev := range req.Events {
		if ev.RoutingKey == "worker.offline" {
			s.closeRelay(k) // the worker stopped: nobody polls for control any more
		}
	}
	return c.JSON(http.StatusOK, countReply{N: len(req.Events)})
}

// worker checks that k's key registered the node name it speaks for.
func (s *Server) worker(ctx context.Context, k caller) error {
	if k.worker == "" {
		return &errForbidden{"requests must name their worker in " + HeaderWorker}
	}
	conn, err := s.opts.Pool.GetContext(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	owner, err := redis.String(redis.DoContext(conn, ctx, "GET", contract.RemoteWorkerKey(k.worker)))
	if errors.Is(err, redis.ErrNil) || (err == nil && owner != k.user) {
		return &errForbidden{fmt.Sprintf("worker name %q is not registered by this key (say hello first)", k.worker)}
	}
	return err
}

var stateRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,63}$`)

var eventRKRe = regexp.MustCompile(`^(worker|task)\.[a-z]+$`)

// eventChannel checks an event a worker sends (a worker-* or task-* event,
// as its own node name) and returns the channel to publish it on.
func (s *Server) eventChannel(k caller, rk string, envelope []byte) (string, error) {
	if !eventRKRe.MatchString(rk) {
		return "", &errForbidden{fmt.Sprintf("%q is not a worker or task event", rk)}
	}
	var env struct {
		Body    string `json:"body"`
		Headers struct {
			Hostname string `json:"hostname"`
		} `json:"headers"`
		Properties struct {
			DeliveryInfo struct {
				Exchange   string `json:"exchange"`
				RoutingKey string `json:"routing_key"`
			} `json:"delivery_info"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(envelope, &env); err != nil {
		return "", &errForbidden{"an event envelope that is not JSON"}
	}
	if env.Headers.Hostname != k.worker || env.Properties.DeliveryInfo.RoutingKey != rk {
		return "", &errForbidden{fmt.Sprintf("an event must come from the worker %q that sends it, with its own routing key", k.worker)}
	}
	body, err := base64.StdEncoding.DecodeString(env.Body)
	if err != nil {
		return "", &errForbidden{"an event body that is not base64"}
	}
	var one struct {
		Hostname string `json:"hostname"`
	}
	var many []struct {
		Hostname string `json:"hostname"`
	}
	switch {
	case json.Unmarshal(body, &one) == nil:
		many = append(many, one)
	case json.Unmarshal(body, &many) == nil:
	default:
		return "", &errForbidden{"an event body that is not a JSON object or list"}
	}
	for _, e := range many {
		if e.Hostname != k.worker {
			return "", &errForbidden{fmt.Sprintf("an event names worker %q, not %q that sends it", e.Hostname, k.worker)}
		}
	}
	return s.eventPrefix + rk, nil
}

func limitString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
