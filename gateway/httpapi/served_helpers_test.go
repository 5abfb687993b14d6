package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/internal/testenv"
)

// served is a gateway behind the same http.Server and connection limiter
// Run uses, so the connection-level limits are exercised for real.
type served struct {
	*env
	conns *connLimiter
	addr  string
}

// startServed listens on 127.0.0.1 (clients may dial from other 127/8
// addresses to act as other IPs). Everything stops with the test.
func startServed(t *testing.T, r *testenv.Redis, mod func(*Config)) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	cfg := Config{RedisURL: r.URL(), UploadDir: t.TempDir(), PublicURL: base, AdminToken: adminToken,
		WaitTimeout: 60 * time.Second, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, err := New(ctx, cfg)
	if err != nil {
		cancel()
		ln.Close()
		t.Fatal(err)
	}
	conns := newConnLimiter(cfg.MaxConns, cfg.MaxConnsPerIP, g.isTrustedProxy, cfg.Logger)
	srv := g.httpServer(conns)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(conns.Listener(ln)) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		cancel()
		g.Wait()
	})
	return &served{env: &env{t: t, redis: r, gw: g, url: base}, conns: conns, addr: ln.Addr().String()}
}

// dialFrom opens a TCP connection to the gateway from local address ip
// (a 127/8 address other than 127.0.0.1 plays another client).
func (s *served) dialFrom(ip string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", s.addr)
}

// closedWithin reports whether the server closes c (a read returns EOF or
// an error other than our own deadline) within d, draining what it sends.
func closedWithin(c net.Conn, d time.Duration) (bool, []byte) {
	var got bytes.Buffer
	deadline := time.Now().Add(d)
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false, got.Bytes()
			}
			return true, got.Bytes()
		}
	}
}

// logSink collects a gateway's log lines for assertions.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
