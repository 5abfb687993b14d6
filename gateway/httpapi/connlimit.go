package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// connLimiter caps the connections the gateway holds open: overall
// (-max-conns) and per client IP (-max-conns-per-ip). Without it, ~20 000
// idle keep-alives from one attacker used up the process's file
// descriptors and normal requests were refused.
//
// At the overall cap, a new connection evicts an idle keep-alive
// connection (one waiting for its next request, which loses nothing) before
// it is refused; a refused connection gets a short 503 and is closed, so
// it never waits in the kernel's accept queue. Trusted proxies are not
// capped per IP: every client behind them shares their address.
type connLimiter struct {
	max, perIP int
	exempt     func(netip.Addr) bool
	log        zerolog.Logger

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
	idle  map[net.Conn]struct{}
}

func newConnLimiter(max, perIP int, exempt func(netip.Addr) bool, log zerolog.Logger) *connLimiter {
	// A flood is many refusals a second: log a few, not each.
	log = log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second})
	return &connLimiter{max: max, perIP: perIP, exempt: exempt, log: log,
		byIP: map[netip.Addr]int{}, idle: map[net.Conn]struct{}{}}
}

// Listener wraps ln so that Accept applies the caps.
func (l *connLimiter) Listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, l: l}
}

// ConnState is the http.Server hook that tells idle connections apart.
func (l *connLimiter) ConnState(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st == http.StateIdle {
		l.idle[c] = struct{}{}
	} else {
		delete(l.idle, c)
	}
}

// Open is how many connections are held now.
func (l *connLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// admit decides on a new connection from client ip (an IPv6 /64, see
// clientBucket); exempt clients are not capped per IP. victim, when not
// nil, is an idle connection to close to make room.
func (l *connLimiter) admit(ip netip.Addr, exempt bool) (ok bool, reason string, victim net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP > 0 && l.byIP[ip] >= l.perIP && !exempt {
		return false, "per-ip", nil
	}
	if l.max > 0 && l.total >= l.max {
		for c := range l.idle {
			victim = c
			break
		}
		if victim == nil {
			return false, "total", nil
		}
		delete(l.idle, victim)
	}
	l.total++
	l.byIP[ip]++
	return true, "", victim
}

func (l *connLimiter) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

type limitedListener struct {
	net.Listener
	l *connLimiter
}

// refusal is written to a refused connection: a complete HTTP answer, so
// clients see why, with Connection: close.
const refusal = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 59\r\n\r\n" +
	`{"detail":"Too many open connections; retry in a moment."}` + "\n"

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := peerIP(c)
		ip := clientBucket(peer)
		ok, reason, victim := ll.l.admit(ip, ll.l.exempt != nil && ll.l.exempt(peer))
		if victim != nil {
			victim.Close()
		}
		if ok {
			return &limitedConn{Conn: c, l: ll.l, ip: ip}, nil
		}
		ll.l.log.Warn().Str("client_ip", ip.String()).Str("cap", reason).Msg("connection refused: connection cap reached")
		// The write goes to the socket buffer of a fresh connection; the
		// deadline keeps a hostile peer from stalling the accept loop.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write([]byte(refusal))
		_ = c.Close()
	}
}

func peerIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// clientBucket is what the per-IP cap counts: the address, or for IPv6 its
// /64, the block one host usually controls (as the credential limiter).
func clientBucket(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// limitedConn gives its slot back once, on its first Close.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	ip   netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.idle, c)
		c.l.mu.Unlock()
		c.l.release(c.ip)
	})
	return c.Conn.Close()
}
