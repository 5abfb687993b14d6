package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol"
)

// registerControl wires the pidbox commands of celery/worker/control.py
// that make sense for this worker; reply shapes are Python's.
func (s *Server) registerControl() {
	h := map[string]protocol.ControlHandler{
		"ping":            func(context.Context, *protocol.ControlRequest) (any, error) { return ok("pong"), nil },
		"clock":           s.ctlClock,
		"stats":           s.ctlStats,
		"active":          s.ctlActive,
		"reserved":        s.ctlReserved,
		"scheduled":       s.ctlScheduled,
		"revoked":         s.ctlRevokedList,
		"registered":      s.ctlRegistered,
		"active_queues":   s.ctlActiveQueues,
		"conf":            s.ctlConf,
		"query_task":      s.ctlQueryTask,
		"report":          s.ctlReport,
		"revoke":          s.ctlRevoke,
		"terminate":       s.ctlTerminate,
		"add_consumer":    s.ctlAddConsumer,
		"cancel_consumer": s.ctlCancelConsumer,
		"enable_events":   s.ctlEnableEvents,
		"disable_events":  s.ctlDisableEvents,
		"heartbeat":       s.ctlHeartbeat,
		"shutdown":        s.ctlShutdown,
		"hello":           s.ctlHello,
		"rate_limit":      s.ctlRateLimit,
		"time_limit":      s.ctlTimeLimit,
		"pool_grow":       s.ctlPoolGrow,
		"pool_shrink":     s.ctlPoolShrink,
		"autoscale":       s.ctlAutoscale,
	}
	// Python's aliases.
	h["dump_conf"], h["dump_schedule"], h["dump_reserved"] = h["conf"], h["scheduled"], h["reserved"]
	h["dump_active"], h["dump_revoked"], h["dump_tasks"] = h["active"], h["revoked"], h["registered"]
	for _, name := range []string{"pool_restart", "election", "memsample", "memdump", "objgraph", "revoke_by_stamped_headers"} {
		h[name] = unsupported(name)
	}
	for name, fn := range h {
		s.tr.HandleControl(name, fn)
	}
}

func ok(v any) map[string]any  { return map[string]any{"ok": v} }
func nok(v any) map[string]any { return map[string]any{"error": v} }

func unsupported(name string) protocol.ControlHandler {
	return func(context.Context, *protocol.ControlRequest) (any, error) {
		return nok(fmt.Sprintf("%s is not supported by the Go worker", name)), nil
	}
}

// runMailbox serves remote control until ctx ends.
func (s *Server) runMailbox(ctx context.Context) {
	if err := s.tr.RunControl(ctx); err != nil && ctx.Err() == nil {
		s.log.Error().Err(err).Msg("remote control mailbox stopped")
	}
}

func (s *Server) ctlClock(context.Context, *protocol.ControlRequest) (any, error) {
	return map[string]any{"clock": s.tr.Clock()}, nil
}

// requests returns held requests in the given states, oldest first.
func (s *Server) requests(states ...reqState) []*request {
	var out []*request
	for _, r := range s.snapshot() {
		st := r.getState()
		for _, want := range states {
			if st == want {
				out = append(out, r)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].received.Before(out[j].received) })
	return out
}

func (s *Server) infos(rs []*request, safe bool) []any {
	out := make([]any, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.info(s.cfg.Hostname, s.pid, safe))
	}
	return out
}

func (s *Server) ctlActive(_ context.Context, req *protocol.ControlRequest) (any, error) {
	return s.infos(s.requests(stateActive), argBool(req.Arguments["safe"])), nil
}

func (s *Server) ctlReserved(context.Context, *protocol.ControlRequest) (any, error) {
	return s.infos(s.requests(stateReserved), false), nil
}

func (s *Server) ctlScheduled(context.Context, *protocol.ControlRequest) (any, error) {
	out := []any{}
	for _, r := range s.requests(stateScheduled) {
		if r.msg.ETA == nil {
			continue // waiting for its rate limit: Python lists those nowhere
		}
		out = append(out, map[string]any{
			"eta":      isoOrNil(r.msg.ETA),
			"priority": 6, // Python's timer priority for ETA entries
			"request":  r.info(s.cfg.Hostname, s.pid, false),
		})
	}
	return out, nil
}

func (s *Server) ctlRevokedList(context.Context, *protocol.ControlRequest) (any, error) {
	ids, _ := s.revoked.Snapshot(s.cfg.Clock.Now())
	if ids == nil {
		ids = []string{}
	}
	return ids, nil
}

// ctlRegistered is control.registered: task names, each followed by the
// requested attributes that are set ("diag.echo [rate_limit=10/m]"); by
// default exchange, routing_key and rate_limit, of which only rate_limit
// can be set here.
func (s *Server) ctlRegistered(_ context.Context, req *protocol.ControlRequest) (any, error) {
	items := argStrings(req.Arguments["taskinfoitems"])
	if len(items) == 0 {
		items = []string{"exchange", "routing_key", "rate_limit"}
	}
	out := []any{}
	for _, name := range s.mux.Names() {
		a, _ := s.mux.taskAttrs(name)
		var fields []string
		for _, item := range items {
			if v := a.pyStr(item); v != "" {
				fields = append(fields, item+"="+v)
			}
		}
		if len(fields) > 0 {
			name += " [" + strings.Join(fields, " ") + "]"
		}
		out = append(out, name)
	}
	return out, nil
}

// ctlRateLimit is control.rate_limit: validate with rate(), set the task's
// rate_limit, and reset the buckets; the replies are Python's.
func (s *Server) ctlRateLimit(_ context.Context, req *protocol.ControlRequest) (any, error) {
	name := argString(req.Arguments["task_name"])
	limit := argNumberString(req.Arguments["rate_limit"])
	if _, err := ParseRate(limit); err != nil {
		var re *rateError
		if errors.As(err, &re) && re.te.ExcType == "KeyError" {
			// Python's rate() raises KeyError for a bad unit, which
			// the command does not catch: the mailbox answers repr(exc).
			return nok(excRepr(re.te)), nil
		}
		return nok("Invalid rate limit string: " + excRepr(re.te)), nil
	}
	if !s.mux.updateAttrs(name, func(a *taskAttrs) { a.rateLimit = limit }) {
		s.log.Error().Str("task", name).Msg("Rate limit attempt for unknown task")
		return nok("unknown task"), nil
	}
	if limit == "" {
		s.log.Info().Str("task", name).Msg("rate limits disabled for tasks of this type")
		return ok("rate limit disabled successfully"), nil
	}
	s.log.Info().Str("task", name).Str("rate_limit", limit).Msg("new rate limit for tasks of this type")
	return ok("new rate limit set successfully"), nil
}

// ctlTimeLimit is control.time_limit: set (or, with null, clear) the
// task's soft and hard limits for messages that carry none.
func (s *Server) ctlTimeLimit(_ context.Context, req *protocol.ControlRequest) (any, error) {
	name := argString(req.Arguments["task_name"])
	hard, herr := argLimit(req.Arguments["hard"])
	soft, serr := argLimit(req.Arguments["soft"])
	if herr != nil || serr != nil {
		return nok(fmt.Sprintf("time limits must be numbers of seconds or null, got soft=%v hard=%v", req.Arguments["soft"], req.Arguments["hard"])), nil
	}
	if !s.mux.updateAttrs(name, func(a *taskAttrs) { a.hard, a.soft = hard, soft }) {
		s.log.Error().Str("task", name).Msg("Change time limit attempt for unknown task")
		return nok("unknown task"), nil
	}
	s.log.Info().Str("task", name).Str("soft", string(soft)).Str("hard", string(hard)).Msg("new time limits for tasks of this type")
	return ok("time limits set successfully"), nil
}

// argLimit reads a time limit argument: a number (kept as written) or null.
func argLimit(v any) (json.Number, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case json.Number:
		if _, err := x.Float64(); err != nil {
			return "", err
		}
		return x, nil
	case float64:
		return pyFloatNumber(x), nil
	case string:
		if x == "" {
			return "", nil
		}
		if _, err := strconv.ParseFloat(x, 64); err != nil {
			return "", err
		}
		return json.Number(x), nil
	}
	return "", fmt.Errorf("not a number: %T", v)
}

// argNumberString reads a string argument that Python may also get as a
// number (rate_limit=10).
func argNumberString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case float64:
		return pyfmt.FloatRepr(x)
	}
	return ""
}

// ctlActiveQueues is kombu's Queue.as_dict(recurse=True) for each queue
// consumed, with the default direct exchange named after the queue.
func (s *Server) ctlActiveQueues(context.Context, *protocol.ControlRequest) (any, error) {
	out := []any{}
	for _, q := range s.queues() {
		out = append(out, map[string]any{
			"name": q,
			"exchange": map[string]any{
				"name": q, "type": "direct", "arguments": nil, "durable": true,
				"passive": false, "auto_delete": false, "delivery_mode": nil, "no_declare": false,
			},
			"routing_key": q, "queue_arguments": nil, "binding_arguments": nil,
			"consumer_arguments": nil, "durable": true, "exclusive": false,
			"auto_delete": false, "no_ack": false, "alias": nil, "bindings": []any{},
			"no_declare": nil, "expires": nil, "message_ttl": nil, "max_length": nil,
			"max_length_bytes": nil, "max_priority": nil,
		})
	}
	return out, nil
}

func (s *Server) ctlStats(context.Context, *protocol.ControlRequest) (any, error) {
	s.mu.Lock()
	total := make(map[string]any, len(s.total))
	for k, v := range s.total {
		total[k] = v
	}
	uptime := s.cfg.Clock.Now().Sub(s.startTime).Round(time.Second).Seconds()
	s.mu.Unlock()
	stats := map[string]any{}
	for k, v := range s.cfg.Info {
		stats[k] = v
	}
	for k, v := range map[string]any{
		"total":          total,
		"pid":            s.pid,
		"clock":          strconv.FormatInt(s.tr.Clock(), 10),
		"uptime":         int64(uptime),
		"pool":           s.poolStats(),
		"broker":         s.brokerInfo(),
		"prefetch_count": s.prefetchCount(),
		"rusage":         rusage(),
		"sw_ident":       s.cfg.SWIdent,
		"sw_ver":         s.cfg.SWVersion,
	} {
		stats[k] = v
	}
	return stats, nil
}

// brokerInfo is kombu's Connection.info(), without the password.
func (s *Server) brokerInfo() map[string]any {
	info := map[string]any{
		"hostname": "localhost", "userid": nil, "virtual_host": strconv.Itoa(s.db), "port": 6379,
		"insist": false, "ssl": false, "transport": "redis", "connect_timeout": 4,
		"transport_options": map[string]any{"visibility_timeout": int64(s.cfg.VisibilityTimeout / time.Second)},
		"login_method":      nil, "uri_prefix": nil, "heartbeat": json.Number("120.0"),
		"failover_strategy": "round-robin", "alternates": []any{},
	}
	if u, err := url.Parse(s.cfg.RedisURL); err == nil {
		if h := u.Hostname(); h != "" {
			info["hostname"] = h
		}
		if p, err := strconv.Atoi(u.Port()); err == nil {
			info["port"] = p
		}
		if u.User != nil && u.User.Username() != "" {
			info["userid"] = u.User.Username()
		}
		info["ssl"] = u.Scheme == "rediss"
		if u.Scheme == "sentinel" {
			info["transport"] = "sentinel"
		}
	}
	return info
}

func (s *Server) ctlConf(context.Context, *protocol.ControlRequest) (any, error) {
	return map[string]any{
		"broker_url":               redactURL(s.cfg.RedisURL),
		"result_backend":           redactURL(s.cfg.RedisURL),
		"task_serializer":          "json",
		"accept_content":           []any{"json"},
		"result_serializer":        "json",
		"timezone":                 "UTC",
		"enable_utc":               true,
		"task_track_started":       true,
		"task_acks_late":           true,
		"worker_concurrency":       s.cfg.Concurrency,
		"worker_send_task_events":  s.taskEvents.Load(),
		"result_expires":           int64(s.cfg.ResultExpires / time.Second),
		"broker_transport_options": map[string]any{"visibility_timeout": int64(s.cfg.VisibilityTimeout / time.Second)},
	}, nil
}

func (s *Server) ctlQueryTask(_ context.Context, req *protocol.ControlRequest) (any, error) {
	ids := argStrings(req.Arguments["ids"])
	out := map[string]any{}
	for _, r := range s.requests(stateReserved, stateScheduled, stateActive) {
		if !contains(ids, r.msg.ID) {
			continue
		}
		state := "reserved"
		if r.getState() == stateActive {
			state = "active"
		}
		out[r.msg.ID] = []any{state, r.info(s.cfg.Hostname, s.pid, false)}
	}
	return out, nil
}

func (s *Server) ctlReport(context.Context, *protocol.ControlRequest) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nsoftware -> %s:%s go:%s\n", s.cfg.SWIdent, s.cfg.SWVersion, strings.TrimPrefix(runtime.Version(), "go"))
	fmt.Fprintf(&b, "platform -> system:%s arch:%s\n", swSys(), runtime.GOARCH)
	fmt.Fprintf(&b, "settings -> transport:redis results:%s\n\n", redactURL(s.cfg.RedisURL))
	fmt.Fprintf(&b, "queues: %s\nconcurrency: %d\nprefetch: %d\nvisibility_timeout: %s\n",
		strings.Join(s.queues(), ","), s.cfg.Concurrency, s.cfg.Prefetch, s.cfg.VisibilityTimeout)
	return ok(b.String()), nil
}

func (s *Server) ctlRevoke(_ context.Context, req *protocol.ControlRequest) (any, error) {
	a := req.Arguments
	return s.doRevoke(argStrings(a["task_id"]), argBool(a["terminate"]), argString(a["signal"])), nil
}

func (s *Server) ctlTerminate(_ context.Context, req *protocol.ControlRequest) (any, error) {
	a := req.Arguments
	return s.doRevoke(argStrings(a["task_id"]), true, argString(a["signal"])), nil
}

// doRevoke is control.revoke: remember the ids (checked at receipt and
// before execution), wake ETA waiters, and with terminate cancel the
// running handlers, whose tasks become REVOKED "terminated".
func (s *Server) doRevoke(ids []string, terminate bool, signal string) map[string]any {
	s.revoked.Add(s.cfg.Clock.Now(), ids...)
	var terminated []string
	for _, r := range s.snapshot() {
		if !contains(ids, r.msg.ID) {
			continue
		}
		r.wakeUp()
		if terminate && !contains(terminated, r.msg.ID) {
			terminated = append(terminated, r.msg.ID)
			if r.requestTerminate(signum(signal)) {
				r.log.Info().Int("signum", signum(signal)).Msg("terminating task (revoke with terminate)")
			}
		}
	}
	if terminate {
		if len(terminated) == 0 {
			return ok("terminate: tasks unknown")
		}
		return ok("terminate: " + strings.Join(terminated, ", "))
	}
	s.log.Info().Strs("task_ids", ids).Msg("tasks flagged as revoked")
	return ok(fmt.Sprintf("tasks %s flagged as revoked", strings.Join(ids, ", ")))
}

func (s *Server) ctlAddConsumer(ctx context.Context, req *protocol.ControlRequest) (any, error) {
	q := argString(req.Arguments["queue"])
	if q == "" {
		return nok("add_consumer needs a queue name"), nil
	}
	if err := s.tr.DeclareQueue(ctx, q); err != nil {
		return nok(fmt.Sprintf("cannot declare queue %s: %v", q, err)), nil
	}
	s.tr.AddQueue(q)
	s.log.Info().Str("queue", q).Msg("started consuming from queue (remote add_consumer)")
	return ok("add consumer " + q), nil
}

// ctlCancelConsumer replies only once no fetch can take from the queue any
// more, so that nothing is taken from it after the reply.
func (s *Server) ctlCancelConsumer(ctx context.Context, req *protocol.ControlRequest) (any, error) {
	q := argString(req.Arguments["queue"])
	if q == "" {
		return nok("cancel_consumer needs a queue name"), nil
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.tr.RemoveQueueWait(wctx, q); err != nil {
		s.log.Warn().Err(err).Str("queue", q).Msg("cancel_consumer: a fetch from the queue did not end in time")
	}
	s.log.Info().Str("queue", q).Msg("stopped consuming from queue (remote cancel_consumer)")
	return ok("no longer consuming from " + q), nil
}

func (s *Server) ctlEnableEvents(context.Context, *protocol.ControlRequest) (any, error) {
	if s.taskEvents.CompareAndSwap(false, true) {
		s.log.Info().Msg("task events enabled by remote")
		return ok("task events enabled"), nil
	}
	return ok("task events already enabled"), nil
}

func (s *Server) ctlDisableEvents(context.Context, *protocol.ControlRequest) (any, error) {
	if s.taskEvents.CompareAndSwap(true, false) {
		s.log.Info().Msg("task events disabled by remote")
		return ok("task events disabled"), nil
	}
	return ok("task events already disabled"), nil
}

func (s *Server) ctlHeartbeat(ctx context.Context, _ *protocol.ControlRequest) (any, error) {
	s.workerEvent(ctx, "worker-heartbeat", 5)
	return nil, nil
}

func (s *Server) ctlShutdown(_ context.Context, req *protocol.ControlRequest) (any, error) {
	msg := argString(req.Arguments["msg"])
	if msg == "" {
		msg = "Got shutdown from remote"
	}
	s.log.Warn().Msg(msg)
	s.Shutdown()
	return nil, protocol.ErrNoReply
}

// ctlHello answers mingle: share the revoked set (timestamps as floats,
// which Python's LimitedSet insists on) and the clock.
func (s *Server) ctlHello(_ context.Context, req *protocol.ControlRequest) (any, error) {
	from := argString(req.Arguments["from_node"])
	if from == s.cfg.Hostname {
		return nil, nil
	}
	now := s.cfg.Clock.Now()
	if theirs, ok := req.Arguments["revoked"].(map[string]any); ok {
		for id := range theirs {
			s.revoked.Add(now, id)
		}
	}
	ids, at := s.revoked.Snapshot(now)
	revoked := make(map[string]any, len(ids))
	for i, id := range ids {
		revoked[id] = pyFloatNumber(float64(at[i].UnixNano()) / 1e9)
	}
	return map[string]any{"revoked": revoked, "clock": s.tr.Clock()}, nil
}

func argString(v any) string {
	s, _ := v.(string)
	return s
}

// argStrings reads an id argument: one string or a list (variadic CLI args).
func argStrings(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []string:
		return x
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func argBool(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case string:
		b, _ := strconv.ParseBool(strings.ToLower(x))
		return b || strings.EqualFold(x, "yes") || strings.EqualFold(x, "on")
	case json.Number:
		return x != "0"
	}
	return false
}

// signum maps a signal name ("SIGTERM", "TERM", "KILL", "9") to its number;
// the default is SIGTERM, as in Celery.
func signum(name string) int {
	name = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(name)), "SIG")
	if n, err := strconv.Atoi(name); err == nil && n > 0 {
		return n
	}
	switch name {
	case "KILL":
		return int(syscall.SIGKILL)
	case "INT":
		return int(syscall.SIGINT)
	case "HUP":
		return int(syscall.SIGHUP)
	case "QUIT":
		return int(syscall.SIGQUIT)
	case "USR1":
		return int(syscall.SIGUSR1)
	case "USR2":
		return int(syscall.SIGUSR2)
	}
	return int(syscall.SIGTERM)
}

// redactURL hides the passwords of a Redis URL.
func redactURL(raw string) string { return protocol.RedactURL(raw) }
