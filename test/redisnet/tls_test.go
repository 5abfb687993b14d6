package redisnet

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// tlsRedis starts redis-server speaking only TLS, requiring client
// certificates, with the default user off and one ACL user, alice.
func tlsRedis(t *testing.T, p *pki) int {
	t.Helper()
	port := testenv.FreePort(t)
	startRedisServer(t, "--port", "0", "--tls-port", fmt.Sprint(port),
		"--tls-cert-file", p.ServerCert, "--tls-key-file", p.ServerKey, "--tls-ca-cert-file", p.CA,
		"--tls-auth-clients", "yes",
		"--user", "default", "off",
		"--user", "alice", "on", ">s3cret", "~*", "&*", "+@all")
	return port
}

func rediss(port int, user, pass string, q url.Values) string {
	return (&url.URL{Scheme: "rediss", User: url.UserPassword(user, pass), Host: fmt.Sprintf("127.0.0.1:%d", port), Path: "/0", RawQuery: q.Encode()}).String()
}

func ping(redisURL string) error {
	pool, err := protocol.NewPool(redisURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pool.GetContext(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = redis.DoContext(c, ctx, "PING")
	return err
}

// TestTLSAndACL checks every rediss:// parameter against a real TLS
// redis-server with ACLs: what must connect connects, what must not fails
// with an error that says what to fix.
func TestTLSAndACL(t *testing.T) {
	p := newPKI(t, "redis.test") // no IP in the certificate: 127.0.0.1 is a name mismatch
	port := tlsRedis(t, p)
	q := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	withClient := func(kv ...string) url.Values {
		return q(append([]string{"ssl_certfile", p.ClientCert, "ssl_keyfile", p.ClientKey}, kv...)...)
	}
	cases := []struct {
		name, url, wantErr string
	}{
		{"chain verified, name not checked (redis-py's default)",
			rediss(port, "alice", "s3cret", withClient("ssl_cert_reqs", "required", "ssl_ca_certs", p.CA, "ssl_check_hostname", "false")), ""},
		{"CERT_REQUIRED spelling",
			rediss(port, "alice", "s3cret", withClient("ssl_cert_reqs", "CERT_REQUIRED", "ssl_ca_certs", p.CA, "ssl_check_hostname", "false")), ""},
		{"ssl_cert_reqs=none skips verification",
			rediss(port, "alice", "s3cret", withClient("ssl_cert_reqs", "none", "ssl_ca_certs", p.OtherCA)), ""},
		{"host name checked by default",
			rediss(port, "alice", "s3cret", withClient("ssl_cert_reqs", "required", "ssl_ca_certs", p.CA)), "ssl_ca_certs"},
		{"unknown CA",
			rediss(port, "alice", "s3cret", withClient("ssl_cert_reqs", "optional", "ssl_ca_certs", p.OtherCA, "ssl_check_hostname", "false")), "ssl_ca_certs"},
		{"no client certificate",
			rediss(port, "alice", "s3cret", q("ssl_cert_reqs", "required", "ssl_ca_certs", p.CA, "ssl_check_hostname", "false")), ""},
		{"wrong password",
			rediss(port, "alice", "nope", withClient("ssl_cert_reqs", "required", "ssl_ca_certs", p.CA, "ssl_check_hostname", "false")), "check the user and password"},
		{"default user is off",
			strings.Replace(rediss(port, "alice", "s3cret", withClient("ssl_cert_reqs", "required", "ssl_ca_certs", p.CA, "ssl_check_hostname", "false")), "alice:s3cret@", ":s3cret@", 1), "check the user and password"},
		{"plain redis:// to a TLS port",
			fmt.Sprintf("redis://alice:s3cret@127.0.0.1:%d/0", port), "connect"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ping(c.url)
			switch {
			case c.name == "no client certificate":
				// The server rejects the handshake after it completes on
				// the client's side: the first command fails.
				if err == nil {
					t.Fatalf("connected without a client certificate to a server that requires one")
				}
			case c.wantErr == "" && err != nil:
				t.Fatalf("ping %s: %v", protocol.RedactURL(c.url), err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("ping %s: error %v, want one mentioning %q", protocol.RedactURL(c.url), err, c.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}

	// A Go client and a Go worker over TLS as alice: tasks and results.
	good := rediss(port, "alice", "s3cret", withClient("ssl_cert_reqs", "required", "ssl_ca_certs", p.CA, "ssl_check_hostname", "false"))
	rs := newRuns()
	startWorker(t, good, "tls", 0, rs, runner.Config{Concurrency: 2})
	echoRoundTrips(t, client(t, good), "tls", 20, 30*time.Second)

	// A Python Celery client over the same server and user: kombu takes
	// its TLS settings from broker_use_ssl, Celery's result backend from
	// the rediss:// query, as operators configure them.
	testenv.RequireCelery(t)
	pyURL := rediss(port, "alice", "s3cret", withClient("ssl_cert_reqs", "CERT_REQUIRED", "ssl_ca_certs", p.CA))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := testenv.RunPython(t, ctx, pyURL, `
import os, ssl, sys
from celery import Celery
url = os.environ["REDIS_URL"]
broker = url.split("?")[0]
app = Celery("tlspeer", broker=broker, backend=url)
app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": sys.argv[1],
                           "ssl_certfile": sys.argv[2], "ssl_keyfile": sys.argv[3]}
rs = [app.send_task("netsafe.echo", args=[i], queue="tls") for i in range(5)]
print(",".join(str(r.get(timeout=30)) for r in rs))
`, p.CA, p.ClientCert, p.ClientKey)
	if strings.TrimSpace(out) != "0,1,2,3,4" {
		t.Fatalf("Python client over TLS got %q, want 0,1,2,3,4", out)
	}
}
