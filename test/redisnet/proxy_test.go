package redisnet

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxy is a TCP proxy that makes a network worse: each direction is
// delayed by Delay (so the round trip gains 2*Delay), a chunk is "lost"
// with probability Loss, which TCP turns into a retransmission: that chunk
// and everything behind it wait RTO more, and Pause holds every byte in
// both directions (a partition: connections stay open, nothing flows)
// until Resume. The kernel here has no netem; this is its stand-in.
type proxy struct {
	Delay time.Duration
	Loss  float64
	RTO   time.Duration

	ln   net.Listener
	dial func(ctx context.Context) (net.Conn, error)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	open    chan struct{} // closed while traffic flows; replaced on Pause
	conns   map[net.Conn]struct{}
	dropped int
	moved   atomic.Int64 // bytes written, both directions
	cutAt   atomic.Int64 // CutAt's threshold; 0: none
	cuts    chan int     // CutAt's report
}

// startProxy serves on ln, forwarding each connection to what dial
// returns, until the test ends.
func startProxy(t testing.TB, ln net.Listener, dial func(ctx context.Context) (net.Conn, error), delay time.Duration, loss float64) *proxy {
	t.Helper()
	p := &proxy{Delay: delay, Loss: loss, RTO: 200 * time.Millisecond, ln: ln, dial: dial, conns: map[net.Conn]struct{}{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.open = make(chan struct{})
	close(p.open)
	p.wg.Go(p.accept) // owner: the proxy; Close stops it
	t.Cleanup(p.Close)
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

// Pause stops all traffic; Resume lets the held bytes through.
func (p *proxy) Pause() {
	p.mu.Lock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
	p.mu.Unlock()
}

func (p *proxy) Resume() {
	p.mu.Lock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
	p.mu.Unlock()
}

// Lost returns how many chunks were "lost" (delayed by an RTO).
func (p *proxy) Lost() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// Moved returns the bytes the proxy has passed on, both directions.
func (p *proxy) Moved() int64 { return p.moved.Load() }

// Cut closes every connection open now (both sides see it end, as when
// a NAT or a middlebox drops them) and returns how many ends it closed;
// new connections are accepted.
func (p *proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
	return n
}

// CutAt arms a Cut for the moment the proxy has passed on n more bytes
// than now (both directions), and returns a channel that receives how many
// ends it closed. One at a time.
func (p *proxy) CutAt(n int64) <-chan int {
	ch := make(chan int, 1)
	p.mu.Lock()
	p.cuts = ch
	p.mu.Unlock()
	p.cutAt.Store(p.moved.Load() + n)
	return ch
}

// Close stops the proxy and every connection, and waits for its
// goroutines.
func (p *proxy) Close() {
	p.cancel()
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			return
		}
		p.wg.Go(func() { p.serve(in) })
	}
}

func (p *proxy) serve(in net.Conn) {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	out, err := p.dial(ctx)
	cancel()
	if err != nil || !p.track(out) {
		in.Close()
		return
	}
	var both sync.WaitGroup
	both.Go(func() { p.pipe(out, in) })
	both.Go(func() { p.pipe(in, out) })
	both.Wait()
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}

type chunk struct {
	data []byte
	at   time.Time
}

// pipe copies src to dst through the impairments; when either side ends,
// both are closed.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	q := make(chan chunk, 1024)
	done := make(chan struct{})
	defer close(done)
	go func() { // owner: pipe; it ends when src does or pipe returns
		defer close(q)
		for {
			buf := make([]byte, 32*1024)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{buf[:n], time.Now()}:
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	var prev time.Time // in order: a chunk never overtakes the one before
	for c := range q {
		due := c.at.Add(p.Delay)
		if p.Loss > 0 && rand.Float64() < p.Loss {
			due = due.Add(p.RTO)
			p.mu.Lock()
			p.dropped++
			p.mu.Unlock()
		}
		if due.Before(prev) {
			due = prev
		}
		prev = due
		if !p.wait(time.Until(due)) {
			return
		}
		p.mu.Lock()
		open := p.open
		p.mu.Unlock()
		select {
		case <-open:
		case <-p.ctx.Done():
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
		moved := p.moved.Add(int64(len(c.data)))
		if at := p.cutAt.Load(); at > 0 && moved >= at && p.cutAt.CompareAndSwap(at, 0) {
			n := p.Cut()
			p.mu.Lock()
			p.cuts <- n
			p.mu.Unlock()
			return
		}
	}
}

func (p *proxy) wait(d time.Duration) bool {
	if d <= 0 {
		return p.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.ctx.Done():
		return false
	}
}
