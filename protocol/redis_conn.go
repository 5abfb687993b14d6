package protocol

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// commandTimeout bounds every command whose context has no earlier
// deadline (blocking commands set their own, longer, limit).
const commandTimeout = 30 * time.Second

// ctxConn is every Redis connection the package's pools dial. redigo's own
// DoContext runs each command on a new goroutine and selects on the
// context, which costs a goroutine, a channel and two scheduler hand-offs
// per command: on the hot paths (a publish, a fetch, a group commit) that
// was a measurable share of the CPU. ctxConn runs the command on the
// caller's goroutine instead, under the context's deadline, and when the
// context ends first it interrupts the command by putting the socket's
// deadlines in the past. Either way a command cut short closes the
// connection, as redigo's does, so its reply can never be read as the
// next command's (and SO_LINGER 0 discards what was not yet sent).
type ctxConn struct {
	redis.Conn // redigo's connection; it implements ConnWithTimeout
	nc         *interruptible
}

// dialRedis dials one connection with opts, which carry dialTimeouts and
// no DialContextFunc of their own.
func dialRedis(ctx context.Context, network, addr string, opts []redis.DialOption) (redis.Conn, error) {
	var nc *interruptible
	dial := redis.DialContextFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialNoLinger(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		nc = &interruptible{Conn: c}
		return nc, nil
	})
	c, err := redis.DialContext(ctx, network, addr, append(opts[:len(opts):len(opts)], dial)...)
	if err != nil {
		return nil, err
	}
	return &ctxConn{Conn: c, nc: nc}, nil
}

// timeout is what redigo's DoContext would use as the read timeout: the
// time left before ctx's deadline, at most commandTimeout. byDeadline says
// the deadline is the limit, so a timeout means the deadline passed.
func (c *ctxConn) timeout(ctx context.Context) (d time.Duration, byDeadline bool, err error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err // nothing was sent: the connection stays usable
	}
	d = commandTimeout
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return 0, false, context.DeadlineExceeded
		}
		if left < d {
			d, byDeadline = left, true
		}
	}
	return d, byDeadline, nil
}

// ended says why a command that failed with err failed when the context
// ended first: the context's error (its timer may not have fired yet when
// the socket's deadline, set to the same instant, did), else nil.
func ended(ctx context.Context, err error, interrupted, byDeadline bool) error {
	if interrupted || ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if byDeadline && errors.As(err, &ne) && ne.Timeout() {
		return context.DeadlineExceeded
	}
	return nil
}

// within runs call under ctx: with the time ctx leaves as its read
// timeout, interrupted if ctx ends first, and failing with ctx's error
// when it failed because ctx ended.
func (c *ctxConn) within(ctx context.Context, call func(time.Duration) (any, error)) (any, error) {
	d, byDeadline, err := c.timeout(ctx)
	if err != nil {
		return nil, err
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.nc.interrupt)
	}
	v, err := call(d)
	interrupted := stop != nil && !stop()
	if interrupted {
		// The context ended while the command ran (or just after): the
		// deadlines are spent for good, so the connection is too.
		_ = c.Conn.Close()
	}
	if err != nil {
		if cerr := ended(ctx, err, interrupted, byDeadline); cerr != nil {
			return nil, cerr
		}
	}
	return v, err
}

func (c *ctxConn) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	return c.within(ctx, func(d time.Duration) (any, error) { return redis.DoWithTimeout(c.Conn, d, cmd, args...) })
}

func (c *ctxConn) ReceiveContext(ctx context.Context) (any, error) {
	return c.within(ctx, func(d time.Duration) (any, error) { return redis.ReceiveWithTimeout(c.Conn, d) })
}

func (c *ctxConn) DoWithTimeout(d time.Duration, cmd string, args ...any) (any, error) {
	return redis.DoWithTimeout(c.Conn, d, cmd, args...)
}

func (c *ctxConn) ReceiveWithTimeout(d time.Duration) (any, error) {
	return redis.ReceiveWithTimeout(c.Conn, d)
}

// interruptible is the socket under a ctxConn. Once interrupted, every
// deadline on it is in the past, including those redigo sets afterwards
// for the rest of the command, so the command fails at once wherever it
// was.
type interruptible struct {
	net.Conn
	mu          sync.Mutex
	interrupted bool
}

func (c *interruptible) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.interrupted = true
	_ = c.Conn.SetDeadline(time.Unix(1, 0))
}

// past replaces t with a passed deadline once the socket is interrupted;
// the caller holds mu.
func (c *interruptible) past(t time.Time) time.Time {
	if c.interrupted {
		return time.Unix(1, 0)
	}
	return t
}

func (c *interruptible) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetDeadline(c.past(t))
}

func (c *interruptible) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetReadDeadline(c.past(t))
}

func (c *interruptible) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetWriteDeadline(c.past(t))
}
