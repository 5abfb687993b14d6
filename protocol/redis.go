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

// NewPool returns a redigo pool for a redis:// URL
// (redis://[user:password@]host[:port][/db]). Connections idle for more
// than a few seconds are PINGed before use, so a pool survives a Redis
// restart without handing out dead connections.
func NewPool(redisURL string) (*redis.Pool, error) {
	if _, err := ParseDB(redisURL); err != nil {
		return nil, err
	}
	dial := func(ctx context.Context) (redis.Conn, error) {
		return redis.DialURLContext(ctx, redisURL,
			redis.DialConnectTimeout(5*time.Second),
			redis.DialReadTimeout(30*time.Second),
			redis.DialWriteTimeout(30*time.Second))
	}
	return &redis.Pool{
		DialContext: dial,
		MaxIdle:     32,
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

// ParseDB returns the database number in a redis:// URL (0 when absent).
func ParseDB(redisURL string) (int, error) {
	u, err := url.Parse(redisURL)
	if err != nil {
		return 0, fmt.Errorf("protocol: invalid Redis URL %q: %w", redisURL, err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return 0, fmt.Errorf("protocol: invalid Redis URL %q: scheme must be redis:// or rediss://", redisURL)
	}
	p := strings.Trim(u.Path, "/")
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
// reconnect loops. The zero value waits 100 ms doubling up to 5 s.
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
