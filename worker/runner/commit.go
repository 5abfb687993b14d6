package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"morag-gpu/protocol"
)

// Group commit: the STARTED states, results, acks and task events of tasks
// that reach those points together go to Redis in one Lua call
// (protocol.Broker.Commit) instead of one round trip each. A committer
// never waits to fill a batch: it takes what queued up while its previous
// call was in flight, so an idle worker commits a lone task at once and a
// busy one amortises each round trip over many tasks.

const (
	// committers is how many commit calls may be in flight at once. Two
	// keep Redis busy while one reply travels back; order between them
	// does not matter, since a task's STARTED is committed before its
	// handler runs and so before its result is queued.
	committers = 2
	// maxCommitOps bounds one Lua call, so no single call keeps Redis
	// from serving others for long.
	maxCommitOps = 256
	// commitQueue bounds the requests waiting for a committer: a slot
	// blocks rather than piling up work when Redis falls behind.
	commitQueue = 1024
)

// commitReq is one caller's ops; done receives the outcome, or then is
// called with it on the committer's goroutine (it must not commit and
// wait itself); with neither it is fire and forget (task events).
type commitReq struct {
	ops  []protocol.CommitOp
	done chan commitReply
	then func([]protocol.CommitStatus, error)
	// state lets the submitter withdraw a request no committer has taken
	// yet (withdraw); a committer skips a withdrawn one (take).
	state atomic.Uint32
}

const (
	reqQueued uint32 = iota
	reqTaken
	reqWithdrawn
)

// take claims req for a commit; false: its submitter withdrew it.
func (r *commitReq) take() bool { return r.state.CompareAndSwap(reqQueued, reqTaken) }

// withdraw cancels req if no committer has taken it yet; false: it is
// being or has been committed, and will be answered.
func (r *commitReq) withdraw() bool { return r.state.CompareAndSwap(reqQueued, reqWithdrawn) }

// answer hands a request its outcome.
func (r *commitReq) answer(status []protocol.CommitStatus, err error) {
	switch {
	case r.done != nil:
		r.done <- commitReply{status: status, err: err}
	case r.then != nil:
		r.then(status, err)
	}
}

type commitReply struct {
	status []protocol.CommitStatus
	err    error
}

// committer owns the commit goroutines. Run starts it before the slots and
// stops it after every work goroutine has returned, so that every commit a
// task waits for is answered.
type committer struct {
	s  *Server
	in chan *commitReq

	mu      sync.RWMutex // guards closed against sends on a closed channel
	closed  bool
	stopped chan struct{} // closed when every loop has returned
}

func newCommitter(s *Server) *committer {
	return &committer{s: s, in: make(chan *commitReq, commitQueue), stopped: make(chan struct{})}
}

// start runs the commit loops until stop. ctx bounds the retries of a
// failing commit: Run passes the context that ends only when shutdown
// stops waiting for tasks.
func (c *committer) start(ctx context.Context) {
	var wg sync.WaitGroup
	for range committers {
		wg.Go(func() { c.loop(ctx) })
	}
	go func() { // owner: the committer; ends when the loops have drained in
		wg.Wait()
		close(c.stopped)
	}()
}

// stop lets the loops drain what is queued and waits for them.
func (c *committer) stop() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.in)
	}
	c.mu.Unlock()
	<-c.stopped
}

// submit queues req, waiting for room until ctx ends; it reports false
// once the committer is stopped.
func (c *committer) submit(ctx context.Context, req *commitReq) bool {
	return c.enqueue(req, ctx.Done())
}

// trySubmit queues req if there is room now; false: the queue is full or
// the committer stopped.
func (c *committer) trySubmit(req *commitReq) bool {
	return c.enqueue(req, nil)
}

// enqueue sends req to the loops, waiting for room until giveUp is closed
// (a nil giveUp: not at all).
func (c *committer) enqueue(req *commitReq, giveUp <-chan struct{}) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return false
	}
	select {
	case c.in <- req:
		return true
	default:
		if giveUp == nil {
			return false
		}
	}
	select {
	case c.in <- req:
		return true
	case <-giveUp:
		return false
	}
}

// commit queues ops and waits for their outcome. It fails only when ctx
// ends (a forced shutdown) or an op cannot be encoded; Redis outages are
// retried by the committer meanwhile.
func (c *committer) commit(ctx context.Context, ops ...protocol.CommitOp) ([]protocol.CommitStatus, error) {
	req := &commitReq{ops: ops, done: make(chan commitReply, 1)}
	if !c.submit(ctx, req) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("the worker is stopping and commits no more task states")
	}
	select {
	case rep := <-req.done:
		return rep.status, rep.err
	case <-c.stopped:
		// The loops answer every request they took before they return;
		// one taken in the meantime may still have answered.
		select {
		case rep := <-req.done:
			return rep.status, rep.err
		default:
			return nil, errors.New("the worker stopped before the task state was committed")
		}
	}
}

func (c *committer) loop(ctx context.Context) {
	batch := make([]*commitReq, 0, 64)
	for {
		req, ok := <-c.in
		if !ok {
			return
		}
		if !req.take() {
			continue
		}
		batch = append(batch[:0], req)
		n := len(req.ops)
	drain:
		for n < maxCommitOps {
			select {
			case r, ok := <-c.in:
				if !ok {
					break drain
				}
				if !r.take() {
					continue
				}
				batch = append(batch, r)
				n += len(r.ops)
			default:
				break drain
			}
		}
		c.flush(ctx, batch, n)
	}
}

// flush commits a batch, retrying through Redis outages until ctx ends. An
// op that cannot be encoded fails its own request only.
func (c *committer) flush(ctx context.Context, batch []*commitReq, n int) {
	ops := make([]protocol.CommitOp, 0, n)
	for _, r := range batch {
		ops = append(ops, r.ops...)
	}
	var bo protocol.Backoff
	for attempt := 1; ; attempt++ {
		status, err := c.s.tr.Commit(ctx, ops)
		if err == nil {
			i := 0
			for _, r := range batch {
				r.answer(status[i:i+len(r.ops)], nil)
				i += len(r.ops)
			}
			if attempt > 1 {
				c.s.log.Info().Int("attempts", attempt).Msg("committing task states succeeded after retrying")
			}
			return
		}
		var ee *protocol.CommitEncodeError
		if errors.As(err, &ee) {
			// Answer the request that owns the bad op and commit the rest.
			i := 0
			for j, r := range batch {
				if ee.Op < i+len(r.ops) {
					r.answer(nil, err)
					rest := append(batch[:j:j], batch[j+1:]...)
					if len(rest) > 0 {
						c.flush(ctx, rest, n-len(r.ops))
					}
					return
				}
				i += len(r.ops)
			}
		}
		if permanent(err) {
			for _, r := range batch {
				r.answer(nil, err)
			}
			return
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("commit task states: %w (gave up: %v)", err, context.Cause(ctx))
			for _, r := range batch {
				r.answer(nil, err)
			}
			return
		}
		d := bo.Next()
		c.s.log.Warn().Err(err).Int("attempt", attempt).Int("ops", len(ops)).Dur("retry_in", d).
			Msg("committing task states to Redis failed; keeping the tasks in hand and retrying")
		sleepCtx(ctx, d)
	}
}
