package main

import (
	"flag"
	"strings"

	"morag-gpu/gateway/httpapi"
)

// limitFlags registers the hardening flags (see SECURITY.md); zero values
// mean httpapi's defaults. Call the returned func after flag.Parse.
func limitFlags(cfg *httpapi.Config) (afterParse func()) {
	flag.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "file holding the admin token on its first line (mode 0600); preferred over -admin-token")
	flag.Func("trusted-proxies", "comma-separated addresses/CIDRs whose X-Forwarded-For is believed (default: none, the TCP peer is the client)", func(s string) error {
		cfg.TrustedProxies = append(cfg.TrustedProxies, strings.Split(s, ",")...)
		return nil
	})
	l := &cfg.Limits
	flag.DurationVar(&l.ReadHeaderTimeout, "read-header-timeout", 0, "time to send the request line and headers (default 10s)")
	flag.DurationVar(&l.ReadTimeout, "read-timeout", 0, "time to send a non-upload request body (default 30s)")
	flag.DurationVar(&l.IdleTimeout, "idle-timeout", 0, "how long an idle keep-alive connection is kept (default 60s)")
	flag.Int64Var(&l.UploadMinRate, "upload-min-rate", 0, "slowest accepted upload, bytes/s after a 30s grace (default 16384)")
	flag.IntVar(&l.MaxConns, "max-conns", 0, "open connections at most; idle ones are evicted first (default 4096)")
	flag.IntVar(&l.MaxConnsPerIP, "max-conns-per-ip", 0, "open connections per client IP, trusted proxies exempt (default 64)")
	flag.Int64Var(&l.MaxTaskBytes, "max-task-bytes", 0, "largest task message queued in Redis, and so largest JSON body (default 1 MiB)")
	flag.Int64Var(&l.QuotaUser, "quota-user", 0, "upload bytes one user may hold, stored and arriving (default 20 GiB; -1 none)")
	flag.Int64Var(&l.QuotaAnonymous, "quota-anonymous", 0, "upload bytes all anonymous callers together may hold (default 2 GiB; -1 none)")
	flag.Int64Var(&l.MinFreeDisk, "min-free-disk", 0, "free bytes on the upload disk below which uploads get 507 (default 1 GiB; -1 off)")
	anon := flag.Bool("anonymous-uploads", true, "accept uploads without an API key")
	return func() { l.NoAnonymousUploads = !*anon }
}
