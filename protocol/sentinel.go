package protocol

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// sentinelQueryTimeout bounds one question to one sentinel, so that a dead
// sentinel costs a second, not the 5 s connect timeout.
const sentinelQueryTimeout = time.Second

// sentinelDialer connects to whichever server the sentinels name as the
// master right now. Every new connection asks again (a pool dials rarely:
// at start, after errors and after a failover), and checks with ROLE that
// the server it reached is a master: during a failover the sentinels may
// still name the old one, which may be back as a replica. Connections are
// wrapped so that a READONLY reply (the master was demoted under us) makes
// the pool drop them instead of reusing them; the next dial re-resolves.
func (t *redisTarget) sentinelDialer() func(context.Context) (redis.Conn, error) {
	opts := t.options()
	return func(ctx context.Context) (redis.Conn, error) {
		addr, err := t.resolveMaster(ctx)
		if err != nil {
			return nil, err
		}
		c, err := dialRedis(ctx, "tcp", addr, opts)
		if err != nil {
			return nil, explainDialError(addr, err)
		}
		role, err := redis.DoContext(c, ctx, "ROLE")
		if err == nil {
			err = checkMasterRole(role)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("protocol: the sentinels name %s as master %q, but: %w; a failover is probably under way, retrying will find the new master", addr, t.masterName, err)
		}
		return &masterConn{Conn: c}, nil
	}
}

// resolveMaster asks the sentinels in turn for the master's address.
func (t *redisTarget) resolveMaster(ctx context.Context) (string, error) {
	var errs []error
	for _, s := range t.sentinels {
		addr, err := t.askSentinel(ctx, s)
		if err == nil {
			return addr, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
		if ctx.Err() != nil {
			break
		}
	}
	return "", fmt.Errorf("protocol: no sentinel named a master for %q (%w); check that the sentinels run, are reachable, and monitor that name (SENTINEL MASTERS)", t.masterName, errors.Join(errs...))
}

func (t *redisTarget) askSentinel(ctx context.Context, addr string) (string, error) {
	qctx, cancel := context.WithTimeout(ctx, sentinelQueryTimeout)
	defer cancel()
	opts := []redis.DialOption{
		redis.DialConnectTimeout(sentinelQueryTimeout),
		redis.DialReadTimeout(sentinelQueryTimeout),
		redis.DialWriteTimeout(sentinelQueryTimeout),
	}
	if t.sentinelUsername != "" {
		opts = append(opts, redis.DialUsername(t.sentinelUsername))
	}
	if t.sentinelPassword != "" {
		opts = append(opts, redis.DialPassword(t.sentinelPassword))
	}
	if t.tls != nil {
		opts = append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(t.tls), redis.DialTLSHandshakeTimeout(sentinelQueryTimeout))
	}
	c, err := redis.DialContext(qctx, "tcp", addr, opts...)
	if err != nil {
		return "", err
	}
	defer c.Close()
	hp, err := redis.Strings(redis.DoContext(c, qctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", t.masterName))
	if errors.Is(err, redis.ErrNil) {
		return "", fmt.Errorf("it does not monitor a master named %q", t.masterName)
	}
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("unexpected reply %q to SENTINEL GET-MASTER-ADDR-BY-NAME", hp)
	}
	return hp[0] + ":" + hp[1], nil
}

// checkMasterRole reads a ROLE reply and says why it is not a master's.
func checkMasterRole(reply any) error {
	vs, err := redis.Values(reply, nil)
	if err != nil || len(vs) == 0 {
		return fmt.Errorf("unexpected ROLE reply: %v", err)
	}
	role, _ := redis.String(vs[0], nil)
	if role != "master" {
		return fmt.Errorf("it reports role %q, not master", role)
	}
	return nil
}

// masterConn is a connection to a Sentinel-managed master. A READONLY
// error means the server was demoted to a replica while the connection
// lived: from then on Err reports it, so the pool closes the connection
// instead of reusing it, and the next dial asks the sentinels again.
type masterConn struct {
	redis.Conn
	// demoted is read by the pool (Err) while a pub/sub reader may be
	// setting it, hence atomic.
	demoted atomic.Pointer[error]
}

func (c *masterConn) check(err error) error {
	var re redis.Error
	if errors.As(err, &re) && strings.Contains(string(re), "READONLY") {
		d := fmt.Errorf("protocol: the Redis master was demoted to a replica (%w); reconnecting through the sentinels", err)
		c.demoted.CompareAndSwap(nil, &d)
	}
	return err
}

func (c *masterConn) Err() error {
	if d := c.demoted.Load(); d != nil {
		return *d
	}
	return c.Conn.Err()
}

func (c *masterConn) Do(cmd string, args ...any) (any, error) {
	v, err := c.Conn.Do(cmd, args...)
	return v, c.check(err)
}

func (c *masterConn) Receive() (any, error) {
	v, err := c.Conn.Receive()
	return v, c.check(err)
}

func (c *masterConn) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	v, err := redis.DoContext(c.Conn, ctx, cmd, args...)
	return v, c.check(err)
}

func (c *masterConn) DoWithTimeout(d time.Duration, cmd string, args ...any) (any, error) {
	v, err := redis.DoWithTimeout(c.Conn, d, cmd, args...)
	return v, c.check(err)
}

func (c *masterConn) ReceiveContext(ctx context.Context) (any, error) {
	v, err := redis.ReceiveContext(c.Conn, ctx)
	return v, c.check(err)
}

func (c *masterConn) ReceiveWithTimeout(d time.Duration) (any, error) {
	v, err := redis.ReceiveWithTimeout(c.Conn, d)
	return v, c.check(err)
}
