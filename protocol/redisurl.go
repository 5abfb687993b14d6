package protocol

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// redisTarget is a parsed Redis URL: where to connect, as whom, and how.
// It is what every accepted URL form (redis://, rediss://, unix://,
// sentinel://) comes down to.
type redisTarget struct {
	kind     string // "tcp", "unix" or "sentinel"
	addr     string // host:port for tcp, socket path for unix
	db       int
	username string // Redis ACL user; empty: the default user
	password string
	tls      *tls.Config // nil: plain TCP

	// Sentinel only.
	sentinels        []string // host:port, in the URL's order
	masterName       string
	sentinelUsername string
	sentinelPassword string
}

// hasSSLParams reports whether q holds any of Celery's and kombu's TLS
// settings (celery/backends/redis.py, redis-py's SSLConnection).
func hasSSLParams(q url.Values) bool {
	for _, p := range [...]string{"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"} {
		if q.Has(p) {
			return true
		}
	}
	return false
}

// parseRedisURL accepts
//
//	redis://[[user]:password@]host[:port][/db]
//	rediss://…same…?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem&ssl_certfile=…&ssl_keyfile=…
//	unix://[[user]:password@]/path/to/redis.sock[?db=N]
//	sentinel://[[user]:password@]host:26379;sentinel://host2:26379[/db]?master_name=mymaster
//
// as Celery and kombu do. A user name without a password is a password
// (redis-cli's and redigo's convention, for requirepass setups).
func parseRedisURL(raw string) (*redisTarget, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("protocol: invalid Redis URL %q: %s", RedactURL(raw), fmt.Sprintf(format, a...))
	}
	if strings.HasPrefix(raw, "sentinel://") {
		return parseSentinelURL(raw, bad)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, bad("%v", errors.Unwrap(err))
	}
	t := &redisTarget{}
	t.username, t.password = userinfo(u)
	q := u.Query()
	if t.password == "" {
		t.password = q.Get("password") // kombu and redis-py accept it in the query too
	}
	var dbs string
	switch u.Scheme {
	case "redis", "rediss":
		t.kind = "tcp"
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "localhost"
		}
		if port == "" {
			port = "6379"
		}
		t.addr = net.JoinHostPort(host, port)
		dbs = strings.Trim(u.Path, "/")
		if dbs == "" {
			dbs = q.Get("db")
		}
	case "unix":
		t.kind = "unix"
		t.addr = u.Path
		if t.addr == "" {
			return nil, bad("a unix:// URL needs the socket path, as in unix:///run/redis.sock")
		}
		dbs = q.Get("db")
	default:
		return nil, bad("scheme must be redis://, rediss://, unix:// or sentinel://")
	}
	if t.db, err = parseDBNumber(dbs); err != nil {
		return nil, bad("%v", err)
	}
	if u.Scheme == "rediss" {
		host := u.Hostname()
		if host == "" {
			host = "localhost"
		}
		if t.tls, err = tlsFromQuery(q, host); err != nil {
			return nil, bad("%v", err)
		}
	} else if hasSSLParams(q) {
		return nil, bad("ssl_* parameters need a rediss:// URL; change the scheme to rediss:// to use TLS")
	}
	return t, nil
}

func parseSentinelURL(raw string, bad func(string, ...any) error) (*redisTarget, error) {
	t := &redisTarget{kind: "sentinel"}
	dbs := ""
	for _, part := range strings.Split(raw, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, bad("%v", errors.Unwrap(err))
		}
		if u.Scheme != "sentinel" {
			return nil, bad("every ';'-separated part must be a sentinel:// URL, got %q", u.Scheme+"://")
		}
		host, port := u.Hostname(), u.Port()
		if host == "" {
			return nil, bad("a sentinel:// part needs a host, as in sentinel://10.0.0.1:26379")
		}
		if port == "" {
			port = "26379"
		}
		t.sentinels = append(t.sentinels, net.JoinHostPort(host, port))
		if user, pw := userinfo(u); user != "" || pw != "" {
			t.username, t.password = user, pw
		}
		if p := strings.Trim(u.Path, "/"); p != "" {
			dbs = p
		}
		q := u.Query()
		if hasSSLParams(q) {
			// TLS to the sentinels and to the master they name, with the
			// same settings (kombu: broker_use_ssl with sentinel_kwargs
			// {"ssl": True, ...}). The name checked is each server's own
			// host, filled in per dial.
			if t.tls, err = tlsFromQuery(q, ""); err != nil {
				return nil, bad("%v", err)
			}
		}
		if v := q.Get("master_name"); v != "" {
			t.masterName = v
		}
		if v := q.Get("db"); v != "" {
			dbs = v
		}
		if v := q.Get("password"); v != "" && t.password == "" {
			t.password = v
		}
		if v := q.Get("sentinel_password"); v != "" {
			t.sentinelPassword = v
		}
		if v := q.Get("sentinel_username"); v != "" {
			t.sentinelUsername = v
		}
	}
	if len(t.sentinels) == 0 {
		return nil, bad("no sentinel addresses")
	}
	if t.masterName == "" {
		return nil, bad("a sentinel:// URL needs the master's name: add ?master_name=mymaster (or -redis-master-name), as kombu's master_name transport option")
	}
	var err error
	if t.db, err = parseDBNumber(dbs); err != nil {
		return nil, bad("%v", err)
	}
	return t, nil
}

// userinfo returns the URL's user and password; a lone user name is the
// password (requirepass), as redis-cli and redigo read it.
func userinfo(u *url.URL) (user, password string) {
	if u.User == nil {
		return "", ""
	}
	pw, ok := u.User.Password()
	if !ok {
		return "", u.User.Username()
	}
	return u.User.Username(), pw
}

func parseDBNumber(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	db, err := strconv.Atoi(s)
	if err != nil || db < 0 {
		return 0, fmt.Errorf("database %q is not a number", s)
	}
	return db, nil
}

// tlsFromQuery builds the client TLS configuration from Celery's rediss://
// query parameters. ssl_cert_reqs takes Celery's spellings: required,
// optional, none, or CERT_REQUIRED, CERT_OPTIONAL, CERT_NONE. A client
// always receives the server's certificate, so optional verifies exactly
// as required does (as Python's ssl module does for clients); absent means
// required, where Celery refuses to start: the safe choice needs no
// parameter. The host name is checked too unless ssl_check_hostname=false
// (redis-py's default is not to check it; the chain is verified either
// way).
func tlsFromQuery(q url.Values, host string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	switch strings.ToLower(strings.TrimPrefix(strings.ToUpper(q.Get("ssl_cert_reqs")), "CERT_")) {
	case "", "required", "optional":
	case "none":
		// Encrypted but unauthenticated: anyone on the path can pose as
		// Redis. Celery allows it, so this does too; the README says what
		// it costs.
		cfg.InsecureSkipVerify = true
	default:
		return nil, fmt.Errorf("ssl_cert_reqs=%q: use required, optional or none (or CERT_REQUIRED, CERT_OPTIONAL, CERT_NONE)", q.Get("ssl_cert_reqs"))
	}
	if ca := q.Get("ssl_ca_certs"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("ssl_ca_certs: %v; point it at a readable PEM file of CA certificates", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ssl_ca_certs: no PEM certificate in %s", ca)
		}
		cfg.RootCAs = pool
	}
	certFile, keyFile := q.Get("ssl_certfile"), q.Get("ssl_keyfile")
	if certFile != "" || keyFile != "" {
		if keyFile == "" {
			keyFile = certFile // redis-py: the key may be in the certificate file
		}
		if certFile == "" {
			return nil, errors.New("ssl_keyfile without ssl_certfile; give both for a client certificate")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("ssl_certfile/ssl_keyfile: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if v := q.Get("ssl_check_hostname"); v != "" && !cfg.InsecureSkipVerify {
		check, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("ssl_check_hostname=%q: use true or false", v)
		}
		if !check {
			verifyChainOnly(cfg)
		}
	}
	return cfg, nil
}

// verifyChainOnly makes cfg check the server's chain against its roots
// but not the name in it: redis-py's ssl_check_hostname=False.
func verifyChainOnly(cfg *tls.Config) {
	roots := cfg.RootCAs
	cfg.InsecureSkipVerify = true // replaced by VerifyConnection below
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("protocol: the Redis server sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
}

// WithMasterName returns redisURL with master_name set, for a sentinel://
// URL that does not name its master (the -redis-master-name flag). Other
// URLs, and sentinel URLs that already name one, are returned unchanged.
func WithMasterName(redisURL, name string) string {
	if name == "" || !strings.HasPrefix(redisURL, "sentinel://") || strings.Contains(redisURL, "master_name=") {
		return redisURL
	}
	if strings.Contains(redisURL, "?") {
		return redisURL + "&master_name=" + url.QueryEscape(name)
	}
	return redisURL + "?master_name=" + url.QueryEscape(name)
}

// RedactURL hides the passwords in a Redis URL (each part of a
// ';'-separated sentinel list, and password query parameters) for logs.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ";")
	for i, p := range parts {
		u, err := url.Parse(p)
		if err != nil {
			parts[i] = "<unparseable>"
			continue
		}
		if u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "**")
			} else {
				u.User = url.User("**")
			}
		}
		q := u.Query()
		for _, k := range []string{"password", "sentinel_password"} {
			if q.Has(k) {
				q.Set(k, "**")
			}
		}
		if len(q) > 0 {
			u.RawQuery = q.Encode()
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ";")
}
