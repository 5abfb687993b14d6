package protocol

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// NewPool returns a redigo pool for a Redis URL:
//
//	redis://[[user]:password@]host[:port][/db]
//	rediss://…?ssl_cert_reqs=required&ssl_ca_certs=ca.pem[&ssl_certfile=…&ssl_keyfile=…]
//	unix://[[user]:password@]/path/to/redis.sock[?db=N]
//	sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379[/db]?master_name=mymaster
//
// (parseRedisURL has the details). Connections idle for more than a few
// seconds are checked before use (PING; ROLE behind Sentinel, so that a
// demoted master is dropped), so a pool survives a Redis restart or a
// failover without handing out dead connections. Commands time out after
// 30 s; blocking commands (BRPOP) set their own, longer, limit.
func NewPool(redisURL string) (*redis.Pool, error) {
	t, err := parseRedisURL(redisURL)
	if err != nil {
		return nil, err
	}
	dial := t.dialer()
	check := "PING"
	if t.kind == "sentinel" {
		dial = t.sentinelDialer()
		check = "ROLE"
	}
	return &redis.Pool{
		DialContext: dial,
		MaxIdle:     32,
		// Generous, but bounded so that a leak or a stampede blocks (Wait)
		// instead of exhausting Redis's maxclients.
		MaxActive:   512,
		Wait:        true,
		IdleTimeout: 4 * time.Minute,
		TestOnBorrow: func(c redis.Conn, used time.Time) error {
			if time.Since(used) < 3*time.Second {
				return nil
			}
			v, err := c.Do(check)
			if err == nil && check == "ROLE" {
				err = checkMasterRole(v)
			}
			return err
		},
	}, nil
}

// dialTimeouts are every connection's limits.
func dialTimeouts() []redis.DialOption {
	return []redis.DialOption{
		redis.DialConnectTimeout(5 * time.Second),
		redis.DialReadTimeout(commandTimeout),
		redis.DialWriteTimeout(commandTimeout),
	}
}

// dialNoLinger connects with TCP keep-alives and SO_LINGER 0: closing a
// connection discards what it has not sent yet. ctxConn closes a
// connection when a command's context ends before the reply, and a
// command abandoned that way must not reach Redis later, when a partition
// heals (a result or an ack written after the lease was given up would
// land on a task another worker now holds).
func dialNoLinger(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c, nil
}

// options are the dial options for the Redis server itself (not a
// sentinel): timeouts, credentials, database and TLS.
func (t *redisTarget) options() []redis.DialOption {
	opts := append([]redis.DialOption{redis.DialDatabase(t.db)}, dialTimeouts()...)
	if t.username != "" {
		opts = append(opts, redis.DialUsername(t.username))
	}
	if t.password != "" {
		opts = append(opts, redis.DialPassword(t.password))
	}
	if t.tls != nil {
		opts = append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(t.tls), redis.DialTLSHandshakeTimeout(5*time.Second))
	}
	return opts
}

// dialer connects to a fixed address (redis://, rediss://, unix://).
func (t *redisTarget) dialer() func(context.Context) (redis.Conn, error) {
	network := "tcp"
	if t.kind == "unix" {
		network = "unix"
	}
	opts := t.options()
	return func(ctx context.Context) (redis.Conn, error) {
		c, err := dialRedis(ctx, network, t.addr, opts)
		if err != nil {
			return nil, explainDialError(t.addr, err)
		}
		return c, nil
	}
}

// explainDialError adds what to do to the errors operators meet first.
func explainDialError(addr string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "invalid username-password"):
		return fmt.Errorf("protocol: Redis at %s refused the credentials: %w; check the user and password in the URL (redis://user:password@host/0)", addr, err)
	case strings.Contains(msg, "certificate"), strings.Contains(msg, "x509"), strings.Contains(msg, "tls:"):
		return fmt.Errorf("protocol: TLS to Redis at %s failed: %w; check ssl_ca_certs (the CA that signed the server's certificate), the host name in the URL against the certificate, and ssl_certfile/ssl_keyfile if Redis requires client certificates", addr, err)
	}
	return fmt.Errorf("protocol: connect to Redis at %s: %w", addr, err)
}

// ParseDB returns the database number in a Redis URL (0 when absent): the
// path of redis://, rediss:// and sentinel:// URLs, the db query parameter
// of unix:// ones.
func ParseDB(redisURL string) (int, error) {
	t, err := parseRedisURL(redisURL)
	if err != nil {
		return 0, err
	}
	return t.db, nil
}

// Backoff yields exponentially growing waits between Min and Max for
// reconnect loops: Fetch and the other Broker calls return connection
// errors instead of retrying, and the caller's loop decides how long to
// wait. The zero value waits 100 ms, doubling up to 5 s. A Backoff belongs
// to one loop; it is not safe for concurrent use.
//
//	var bo protocol.Backoff
//	for {
//		d, err := consumer.Fetch(ctx, time.Second)
//		if err != nil {
//			if !bo.Wait(ctx) {
//				return
//			}
//			continue
//		}
//		bo.Reset()
//		...
//	}
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the next wait.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 5 * time.Second
	}
	d := lo << min(b.n, 16)
	b.n++
	if d > hi || d <= 0 {
		d = hi
	}
	return d
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Wait sleeps for Next() or until ctx is done; it reports whether ctx is
// still live.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
