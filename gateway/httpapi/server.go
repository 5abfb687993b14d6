// Package httpapi is the gateway's HTTP API: MoRAG's routes and shapes on
// echo, with gpu=true actually routed to the user's GPU queue.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"

	"morag-gpu/auth"
	"morag-gpu/contract"
	"morag-gpu/fleet"
	"morag-gpu/gateway/files"
	"morag-gpu/protocol"
	"morag-gpu/remote"
)

// File transfer modes (MoRAG's FILE_TRANSFER_MODE).
const (
	TransferShared = "shared" // workers read the upload's path on a shared disk
	TransferHTTP   = "http"   // workers download it from a signed URL
)

// Config is everything the gateway is started with.
type Config struct {
	Addr      string // listen address, default :8000
	RedisURL  string // broker, result backend and API keys
	UploadDir string
	// PublicURL is how workers reach this gateway (signed file URLs); by
	// default http://127.0.0.1:<port of Addr>.
	PublicURL    string
	MaxUpload    int64         // bytes; default 2 GiB
	WaitTimeout  time.Duration // synchronous /process wait; default 2 h
	FileTransfer string        // shared (default) or http
	// AdminToken guards key management; empty disables it. AdminTokenFile,
	// when set, is read instead (first line, trimmed): a token on the
	// command line is visible to every local user in ps.
	AdminToken     string
	AdminTokenFile string
	// URLSecret signs file URLs; empty uses a secret shared through Redis.
	URLSecret string
	// URLTTL is how long a signed file URL stays valid; default WaitTimeout + 1 h.
	URLTTL time.Duration
	// CORSOrigins may call the API from a browser; nil means any ("*", as
	// MoRAG), empty none.
	CORSOrigins []string
	// TaskTimeLimit is the default time limit of every task sent.
	TaskTimeLimit TimeLimits
	// ShutdownTimeout bounds the wait for in-flight requests on shutdown.
	ShutdownTimeout time.Duration
	// KeyPrefix is broker_transport_options' global_keyprefix (queues,
	// events, remote control) and ResultKeyPrefix
	// result_backend_transport_options' (celery-task-meta-<id>; Celery
	// 5.3+), kept apart as Celery keeps them. MoRAG's own keys (API keys,
	// task owners, the URL secret) are never prefixed. Both must match
	// every worker's. Default "".
	KeyPrefix, ResultKeyPrefix string
	// ResultExpires is result_expires for the states the gateway stores
	// (REVOKED), and sets how long a task's owner is remembered: its
	// result's lifetime plus WaitTimeout, the longest the gateway waits for
	// a task to finish. Default 24 h, as Celery and the Go worker.
	ResultExpires time.Duration
	// MinReplicas > 0 makes each publish wait until that many Redis
	// replicas hold the task (WAIT, at most ReplicaWait, default 1s), so a
	// Sentinel failover cannot lose a task the client was told is queued.
	// A publish that times out is still answered as queued (the master
	// has it, and a retry could run it twice) and logged as a warning.
	MinReplicas int
	ReplicaWait time.Duration
	Logger      zerolog.Logger

	// VisibilityTimeout is the broker's visibility_timeout (default 1 h):
	// the lease of messages the gateway holds for gateway-mediated
	// workers. It must equal every worker's.
	VisibilityTimeout time.Duration
	// WorkerMaxWait bounds a gateway-mediated worker's long poll (default
	// 25 s); WorkerMaxBody its request bodies (default 64 MiB: results).
	WorkerMaxWait time.Duration
	WorkerMaxBody int64
	// WorkerConfirm is how soon a fetched message whose worker never
	// confirmed it may be restored (default 30 s; see remote.Options).
	WorkerConfirm time.Duration

	// TrustedProxies are the addresses or CIDRs whose X-Forwarded-For is
	// believed (client IP for logs and the credential limiter); none by
	// default, so the TCP peer is the client.
	TrustedProxies []string

	Limits
}

// Limits bound what one caller can make the gateway hold: connections,
// time, bytes on disk and in Redis. Zero values mean the defaults.
type Limits struct {
	ReadHeaderTimeout time.Duration // request line and headers; default 10 s
	ReadTimeout       time.Duration // a non-upload body; default 30 s
	WriteTimeout      time.Duration // writing a non-/process answer, after ReadTimeout; default 30 s
	IdleTimeout       time.Duration // keep-alive between requests; default 60 s
	// UploadMinRate (bytes/s, default 16 KiB/s) is the slowest an upload
	// body may arrive after UploadGrace (default 30 s).
	UploadMinRate int64
	UploadGrace   time.Duration
	// MaxConns (default 4096) and MaxConnsPerIP (default 64) cap open
	// connections; trusted proxies are not capped per IP.
	MaxConns      int
	MaxConnsPerIP int
	// MaxTaskBytes (default 1 MiB) bounds one task message in Redis, and so
	// every JSON body.
	MaxTaskBytes int64
	// QuotaUser (default 20 GiB) is one user's upload bytes, stored and
	// arriving; QuotaAnonymous (default 2 GiB) all anonymous callers'
	// together. Negative: no quota.
	QuotaUser      int64
	QuotaAnonymous int64
	// MinFreeDisk (default 1 GiB; negative: off) is the free space on the
	// upload disk below which uploads get 507.
	MinFreeDisk int64
	// NoAnonymousUploads refuses uploads without a key (401).
	NoAnonymousUploads bool

	freeDisk func(dir string) (int64, error) // replaces statfs in tests
}

func (l *Limits) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.ReadTimeout, 30*time.Second)
	def(&l.WriteTimeout, 30*time.Second)
	def(&l.IdleTimeout, 60*time.Second)
	def(&l.UploadGrace, 30*time.Second)
	if l.UploadMinRate <= 0 {
		l.UploadMinRate = 16 << 10
	}
	if l.MaxConns <= 0 {
		l.MaxConns = 4096
	}
	if l.MaxConnsPerIP <= 0 {
		l.MaxConnsPerIP = 64
	}
	if l.MaxTaskBytes <= 0 {
		l.MaxTaskBytes = 1 << 20
	}
	quota := func(q *int64, v int64) {
		switch {
		case *q == 0:
			*q = v
		case *q < 0:
			*q = 0 // files.Store: 0 is no quota
		}
	}
	quota(&l.QuotaUser, 20<<30)
	quota(&l.QuotaAnonymous, 2<<30)
	quota(&l.MinFreeDisk, 1<<30)
}

func (c *Config) defaults() error {
	if c.Addr == "" {
		c.Addr = ":8000"
	}
	if c.RedisURL == "" {
		c.RedisURL = "redis://localhost:6379/0"
	}
	if c.UploadDir == "" {
		c.UploadDir = filepath.Join(os.TempDir(), "morag-uploads")
	}
	if c.PublicURL == "" {
		_, port, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return fmt.Errorf("gateway: -addr %q: %w", c.Addr, err)
		}
		c.PublicURL = "http://127.0.0.1:" + port
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.MaxUpload <= 0 {
		c.MaxUpload = 2 << 30
	}
	if c.WaitTimeout <= 0 {
		c.WaitTimeout = 2 * time.Hour
	}
	switch c.FileTransfer {
	case "":
		c.FileTransfer = TransferShared
	case TransferShared, TransferHTTP:
	default:
		return fmt.Errorf("gateway: -file-transfer %q: want %q or %q", c.FileTransfer, TransferShared, TransferHTTP)
	}
	if c.URLTTL <= 0 {
		c.URLTTL = c.WaitTimeout + time.Hour
	}
	if c.CORSOrigins == nil {
		c.CORSOrigins = []string{"*"}
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.ResultExpires <= 0 {
		c.ResultExpires = 24 * time.Hour
	}
	if c.AdminTokenFile != "" {
		tok, err := readSecretFile(c.AdminTokenFile)
		if err != nil {
			return fmt.Errorf("gateway: -admin-token-file: %w", err)
		}
		c.AdminToken = tok
		c.AdminTokenFile = ""
	}
	if _, err := parseTrusted(c.TrustedProxies); err != nil {
		return err
	}
	c.Limits.defaults()
	return c.TaskTimeLimit.defaults()
}

// ownerTTL is how long a task's owner is kept: the task may take up to
// WaitTimeout, and its result then lives ResultExpires.
func (c *Config) ownerTTL() time.Duration { return c.ResultExpires + c.WaitTimeout }

// Gateway is a running gateway without its listener: the handler and the
// background goroutines (result listener, worker directory, upload sweeper)
// that New starts and that stop when New's ctx ends.
type Gateway struct {
	cfg      Config
	log      zerolog.Logger
	pool     *redis.Pool
	db       int
	broker   *protocol.Broker
	backend  *protocol.Backend
	client   *protocol.Client
	control  *protocol.Control
	keys     *auth.KeyService
	guard    *auth.Guard
	trusted  []netip.Prefix
	fleet    *fleet.Directory
	remote   *remote.Server
	files    *files.Store
	metrics  *metrics
	echo     *echo.Echo
	started  time.Time
	wg       sync.WaitGroup
	closeRes func() // closes the pool once the goroutines are done
}

// New connects to Redis, starts the background goroutines under ctx and
// returns the gateway. Wait returns when they have stopped.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	pool, err := protocol.NewPool(cfg.RedisURL)
	if err != nil {
		return nil, err
	}
	db, _ := protocol.ParseDB(cfg.RedisURL)
	if err := ping(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("gateway: cannot reach Redis at %s: %w; start redis-server or set -redis/REDIS_URL", protocol.RedactURL(cfg.RedisURL), err)
	}
	log := cfg.Logger
	secret, err := files.LoadSecret(ctx, pool, cfg.URLSecret)
	if err != nil {
		pool.Close()
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: log, pool: pool, db: db, started: time.Now(), metrics: newMetrics()}
	g.metrics.watch(g)
	g.broker = protocol.NewBroker(pool, protocol.BrokerOptions{KeyPrefix: cfg.KeyPrefix, Logger: log,
		MinReplicas: cfg.MinReplicas, ReplicaWait: cfg.ReplicaWait})
	g.backend = protocol.NewBackend(pool, protocol.BackendOptions{KeyPrefix: cfg.ResultKeyPrefix, Expires: cfg.ResultExpires, Logger: log})
	listener := g.backend.NewListener()
	g.client = protocol.NewClient(g.broker, g.backend).WithListener(listener)
	g.control = protocol.NewControl(pool, db, cfg.KeyPrefix)
	g.remote = remote.NewServer(remote.Options{Pool: pool, DB: db, KeyPrefix: cfg.KeyPrefix, ResultKeyPrefix: cfg.ResultKeyPrefix,
		ResultExpires: cfg.ResultExpires, VisibilityTimeout: cfg.VisibilityTimeout, MaxWait: cfg.WorkerMaxWait,
		MaxBody: cfg.WorkerMaxBody, Confirm: cfg.WorkerConfirm, Logger: log})
	g.keys = auth.NewKeyService(pool)
	g.guard = auth.NewGuard(g.keys, auth.GuardOptions{AdminToken: cfg.AdminToken, Logger: log})
	g.trusted, _ = parseTrusted(cfg.TrustedProxies)
	g.fleet = fleet.New(pool, fleet.Options{DB: db, KeyPrefix: cfg.KeyPrefix, Logger: log,
		GPUQueue: contract.IsGPUQueue, GoSWIdents: []string{contract.WorkerSWIdent}})
	g.files, err = files.New(pool, files.Options{
		Dir: cfg.UploadDir, MaxSize: cfg.MaxUpload, Secret: secret, Logger: log,
		QuotaUser: cfg.QuotaUser, QuotaAnonymous: cfg.QuotaAnonymous, MinFreeDisk: cfg.MinFreeDisk, FreeDisk: cfg.freeDisk,
		TaskDone: func(ctx context.Context, taskID string) (bool, error) {
			m, err := g.backend.Get(ctx, taskID)
			if err != nil {
				return false, err
			}
			return m.Status.Ready(), nil
		},
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	g.echo = g.routes()
	for _, run := range []func(context.Context) error{
		listener.Run,
		g.fleet.Run,
		g.remote.Run,
		func(ctx context.Context) error { return g.files.Run(ctx, files.DefaultSweepEvery) },
	} {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				log.Error().Err(err).Msg("gateway background loop stopped")
			}
		}()
	}
	g.closeRes = sync.OnceFunc(func() { pool.Close() })
	log.Info().Str("redis", protocol.RedactURL(cfg.RedisURL)).Str("upload_dir", g.files.Dir()).Str("public_url", cfg.PublicURL).
		Str("file_transfer", cfg.FileTransfer).Bool("admin_token", cfg.AdminToken != "").Msg("gateway ready")
	if cfg.AdminToken == "" {
		log.Warn().Msg("no admin token configured (-admin-token-file, MORAG_ADMIN_TOKEN or -admin-token): key management answers 403")
	} else if len(cfg.AdminToken) < 16 {
		log.Warn().Int("length", len(cfg.AdminToken)).Msg("the admin token is short; use at least 32 random characters (e.g. openssl rand -hex 32)")
	}
	return g, nil
}

// Handler is the HTTP API.
func (g *Gateway) Handler() http.Handler { return g.echo }

// Wait waits for the background goroutines (after New's ctx ended) and
// releases the Redis pool.
func (g *Gateway) Wait() {
	g.wg.Wait()
	g.closeRes()
}

// Run serves the gateway on cfg.Addr until ctx ends, then shuts down
// gracefully: it stops accepting, lets in-flight requests finish (up to
// ShutdownTimeout) and stops the background goroutines.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", cfg.Addr, err)
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	g, err := New(bg, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer g.Wait()
	defer stop()
	conns := newConnLimiter(cfg.MaxConns, cfg.MaxConnsPerIP, g.isTrustedProxy, cfg.Logger)
	srv := g.httpServer(conns)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(conns.Listener(ln)) }()
	cfg.Logger.Info().Str("addr", ln.Addr().String()).Msg("gateway listening")
	select {
	case err := <-errc:
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	cfg.Logger.Info().Msg("shutting down: draining in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		cfg.Logger.Warn().Err(err).Msg("in-flight requests did not finish in time; closed them")
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// httpServer is the server with the connection-level limits; the
// per-route ones are in limits.go.
func (g *Gateway) httpServer(conns *connLimiter) *http.Server {
	return &http.Server{
		Handler:           g.Handler(),
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		// The request line (task ids in the path) and headers; the attack
		// sent 900 KB ids, under net/http's 1 MB default.
		MaxHeaderBytes: 64 << 10,
		ConnState:      conns.ConnState,
		ErrorLog:       newServerErrorLog(g.log),
	}
}

func ping(ctx context.Context, pool *redis.Pool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := pool.GetContext(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = redis.DoContext(c, ctx, "PING")
	return err
}

// serverErrorLog sends net/http's own messages (bad requests, TLS noise,
// accept errors) to the structured log at debug level: a client can make
// as many of them as it likes.
type serverErrorLog struct{ log zerolog.Logger }

func (w serverErrorLog) Write(p []byte) (int, error) {
	w.log.Debug().Str("component", "http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newServerErrorLog(l zerolog.Logger) *stdlog.Logger { return stdlog.New(serverErrorLog{l}, "", 0) }
