package redisnet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// tlsSentinels is sentinelSet over TLS only: a master, two replicas and
// three sentinels with no plain port, replicating and monitoring over TLS
// with client certificates. The server certificate names 127.0.0.1, so
// the client checks host names (the default).
type tlsSentinels struct {
	p             *pki
	master        *testenv.Process
	sentinelPorts []int
}

func startTLSSentinels(t *testing.T) *tlsSentinels {
	t.Helper()
	if _, err := exec.LookPath("redis-sentinel"); err != nil {
		t.Skipf("SKIP: redis-sentinel not installed (%v); run scripts/setup or `make test` (Debian package redis-sentinel)", err)
	}
	s := &tlsSentinels{p: newPKI(t, "127.0.0.1")}
	tlsConf := [][2]string{
		{"tls-cert-file", s.p.ServerCert}, {"tls-key-file", s.p.ServerKey}, {"tls-ca-cert-file", s.p.CA},
		{"tls-client-cert-file", s.p.ClientCert}, {"tls-client-key-file", s.p.ClientKey},
		{"tls-replication", "yes"}, {"tls-auth-clients", "yes"},
	}
	var tlsArgs []string
	for _, kv := range tlsConf {
		tlsArgs = append(tlsArgs, "--"+kv[0], kv[1])
	}
	masterPort := testenv.FreePort(t)
	s.master = startRedisServer(t, append([]string{"--port", "0", "--tls-port", fmt.Sprint(masterPort), "--repl-diskless-sync-delay", "0"}, tlsArgs...)...)
	for range 2 {
		startRedisServer(t, append([]string{"--port", "0", "--tls-port", fmt.Sprint(testenv.FreePort(t)),
			"--replicaof", "127.0.0.1", fmt.Sprint(masterPort), "--repl-diskless-sync-delay", "0"}, tlsArgs...)...)
	}
	for range 3 {
		port := testenv.FreePort(t)
		dir := t.TempDir()
		var conf strings.Builder
		fmt.Fprintf(&conf, "port 0\ntls-port %d\nbind 127.0.0.1\ndir %s\n", port, dir)
		for _, kv := range tlsConf {
			fmt.Fprintf(&conf, "%s %s\n", kv[0], kv[1])
		}
		fmt.Fprintf(&conf, "sentinel monitor mymaster 127.0.0.1 %d 2\nsentinel down-after-milliseconds mymaster 1000\n"+
			"sentinel failover-timeout mymaster 10000\nsentinel parallel-syncs mymaster 1\n", masterPort)
		file := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(file, []byte(conf.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		p := testenv.Start(t, "", nil, "redis-sentinel", file)
		if !p.WaitOutput("+monitor master mymaster", 10*time.Second) {
			t.Fatalf("redis-sentinel did not start:\n%s", p.Output())
		}
		s.sentinelPorts = append(s.sentinelPorts, port)
	}
	waitDiscovery(t, s.sentinelPorts, s.dial)
	return s
}

// dial connects to a local TLS port as the test's own client.
func (s *tlsSentinels) dial(port int) (redis.Conn, error) {
	pem, err := os.ReadFile(s.p.CA)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair(s.p.ClientCert, s.p.ClientKey)
	if err != nil {
		return nil, err
	}
	return redis.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), redis.DialUseTLS(true),
		redis.DialTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
}

func (s *tlsSentinels) masterAddr() string {
	for _, port := range s.sentinelPorts {
		c, err := s.dial(port)
		if err != nil {
			continue
		}
		hp, err := redis.Strings(c.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"))
		c.Close()
		if err == nil && len(hp) == 2 {
			return hp[0] + ":" + hp[1]
		}
	}
	return ""
}

// url is the sentinel:// URL with Celery's ssl_* parameters, or without
// them when plain.
func (s *tlsSentinels) url(plain bool) string {
	parts := make([]string, len(s.sentinelPorts))
	for i, p := range s.sentinelPorts {
		parts[i] = fmt.Sprintf("sentinel://127.0.0.1:%d", p)
	}
	q := url.Values{"master_name": {"mymaster"}}
	if !plain {
		q.Set("ssl_cert_reqs", "required")
		q.Set("ssl_ca_certs", s.p.CA)
		q.Set("ssl_certfile", s.p.ClientCert)
		q.Set("ssl_keyfile", s.p.ClientKey)
	}
	return strings.Join(parts, ";") + "/0?" + q.Encode()
}

// TestTLSSentinel: with ssl_* parameters on a sentinel:// URL, the Go
// worker and client talk TLS to the sentinels and to the master they
// name (host names checked), and follow a failover; without them, the
// TLS-only sentinels cannot be reached and the error says so.
func TestTLSSentinel(t *testing.T) {
	s := startTLSSentinels(t)
	if err := ping(s.url(true)); err == nil || !strings.Contains(err.Error(), "sentinel") {
		t.Fatalf("plain sentinel:// to TLS-only sentinels: %v, want an error naming the sentinels", err)
	}
	good := s.url(false)
	if err := ping(good); err != nil {
		t.Fatalf("ping over TLS sentinels: %v", err)
	}
	rs := newRuns()
	startWorker(t, good, "tls-sentinel", 0, rs, runner.Config{Concurrency: 2, VisibilityTimeout: 5 * time.Second})
	c := client(t, good)
	echoRoundTrips(t, c, "tls-sentinel", 10, 30*time.Second)

	old := s.masterAddr()
	s.master.Kill()
	waitFor(t, 30*time.Second, "the TLS sentinels to fail over", func() bool {
		a := s.masterAddr()
		return a != "" && a != old
	})
	// The client's pooled connection to the dead master fails once (EOF);
	// the next one asks the sentinels and reaches the new master.
	waitFor(t, 30*time.Second, "a publish through the new master", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Send(ctx, "netsafe.echo", []any{-1}, nil, protocol.SendOptions{Queue: "tls-sentinel"})
		return err == nil
	})
	echoRoundTrips(t, c, "tls-sentinel", 10, 60*time.Second)
	t.Logf("failover over TLS: %s -> %s", old, s.masterAddr())
}
