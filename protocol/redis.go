package protocol

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// NewPool returns a redigo pool for a Redis URL:
// redis://[user:password@]host[:port][/db], rediss:// for TLS, or
// unix://[user:password@]/path/to/redis.sock[?db=N]. Connections idle for
// more than a few seconds are PINGed before use, so a pool survives a Redis
// restart without handing out dead connections. Commands time out after 30
// s; blocking commands (BRPOP) set their own, longer, limit.
func NewPool(redisURL string) (*redis.Pool, error) {
	dial, err := dialer(redisURL)
	if err != nil {
		return nil, err
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
			_, err := c.Do("PING")
			return err
		},
	}, nil
}

func dialer(redisURL string) (func(context.Context) (redis.Conn, error), error) {
	db, err := ParseDB(redisURL)
	if err != nil {
		return nil, err
	}
	timeouts := []redis.DialOption{
		redis.DialConnectTimeout(5 * time.Second),
		redis.DialReadTimeout(30 * time.Second),
		redis.DialWriteTimeout(30 * time.Second),
	}
	u, _ := url.Parse(redisURL) // ParseDB has checked it
	if u.Scheme != "unix" {
		return func(ctx context.Context) (redis.Conn, error) {
			return redis.DialURLContext(ctx, redisURL, timeouts...)
		}, nil
	}
	if u.Path == "" {
		return nil, fmt.Errorf("protocol: invalid Redis URL %q: a unix:// URL needs the socket path, as in unix:///run/redis.sock", redisURL)
	}
	opts := append(timeouts, redis.DialDatabase(db))
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			opts = append(opts, redis.DialUsername(u.User.Username()), redis.DialPassword(pw))
		} else {
			opts = append(opts, redis.DialPassword(u.User.Username()))
		}
	} else if pw := u.Query().Get("password"); pw != "" {
		opts = append(opts, redis.DialPassword(pw))
	}
	path := u.Path
	return func(ctx context.Context) (redis.Conn, error) {
		return redis.DialContext(ctx, "unix", path, opts...)
	}, nil
}

// ParseDB returns the database number in a Redis URL (0 when absent): the
// path of redis:// and rediss:// URLs, the db query parameter of unix://
// ones.
func ParseDB(redisURL string) (int, error) {
	u, err := url.Parse(redisURL)
	if err != nil {
		return 0, fmt.Errorf("protocol: invalid Redis URL %q: %w", redisURL, err)
	}
	var p string
	switch u.Scheme {
	case "redis", "rediss":
		p = strings.Trim(u.Path, "/")
	case "unix":
		p = u.Query().Get("db")
	default:
		return 0, fmt.Errorf("protocol: invalid Redis URL %q: scheme must be redis://, rediss:// or unix://", redisURL)
	}
	if p == "" {
		return 0, nil
	}
	db, err := strconv.Atoi(p)
	if err != nil || db < 0 {
		return 0, fmt.Errorf("protocol: invalid Redis URL %q: database %q is not a number", redisURL, p)
	}
	return db, nil
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
