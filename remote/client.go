package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/internal/pyfmt"
	"morag-gpu/protocol"
)

// ClientOptions configure a Client.
type ClientOptions struct {
	// Server is the gateway's base URL (https://gateway.example).
	Server string
	// APIKey is the user's key (MORAG_API_KEY); it may consume only the
	// user's own queues.
	APIKey string
	// Hostname is the worker's node name, Queues the queues it consumes.
	Hostname string
	Queues   []string
	// Wait is how long one fetch may wait at the gateway for a message (a
	// long poll; the gateway caps it). Default 10 s. A warm shutdown waits
	// for the fetch in flight, so this is also how long it may take to
	// begin.
	Wait time.Duration
	// HTTPClient is used for every request; default one with sane
	// connection timeouts.
	HTTPClient *http.Client
	Logger     zerolog.Logger
}

// Client is the worker's half of gateway-mediated workers: it implements
// runner.Transport over the gateway's worker API (Server), with an API key
// instead of Redis credentials. Set runner.Config.NewTransport to a
// function returning one.
type Client struct {
	opts     ClientOptions
	base     string
	hc       *http.Client
	log      zerolog.Logger
	backend  *protocol.Backend         // encodes result metas; never connects
	events   *protocol.EventDispatcher // encodes events; never connects
	evPrefix string

	mu       sync.Mutex
	queues   []string
	declared []string          // queues the last hello registered
	tasks    map[string]string // task id -> delivery tag of held messages
	// leases: per held tag, a time on the gateway's clock no later than
	// its last refresh (the send time of the refresh the gateway
	// confirmed), for HeaderLeaseUntil.
	leases    map[string]time.Time
	clock     gatewayClock
	fetches   map[*clientFetch]struct{}
	info      helloReply
	handlers  map[string]protocol.ControlHandler
	ready     chan struct{}
	readyOnce sync.Once
}

type clientFetch struct {
	queues []string
	done   chan struct{}
}

// Refused is the gateway's 401/403/4xx answer: retrying cannot help.
type Refused struct {
	Status int
	Detail string
	Code   string // the gateway's error code, e.g. "lease_expired"
}

func (e *Refused) Error() string {
	return fmt.Sprintf("the gateway refused (%d): %s", e.Status, e.Detail)
}

// Permanent tells the runner not to retry, except for 401: the gateway
// answers a key it could not check (Redis slow or down) as it answers no
// key, so a 401 mid-run is retried; at start, Hello's 401 still stops the
// worker.
func (e *Refused) Permanent() bool { return e.Status != http.StatusUnauthorized }

// ErrChordsUnsupported is returned for chord bookkeeping, which needs the
// result backend's group keys.
var ErrChordsUnsupported = &Refused{Status: http.StatusNotImplemented, Detail: "chords are not supported by gateway-mediated workers; run chord parts on a worker with direct Redis"}

// NewClient checks opts. Nothing connects before Hello.
func NewClient(opts ClientOptions) (*Client, error) {
	u, err := url.Parse(opts.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("remote: -server %q is not an http(s) URL such as https://gateway.example", opts.Server)
	}
	if opts.APIKey == "" {
		return nil, errors.New("remote: a gateway-mediated worker needs an API key: set MORAG_API_KEY")
	}
	if opts.Hostname == "" {
		return nil, errors.New("remote: the worker needs a node name")
	}
	if opts.Wait <= 0 {
		opts.Wait = 10 * time.Second
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 0, // long polls: bounded by each request's context
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       50 * time.Second,
			ForceAttemptHTTP2:     true,
		}}
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		opts.Logger.Warn().Str("server", opts.Server).Msg("the gateway URL is plain http: the API key and every task cross the network unencrypted; use https")
	}
	c := &Client{
		opts:     opts,
		base:     strings.TrimRight(opts.Server, "/") + PathPrefix,
		hc:       hc,
		log:      opts.Logger,
		backend:  protocol.NewBackend(nil, protocol.BackendOptions{}),
		events:   protocol.NewEventDispatcher(nil, 0, opts.Hostname, ""),
		evPrefix: eventChannelPrefix(0, ""),
		queues:   slices.Clone(opts.Queues),
		tasks:    map[string]string{},
		leases:   map[string]time.Time{},
		fetches:  map[*clientFetch]struct{}{},
		handlers: map[string]protocol.ControlHandler{},
		ready:    make(chan struct{}),
	}
	return c, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Hello registers the worker's node name and queues with the gateway and
// learns its settings; a key that may not consume a queue gets a Refused
// naming the queues it may consume.
func (c *Client) Hello(ctx context.Context) (visibility time.Duration, err error) {
	queues := c.Queues()
	var rep helloReply
	if err := c.call(ctx, pathHello, helloRequest{Hostname: c.opts.Hostname, Queues: queues}, &rep); err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.info = rep
	c.declared = queues
	c.mu.Unlock()
	return time.Duration(rep.VisibilityTimeoutS * float64(time.Second)), nil
}

// call POSTs req as JSON and decodes the answer into rep.
func (c *Client) call(ctx context.Context, path string, req, rep any) error {
	return c.do(ctx, path, time.Time{}, req, rep)
}

// do is call with HeaderLeaseUntil set to until (none when zero).
func (c *Client) do(ctx context.Context, path string, until time.Time, req, rep any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("remote: encode %s: %w", path, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+c.opts.APIKey)
	hreq.Header.Set(HeaderWorker, c.opts.Hostname)
	if !until.IsZero() {
		hreq.Header.Set(HeaderLeaseUntil, strconv.FormatInt(until.UnixMilli(), 10))
	}
	sent := time.Now()
	resp, err := c.hc.Do(hreq)
	if err != nil {
		return fmt.Errorf("remote: %s: %w", path, err)
	}
	defer resp.Body.Close()
	if ms, err := strconv.ParseInt(resp.Header.Get(HeaderTime), 10, 64); err == nil {
		c.clock.sample(sent, time.Now(), ms)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return fmt.Errorf("remote: %s: reading the answer: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var er errorReply
		_ = json.Unmarshal(data, &er)
		if er.Detail == "" {
			er.Detail = strings.TrimSpace(string(data[:min(len(data), 300)]))
		}
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
			if resp.StatusCode == http.StatusUnauthorized {
				er.Detail += " (is MORAG_API_KEY a valid, active key?)"
			}
			return &Refused{Status: resp.StatusCode, Detail: er.Detail, Code: er.Code}
		}
		return fmt.Errorf("remote: %s: the gateway answered %d: %s", path, resp.StatusCode, er.Detail)
	}
	if rep == nil {
		return nil
	}
	if err := json.Unmarshal(data, rep); err != nil {
		return fmt.Errorf("remote: %s: the answer is not JSON: %w", path, err)
	}
	return nil
}

// Queues lists the consumed queues.
func (c *Client) Queues() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.queues)
}

// AddQueue starts consuming queue too (the gateway refuses it unless it is
// one of the key's).
func (c *Client) AddQueue(queue string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.queues, queue) {
		c.queues = append(c.queues, queue)
	}
}

// RemoveQueueWait stops consuming queue and waits for the fetches that may
// still take from it.
func (c *Client) RemoveQueueWait(ctx context.Context, queue string) (bool, error) {
	c.mu.Lock()
	i := slices.Index(c.queues, queue)
	if i >= 0 {
		c.queues = slices.Delete(c.queues, i, i+1)
	}
	var pending []*clientFetch
	for f := range c.fetches {
		if slices.Contains(f.queues, queue) {
			pending = append(pending, f)
		}
	}
	c.mu.Unlock()
	for _, f := range pending {
		select {
		case <-f.done:
		case <-ctx.Done():
			return i >= 0, ctx.Err()
		}
	}
	return i >= 0, nil
}

// DeclareQueue registers the queues with the gateway when queue is new
// to it (hello).
func (c *Client) DeclareQueue(ctx context.Context, queue string) error {
	c.mu.Lock()
	known := slices.Contains(c.declared, queue)
	c.mu.Unlock()
	if known {
		return nil
	}
	_, err := c.Hello(ctx)
	return err
}

// FetchN long-polls the gateway for up to max messages. The gateway holds
// them before it answers, with a lease that expires soon (its confirm
// window) unless confirmed, so that a message whose answer was lost on the
// way returns to its queue quickly. FetchN confirms them (a lease refresh)
// before it hands them to the runner, and hands over none whose
// confirmation did not arrive within the confirm window (which starts when
// the gateway takes them, HeldAfterMS into the long poll): the
// gateway may have restored those and another worker taken them, with the
// same delivery tag, so running them here would run them twice (and this
// worker's result and ack would land on the other worker's hold). They
// stay with the gateway's restore. timeout is the runner's short fetch
// timeout; the long poll waits ClientOptions.Wait instead.
func (c *Client) FetchN(ctx context.Context, _ time.Duration, limit int) ([]*protocol.Delivery, error) {
	c.mu.Lock()
	f := &clientFetch{queues: slices.Clone(c.queues), done: make(chan struct{})}
	c.fetches[f] = struct{}{}
	confirmWindow := time.Duration(c.info.ConfirmS * float64(time.Second))
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.fetches, f)
		c.mu.Unlock()
		close(f.done)
	}()
	if len(f.queues) == 0 {
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, nil
		}
	}
	if confirmWindow <= 0 {
		confirmWindow = DefaultConfirm
	}
	wait := c.opts.Wait
	rctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	sent := time.Now()
	var rep fetchReply
	if err := c.call(rctx, pathFetch, fetchRequest{Queues: f.queues, Max: limit, WaitMS: wait.Milliseconds()}, &rep); err != nil {
		return nil, err
	}
	// The gateway started the confirm window HeldAfterMS after the
	// request reached it, which is no earlier than sent + HeldAfterMS
	// here: a confirmation answered before that + the window was applied
	// in time. A quarter of the window is left for clock differences
	// between the restorers. (A gateway that does not say: from the
	// answer's arrival.)
	windowFrom := time.Now()
	if rep.HeldAfterMS != nil {
		if at := sent.Add(time.Duration(*rep.HeldAfterMS) * time.Millisecond); at.Before(windowFrom) {
			windowFrom = at
		}
	}
	out := make([]*protocol.Delivery, 0, len(rep.Deliveries))
	tags := make([]string, 0, len(rep.Deliveries))
	for _, w := range rep.Deliveries {
		d := &protocol.Delivery{Queue: w.Queue, Raw: w.Raw, Tag: w.Tag, Starts: w.Starts}
		if w.Tag == "" {
			// The gateway moved it to the dead-letter list already.
			d.Err = &protocol.DecodeError{Reason: "unholdable", Err: errors.New("the gateway could not hold the envelope and dead-lettered it")}
		} else {
			d.Message, d.Err = protocol.Decode(w.Raw)
			tags = append(tags, w.Tag)
		}
		out = append(out, d)
	}
	if len(tags) > 0 {
		if err := c.confirm(ctx, tags, windowFrom.Add(confirmWindow*3/4)); err != nil {
			c.log.Warn().Err(err).Int("messages", len(tags)).Dur("confirm_window", confirmWindow).
				Msg("could not confirm fetched messages within the gateway's confirm window; not running them: the gateway restores them to their queue")
			kept := out[:0]
			for _, d := range out {
				if d.Tag == "" {
					kept = append(kept, d)
				}
			}
			return kept, err
		}
	}
	c.mu.Lock()
	for _, d := range out {
		if d.Message != nil && d.Tag != "" {
			c.tasks[d.Message.ID] = d.Tag
		}
	}
	c.mu.Unlock()
	return out, nil
}

// confirm refreshes the leases of messages just received, retrying until
// by; it fails when that passes first, or when the gateway no longer holds
// one of them.
func (c *Client) confirm(ctx context.Context, tags []string, by time.Time) error {
	// Not cancelled with a warm shutdown: confirmed messages go to the
	// runner, which restores what it will not run at once.
	if !time.Now().Before(by) {
		return errors.New("remote: the fetch answer arrived after the gateway's confirm window")
	}
	cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), by)
	defer cancel()
	// Fenced by the confirm window itself: a confirmation that reaches the
	// gateway after it could refresh another worker's hold of the same tag.
	until, _ := c.clock.earliest(by)
	var bo protocol.Backoff
	for {
		n, err := c.touch(cctx, tags, until)
		if err == nil && n == len(tags) {
			return nil
		}
		if err == nil {
			return fmt.Errorf("remote: the gateway holds %d of the %d messages just fetched (restored already?)", n, len(tags))
		}
		var refused *Refused
		if errors.As(err, &refused) && refused.Permanent() {
			return err
		}
		d := bo.Next()
		if time.Now().Add(d).After(by) {
			return fmt.Errorf("remote: confirming a fetch: %w", err)
		}
		t := time.NewTimer(d)
		select {
		case <-cctx.Done():
			t.Stop()
			return fmt.Errorf("remote: confirming a fetch: %w", err)
		case <-t.C:
		}
	}
}

// forget drops what the client keeps of messages that are settled or no
// longer its own: their task -> tag entries and lease records.
func (c *Client) forget(tags ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, t := range c.tasks {
		if slices.Contains(tags, t) {
			delete(c.tasks, id)
		}
	}
	for _, t := range tags {
		delete(c.leases, t)
	}
}

// Touch refreshes the leases of held messages. Those whose lease may
// have lapsed already (no refresh confirmed within the visibility timeout
// less a tenth) are not sent: a refresh arriving now could land on another
// worker's hold of the same tag. They are forgotten, so that every later
// request for them is refused, and reported as an error.
func (c *Client) Touch(ctx context.Context, tags ...string) error {
	live, gone := c.lapsed(tags)
	if len(gone) > 0 {
		c.forget(gone...)
	}
	_, err := c.touch(ctx, live, time.Time{})
	if err == nil && len(gone) > 0 {
		err = fmt.Errorf("remote: the lease of %d held message(s) may have lapsed (no refresh confirmed for 0.9 x the visibility timeout): the gateway will take nothing more for them; another worker may run them", len(gone))
	}
	return err
}

// touch refreshes the leases of tags and returns how many the gateway
// holds; until is the lease bound to send, zero for the tags' own.
func (c *Client) touch(ctx context.Context, tags []string, until time.Time) (int, error) {
	held := 0
	for len(tags) > 0 {
		n := min(len(tags), maxTags)
		chunk := tags[:n]
		u := until
		if u.IsZero() {
			u = c.leaseUntil(chunk...)
		}
		at, _ := c.clock.earliest(time.Now())
		var rep countReply
		if err := c.fencedUntil(ctx, pathLease, u, chunk, tagsRequest{Tags: chunk}, &rep); err != nil {
			return held, err
		}
		switch {
		case rep.Tags != nil:
			c.refreshed(at, rep.Tags)
		case rep.N == n:
			c.refreshed(at, chunk)
		}
		held += rep.N
		tags = tags[n:]
	}
	return held, nil
}

// Held reports whether tag is still held.
func (c *Client) Held(ctx context.Context, tag string) (bool, error) {
	var rep heldReply
	err := c.fenced(ctx, pathHeld, []string{tag}, tagRequest{Tag: tag}, &rep)
	return rep.Held, err
}

// RestoreExpired asks the gateway to restore expired messages (it
// throttles the asks of all its workers together).
func (c *Client) RestoreExpired(ctx context.Context) (int, error) {
	var rep countReply
	err := c.call(ctx, pathRestoreExp, struct{}{}, &rep)
	return rep.N, err
}

// wireStore encodes req for the held message tag.
func (c *Client) wireStore(tag string, req *protocol.StoreRequest) (*wireStore, error) {
	if req == nil {
		return nil, nil
	}
	meta, err := c.backend.EncodeMeta(*req)
	if err != nil {
		return nil, err
	}
	return &wireStore{Tag: tag, TaskID: req.TaskID, State: string(req.State), Meta: meta}, nil
}

// Commit sends a group commit: the gateway runs it in one Lua call, as a
// worker on Redis would.
func (c *Client) Commit(ctx context.Context, ops []protocol.CommitOp) ([]protocol.CommitStatus, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	req := commitRequest{Ops: make([]wireOp, len(ops))}
	var tags, finished []string
	for i, op := range ops {
		switch op.Kind {
		case protocol.CommitPublish:
			req.Ops[i] = wireOp{Kind: "p", RoutingKey: strings.TrimPrefix(op.Channel, c.evPrefix), Payload: op.Payload}
		case protocol.CommitStart, protocol.CommitFinish:
			if op.Tag == "" {
				return nil, &protocol.CommitEncodeError{Op: i, Err: fmt.Errorf("commit %c needs a delivery tag", op.Kind)}
			}
			if op.Store != nil && (op.Store.TaskID == "" || op.Store.State == "") {
				return nil, &protocol.CommitEncodeError{Op: i, Err: errors.New("a stored result needs a task id and a state")}
			}
			st, err := c.wireStore(op.Tag, op.Store)
			if err != nil {
				return nil, &protocol.CommitEncodeError{Op: i, Err: err}
			}
			req.Ops[i] = wireOp{Kind: string(op.Kind), Tag: op.Tag, Store: st, Starts: op.Starts}
			tags = append(tags, op.Tag)
			if op.Kind == protocol.CommitFinish {
				finished = append(finished, op.Tag)
			}
		default:
			return nil, &protocol.CommitEncodeError{Op: i, Err: fmt.Errorf("unknown commit kind %q", op.Kind)}
		}
	}
	var rep commitReply
	if err := c.fenced(ctx, pathCommit, tags, req, &rep); err != nil {
		return nil, err
	}
	if len(rep.Status) != len(ops) {
		return nil, fmt.Errorf("remote: commit: %d replies for %d ops", len(rep.Status), len(ops))
	}
	c.forget(finished...)
	out := make([]protocol.CommitStatus, len(rep.Status))
	for i, st := range rep.Status {
		out[i] = protocol.CommitStatus(st)
	}
	return out, nil
}

// Ack acknowledges a held message.
func (c *Client) Ack(ctx context.Context, tag string) (bool, error) {
	var rep heldReply
	err := c.fenced(ctx, pathAck, []string{tag}, tagRequest{Tag: tag}, &rep)
	if err == nil {
		c.forget(tag)
	}
	return rep.Held, err
}

// Restore puts a held message back on its queue.
func (c *Client) Restore(ctx context.Context, tag string) error {
	err := c.fenced(ctx, pathRestore, []string{tag}, tagRequest{Tag: tag}, nil)
	if err == nil {
		c.forget(tag)
	}
	return err
}

// RestoreStarted is Restore for a message whose start was counted.
func (c *Client) RestoreStarted(ctx context.Context, tag string) error {
	err := c.fenced(ctx, pathRestore, []string{tag}, tagRequest{Tag: tag, Started: true}, nil)
	if err == nil {
		c.forget(tag)
	}
	return err
}

// Forward hands a held message to another of the key's queues and acks it,
// atomically.
func (c *Client) Forward(ctx context.Context, tag, queue string, envelope []byte, priority int) (bool, error) {
	var rep heldReply
	err := c.fenced(ctx, pathForward, []string{tag}, forwardRequest{Tag: tag, Queue: queue, Envelope: envelope, Priority: priority}, &rep)
	if err == nil {
		c.forget(tag)
	}
	return rep.Held, err
}

// DeadLetter moves a held, undecodable message to the gateway's
// dead-letter list.
func (c *Client) DeadLetter(ctx context.Context, d *protocol.Delivery, reason string) error {
	if d == nil || d.Tag == "" {
		return nil // the gateway dead-lettered it when it fetched it
	}
	err := c.fenced(ctx, pathDeadLetter, []string{d.Tag}, deadLetterRequest{Tag: d.Tag, Reason: reason}, nil)
	if err == nil {
		c.forget(d.Tag)
	}
	return err
}

// Poison fails a poison message and dead-letters it.
func (c *Client) Poison(ctx context.Context, d *protocol.Delivery, req *protocol.StoreRequest, reason string) (bool, error) {
	if d == nil || d.Tag == "" {
		return false, errors.New("remote: Poison needs a held delivery")
	}
	st, err := c.wireStore(d.Tag, req)
	if err != nil {
		return false, err
	}
	var rep heldReply
	err = c.fenced(ctx, pathPoison, []string{d.Tag}, poisonRequest{Tag: d.Tag, Reason: reason, Store: st}, &rep)
	if err == nil {
		c.forget(d.Tag)
	}
	return rep.Held, err
}

// DeadLetterList names where dead letters go.
func (c *Client) DeadLetterList() string { return "the gateway's dead-letter list" }

// Store writes a state of a task this worker holds (progress, RETRY ...).
func (c *Client) Store(ctx context.Context, req protocol.StoreRequest) error {
	c.mu.Lock()
	tag := c.tasks[req.TaskID]
	c.mu.Unlock()
	if tag == "" {
		return &Refused{Status: http.StatusForbidden, Detail: fmt.Sprintf("task %s is not held by this worker, so the gateway cannot store its state", req.TaskID)}
	}
	st, err := c.wireStore(tag, &req)
	if err != nil {
		return err
	}
	return c.fenced(ctx, pathStore, []string{tag}, st, nil)
}

// Publish sends a new task message to one of the key's queues.
func (c *Client) Publish(ctx context.Context, queue string, envelope []byte, priority int) error {
	return c.call(ctx, pathPublish, publishRequest{Queue: queue, Envelope: envelope, Priority: priority}, nil)
}

// ChordPartReturn is not available through the gateway.
func (c *Client) ChordPartReturn(context.Context, protocol.ChordPart) (*protocol.ChordJoin, error) {
	return nil, ErrChordsUnsupported
}

// SavedGroupResult is not available through the gateway.
func (c *Client) SavedGroupResult(context.Context, string) (bool, error) {
	return false, ErrChordsUnsupported
}

// ChordCleanup is not available through the gateway.
func (c *Client) ChordCleanup(context.Context, string) error { return ErrChordsUnsupported }

// EncodeEvent builds an event for a group commit.
func (c *Client) EncodeEvent(typ string, fields map[string]any) (string, []byte, error) {
	return c.events.Encode(typ, fields)
}

// SendEvent sends one event (a heartbeat, say); the gateway publishes it
// on the worker's behalf.
func (c *Client) SendEvent(ctx context.Context, typ string, fields map[string]any) error {
	ch, env, err := c.events.Encode(typ, fields)
	if err != nil {
		return err
	}
	return c.call(ctx, pathEvents, eventsRequest{Events: []wireEvent{{RoutingKey: strings.TrimPrefix(ch, c.evPrefix), Envelope: env}}}, nil)
}

// Clock is the Lamport clock of the worker's events.
func (c *Client) Clock() int64 { return c.events.Clock() }

// HandleControl registers a remote-control command; the gateway relays
// requests for this worker's node name to it (RunControl).
func (c *Client) HandleControl(method string, h protocol.ControlHandler) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handlers[method] = h
}

// RunControl serves remote control through the gateway until ctx ends: it
// long-polls for the requests the gateway's mailbox for this worker
// received, runs each handler and posts its reply.
func (c *Client) RunControl(ctx context.Context) error {
	var bo protocol.Backoff
	var wg sync.WaitGroup
	defer wg.Wait()
	first := true
	for ctx.Err() == nil {
		c.mu.Lock()
		methods := make([]string, 0, len(c.handlers))
		for m := range c.handlers {
			methods = append(methods, m)
		}
		c.mu.Unlock()
		slices.Sort(methods)
		wait := c.opts.Wait
		if first {
			wait = 0 // returns once the gateway's mailbox listens
		}
		pctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
		var rep controlPollReply
		err := c.call(pctx, pathControlPoll, controlPollRequest{Methods: methods, WaitMS: wait.Milliseconds()}, &rep)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d := bo.Next()
			c.log.Warn().Err(err).Dur("retry_in", d).Msg("remote control poll through the gateway failed; retrying")
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			continue
		}
		bo.Reset()
		if first {
			first = false
			c.readyOnce.Do(func() { close(c.ready) })
		}
		for _, w := range rep.Requests {
			wg.Go(func() { c.serveControl(ctx, w) })
		}
	}
	return nil
}

// serveControl runs one relayed request and posts the reply.
func (c *Client) serveControl(ctx context.Context, w wireControl) {
	if w.Request == nil {
		return
	}
	c.mu.Lock()
	h := c.handlers[w.Request.Method]
	c.mu.Unlock()
	rep := controlReplyRequest{ID: w.ID}
	if h == nil {
		rep.Reply, _ = json.Marshal(map[string]any{"error": "KeyError(" + pyfmt.StrRepr(w.Request.Method) + ")"})
	} else {
		reply, err := callControl(ctx, h, w.Request)
		switch {
		case errors.Is(err, protocol.ErrNoReply):
			rep.NoReply = true
		case err != nil:
			rep.Error = err.Error()
		default:
			if rep.Reply, err = json.Marshal(reply); err != nil {
				rep.Reply, _ = json.Marshal(map[string]any{"error": "cannot encode reply: " + err.Error()})
			}
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := c.call(rctx, pathControlReply, rep, nil); err != nil {
		c.log.Warn().Err(err).Str("method", w.Request.Method).Msg("cannot send a remote control reply through the gateway")
	}
}

// callControl runs h; a panic becomes an error, as in protocol.Mailbox.
func callControl(ctx context.Context, h protocol.ControlHandler, req *protocol.ControlRequest) (reply any, err error) {
	defer func() {
		if p := recover(); p != nil {
			reply, err = nil, fmt.Errorf("control handler %q panicked: %v", req.Method, p)
		}
	}()
	return h(ctx, req)
}

// ControlReady is closed once the gateway relays remote control to this
// worker.
func (c *Client) ControlReady() <-chan struct{} { return c.ready }

// Close releases idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}
