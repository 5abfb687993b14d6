package protocol

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol/internal/fanout"
)

// mailboxMaxInFlight bounds the handlers running at once, so that a flood
// of requests cannot start unbounded goroutines; further requests wait.
const mailboxMaxInFlight = 64

// Mailbox is a worker's pidbox node (kombu.pidbox.Node): it PSUBSCRIBEs
// /{db}.celery.pidbox, honours destination/pattern/matcher, runs handlers
// and replies to reply.celery.pidbox as kombu does, so that `celery
// inspect`, `celery control`, Flower and app.control see the Go worker.
type Mailbox struct {
	pool     *redis.Pool
	hostname string
	prefix   string // kombu global_keyprefix
	channel  string
	binding  string
	clock    *LamportClock
	log      zerolog.Logger

	mu       sync.RWMutex
	handlers map[string]ControlHandler
	running  atomic.Bool

	ready     chan struct{}
	readyOnce sync.Once
}

// NewMailbox creates the mailbox node for hostname (e.g. "celery@host") on
// database db. keyPrefix is kombu's global_keyprefix. Give it the
// EventDispatcher's clock with WithClock, as a Python worker shares
// app.clock.
func NewMailbox(pool *redis.Pool, db int, hostname, keyPrefix string, opts ...NodeOption) *Mailbox {
	cfg := newNodeConfig(opts)
	return &Mailbox{
		pool:     pool,
		hostname: hostname,
		prefix:   keyPrefix,
		channel:  keyPrefix + fanoutChannel(db, pidboxExchange),
		binding:  pidboxBinding(hostname),
		clock:    cfg.clock,
		log:      cfg.log.With().Str("component", "pidbox").Str("hostname", hostname).Logger(),
		handlers: make(map[string]ControlHandler),
		ready:    make(chan struct{}),
	}
}

// Ready is closed once the mailbox is first subscribed: from then on no
// control request is missed (fanout delivery is at-most-once), so a worker
// announces itself after it.
func (m *Mailbox) Ready() <-chan struct{} { return m.ready }

// Handle registers the handler for method, replacing any earlier one. It
// may be called while Run runs.
func (m *Mailbox) Handle(method string, h ControlHandler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h == nil {
		delete(m.handlers, method)
		return
	}
	m.handlers[method] = h
}

// Run serves requests until ctx is done, reconnecting with backoff when the
// connection is lost. Each request runs in its own goroutine, so that a
// slow inspect does not hold up a revoke; their context is ctx, and Run
// waits for them before it returns, so handlers must honour ctx. At most 64
// run at once; more requests wait. It returns nil when ctx is done.
func (m *Mailbox) Run(ctx context.Context) error {
	if m.pool == nil {
		return errors.New("protocol: mailbox: nil redis pool")
	}
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("protocol: mailbox: Run is already running")
	}
	defer m.running.Store(false)

	var wg sync.WaitGroup
	sem := make(chan struct{}, mailboxMaxInFlight)
	sub := fanoutSubscriber{
		pool:    m.pool,
		pattern: m.channel,
		log:     m.log,
		onReady: func(ctx context.Context) {
			m.register(ctx)
			m.readyOnce.Do(func() { close(m.ready) })
		},
		onMessage: func(ctx context.Context, _ string, data []byte) {
			req, ok := m.accept(data)
			if !ok {
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			// Add happens on the subscriber's reader goroutine, which
			// sub.run waits for, so it never races with wg.Wait below.
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				m.serve(ctx, req)
			}()
		},
	}
	sub.run(ctx)
	wg.Wait()
	m.unregister(ctx)
	return nil
}

// register writes the queue binding a Python worker declares for its
// mailbox. Fanout delivery does not read it, but tools do. It dials afresh:
// right after a reconnect, pooled connections may still be the dead ones.
func (m *Mailbox) register(ctx context.Context) {
	conn, err := dialFanout(ctx, m.pool)
	if err == nil {
		defer conn.Close()
		_, err = redis.DoContext(conn, ctx, "SADD", m.prefix+bindingKey(pidboxExchange), m.binding)
	}
	if err != nil && ctx.Err() == nil {
		m.log.Warn().Err(err).Msg("cannot declare the pidbox binding")
	}
}

// unregister removes the binding, as kombu does for an auto_delete queue.
func (m *Mailbox) unregister(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	conn, err := m.pool.GetContext(ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = redis.DoContext(conn, ctx, "SREM", m.prefix+bindingKey(pidboxExchange), m.binding)
}

// accept decodes a request and decides, as Node.handle_message does,
// whether this node runs it. Bad requests are logged and dropped.
func (m *Mailbox) accept(data []byte) (*ControlRequest, bool) {
	msg, err := fanout.ParseEnvelope(data)
	if err != nil {
		m.log.Warn().Err(err).Msg("dropping undecodable pidbox message")
		return nil, false
	}
	// The Celery worker forwards its clock on every control message, and
	// kombu's Node adjusts it to the sender's.
	m.clock.forward()
	if c, ok := fanout.AsInt(msg.Headers["clock"]); ok {
		m.clock.adjust(c)
	}
	req, err := parseControlRequest(msg.Body)
	if err != nil {
		m.log.Warn().Err(err).Msg("dropping invalid pidbox request")
		return nil, false
	}
	if !pidboxSelects(m.hostname, req) {
		return nil, false
	}
	// The sender stops listening at expires; a reply after that only
	// leaves garbage in a dead reply list.
	if exp, ok := fanout.AsFloat(msg.Headers["expires"]); ok && exp > 0 && exp < float64(time.Now().UnixMicro())/1e6 {
		m.log.Debug().Str("method", req.Method).Msg("dropping expired pidbox request")
		return nil, false
	}
	return req, true
}

// serve runs one request and sends its reply.
func (m *Mailbox) serve(ctx context.Context, req *ControlRequest) {
	reply, err := m.call(ctx, req)
	if errors.Is(err, ErrNoReply) {
		return
	}
	if err != nil {
		m.log.Error().Err(err).Str("method", req.Method).Msg("pidbox command error")
		reply = map[string]any{"error": "Error(" + pyfmt.StrRepr(err.Error()) + ")"}
	}
	if req.ReplyTo == nil {
		return
	}
	if err := m.reply(ctx, req, reply); err != nil && ctx.Err() == nil {
		m.log.Warn().Err(err).Str("method", req.Method).Msg("cannot send pidbox reply")
	}
}

// call runs the handler; a panic becomes an error so that a buggy handler
// cannot take the worker down.
func (m *Mailbox) call(ctx context.Context, req *ControlRequest) (reply any, err error) {
	m.mu.RLock()
	h := m.handlers[req.Method]
	m.mu.RUnlock()
	if h == nil {
		m.log.Warn().Str("method", req.Method).Msg("no such control command")
		return map[string]any{"error": "KeyError(" + pyfmt.StrRepr(req.Method) + ")"}, nil
	}
	defer func() {
		if p := recover(); p != nil {
			reply, err = nil, fmt.Errorf("control handler %q panicked: %v", req.Method, p)
		}
	}()
	return h(ctx, req)
}

// reply sends {hostname: reply} to the reply queues bound to
// reply_to.routing_key on the direct exchange reply_to.exchange.
func (m *Mailbox) reply(ctx context.Context, req *ControlRequest, reply any) error {
	body, err := fanout.Marshal(fanoutObject{{m.hostname, reply}})
	if err != nil {
		m.log.Error().Err(err).Str("method", req.Method).Msg("control reply cannot be encoded as JSON")
		body, err = fanout.Marshal(fanoutObject{{m.hostname, map[string]any{"error": "cannot encode reply: " + err.Error()}}})
		if err != nil {
			return err
		}
	}
	ex, rk := req.ReplyTo.Exchange, req.ReplyTo.RoutingKey
	conn, err := m.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("get redis connection: %w", err)
	}
	defer conn.Close()
	members, err := redis.Strings(redis.DoContext(conn, ctx, "SMEMBERS", m.prefix+bindingKey(ex)))
	if err != nil {
		return fmt.Errorf("SMEMBERS _kombu.binding.%s: %w", ex, err)
	}
	var queues []string
	for _, member := range members {
		parts := strings.Split(member, sep)
		if len(parts) == 3 && parts[0] == rk && !slices.Contains(queues, parts[2]) {
			queues = append(queues, parts[2])
		}
	}
	if len(members) == 0 {
		// No binding at all: a client that declares its reply queue late,
		// or a set lost to eviction; the queue name is kombu's default.
		queues = []string{rk + "." + ex}
	}
	if len(queues) == 0 {
		return nil // bindings exist, none for rk: nobody is waiting
	}
	env, err := fanout.Envelope(body, fanoutObject{{"ticket", req.Ticket}, {"clock", m.clock.forward()}}, 1, ex, rk)
	if err != nil {
		return err
	}
	for _, q := range queues {
		if _, err := redis.DoContext(conn, ctx, "LPUSH", m.prefix+q, env); err != nil {
			return fmt.Errorf("LPUSH %s: %w", q, err)
		}
	}
	return nil
}

// parseControlRequest reads a request body as kombu's Node does, tolerating
// the shapes Python can send (null arguments, destination as a tuple).
func parseControlRequest(body any) (*ControlRequest, error) {
	m, ok := body.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("request body is a JSON %s, want an object", fanout.Kind(body))
	}
	req := &ControlRequest{Arguments: map[string]any{}}
	if req.Method, ok = m["method"].(string); !ok || req.Method == "" {
		return nil, errors.New("request has no method")
	}
	switch a := m["arguments"].(type) {
	case nil:
	case map[string]any:
		req.Arguments = a
	default:
		return nil, fmt.Errorf("request %q: arguments is a JSON %s, want an object", req.Method, fanout.Kind(a))
	}
	switch d := m["destination"].(type) {
	case nil:
	case string:
		req.Destination = []string{d}
	case []any:
		for _, v := range d {
			if s, ok := v.(string); ok {
				req.Destination = append(req.Destination, s)
			}
		}
		if len(req.Destination) == 0 && len(d) > 0 {
			return nil, fmt.Errorf("request %q: destination holds no node names", req.Method)
		}
	default:
		return nil, fmt.Errorf("request %q: destination is a JSON %s, want a list", req.Method, fanout.Kind(d))
	}
	if s, ok := m["pattern"].(string); ok {
		req.Pattern = &s
	}
	if s, ok := m["matcher"].(string); ok {
		req.Matcher = &s
	}
	req.Ticket, _ = m["ticket"].(string)
	if rt, ok := m["reply_to"].(map[string]any); ok {
		ex, _ := rt["exchange"].(string)
		rk, _ := rt["routing_key"].(string)
		if ex == "" || rk == "" {
			return nil, fmt.Errorf("request %q: reply_to needs exchange and routing_key", req.Method)
		}
		req.ReplyTo = &ReplyTo{Exchange: ex, RoutingKey: rk}
	} else if m["reply_to"] != nil {
		return nil, fmt.Errorf("request %q: reply_to is not an object", req.Method)
	}
	return req, nil
}

// pidboxSelects is Node.handle_message's choice: a destination list names
// the node, or else pattern and matcher match it, or else all nodes run.
func pidboxSelects(hostname string, req *ControlRequest) bool {
	if len(req.Destination) > 0 {
		return slices.Contains(req.Destination, hostname)
	}
	if req.Pattern == nil || req.Matcher == nil || *req.Pattern == "" || *req.Matcher == "" {
		return true
	}
	var expr string
	switch *req.Matcher {
	case "glob":
		expr = fnmatchRegexp(*req.Pattern)
	case "pcre":
		expr = `^(?:` + *req.Pattern + `)` // re.match anchors at the start only
	default:
		return false // kombu raises MatcherNotInstalled: nothing runs
	}
	re, err := regexp.Compile(expr)
	return err == nil && re.MatchString(hostname)
}

// fnmatchRegexp is Python's fnmatch.translate: * and ? match any character
// including '/', [!...] negates a set. The result is anchored.
func fnmatchRegexp(pat string) string {
	var b strings.Builder
	b.WriteString(`(?s)^`)
	for i := 0; i < len(pat); {
		c := pat[i]
		i++
		switch c {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		case '[':
			j := i
			if j < len(pat) && pat[j] == '!' {
				j++
			}
			if j < len(pat) && pat[j] == ']' {
				j++
			}
			for j < len(pat) && pat[j] != ']' {
				j++
			}
			if j >= len(pat) {
				b.WriteString(`\[`)
				continue
			}
			set := pat[i:j]
			i = j + 1
			set = strings.ReplaceAll(set, `\`, `\\`)
			if strings.HasPrefix(set, "!") {
				set = "^" + set[1:]
			} else if strings.HasPrefix(set, "^") {
				set = `\` + set
			}
			b.WriteString("[" + set + "]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`$`)
	return b.String()
}

// ---------------------------------------------------------------------------
// One PSUBSCRIBE kept alive across connection loss; shared with events.go.

const (
	fanoutPingEvery   = 5 * time.Second
	fanoutReadTimeout = 3 * fanoutPingEvery
	fanoutBackoffMin  = 100 * time.Millisecond
	fanoutBackoffMax  = 5 * time.Second
)

type fanoutSubscriber struct {
	pool    *redis.Pool
	pattern string // full channel pattern, key prefix included
	log     zerolog.Logger
	// onReady runs after each successful (re)subscription; may be nil.
	onReady func(ctx context.Context)
	// onMessage runs on the reader goroutine for each message.
	onMessage func(ctx context.Context, channel string, data []byte)
}

// run subscribes until ctx is done.
func (s *fanoutSubscriber) run(ctx context.Context) {
	backoff := fanoutBackoffMin
	for {
		subscribed, err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			backoff = fanoutBackoffMin
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		s.log.Warn().Err(err).Str("pattern", s.pattern).Dur("retry_in", wait).Msg("redis pub/sub subscription lost; reconnecting")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, fanoutBackoffMax)
	}
}

// session runs one subscribed connection until it fails or ctx is done.
func (s *fanoutSubscriber) session(ctx context.Context) (subscribed bool, err error) {
	conn, err := dialFanout(ctx, s.pool)
	if err != nil {
		return false, fmt.Errorf("dial redis: %w", err)
	}
	psc := redis.PubSubConn{Conn: conn}
	defer psc.Close()
	if err := psc.PSubscribe(s.pattern); err != nil {
		return false, fmt.Errorf("PSUBSCRIBE %s: %w", s.pattern, err)
	}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.read(ctx, psc, ready) }()
	// Closing the connection is what unblocks the reader; the reader's
	// error then ends the session.
	stop := func(cause error) (bool, error) {
		psc.Close()
		<-done
		return subscribed, cause
	}
	ping := time.NewTicker(fanoutPingEvery)
	defer ping.Stop()
	for {
		select {
		case <-ready:
			ready = nil
			subscribed = true
			if s.onReady != nil {
				s.onReady(ctx)
			}
		case err := <-done:
			return subscribed, err
		case <-ping.C:
			// The PONG resets the reader's deadline; a silent dead peer
			// makes the reader time out.
			if err := psc.Ping(""); err != nil {
				return stop(fmt.Errorf("PING: %w", err))
			}
		case <-ctx.Done():
			return stop(ctx.Err())
		}
	}
}

func (s *fanoutSubscriber) read(ctx context.Context, psc redis.PubSubConn, ready chan struct{}) error {
	for {
		switch v := psc.ReceiveWithTimeout(fanoutReadTimeout).(type) {
		case redis.Message:
			s.onMessage(ctx, v.Channel, v.Data)
		case redis.Subscription:
			if v.Count == 0 {
				return errors.New("unsubscribed by the server")
			}
			if ready != nil {
				close(ready)
				ready = nil
			}
		case error:
			return v
		}
	}
}

// dialFanout opens a connection of its own for a subscription: a pooled
// connection would be closed with an UNSUBSCRIBE round trip that races the
// blocked reader, and may carry a read timeout shorter than the idle time.
func dialFanout(ctx context.Context, pool *redis.Pool) (redis.Conn, error) {
	switch {
	case pool.DialContext != nil:
		return pool.DialContext(ctx)
	case pool.Dial != nil:
		return pool.Dial()
	}
	return nil, errors.New("redis pool has neither Dial nor DialContext")
}
