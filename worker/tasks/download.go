package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SHA256Header is the response header the gateway sends with a file's
// sha256 (hex); a download is verified against it when present.
const SHA256Header = "X-Content-SHA256"

// Download failures a caller may want to tell apart.
var (
	ErrTooLarge     = errors.New("download is larger than the worker's limit (-max-download-size)")
	ErrChecksum     = errors.New("downloaded bytes do not match the sha256 the server announced; the file was corrupted in transit or changed on the server")
	errStalled      = errors.New("no data received for too long")
	errNotResumable = errors.New("server did not resume the download where it stopped")
)

// downloader fetches a task's input over HTTP into a file, resuming with
// Range requests when the connection drops and verifying the sha256 the
// server announces.
type downloader struct {
	client  *http.Client
	maxSize int64 // 0: no limit
	// retries is how many attempts in a row may fail without a single new
	// byte before the download gives up; an attempt that made progress
	// resets the count, so a long file over a flaky link still completes.
	retries int
	// maxAttempts bounds the attempts of one download in all.
	maxAttempts int
	backoff     time.Duration // wait before the first retry; doubles, at most 16x
	idle        time.Duration // a body silent this long is dropped and resumed
}

// newDownloader returns a downloader whose connections go only to public
// addresses when guard is set (see refuseNonPublic).
func newDownloader(guard bool, maxSize int64) *downloader {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	proxy := http.ProxyFromEnvironment
	if guard {
		dialer.Control = refuseNonPublic
		// A proxy would be the address dialled, and the proxy would reach
		// the private address for us; guarded fetches go direct.
		proxy = nil
	}
	transport := &http.Transport{
		Proxy:                 proxy,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	client := &http.Client{
		Transport: transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %q URL refused; only http and https are fetched", req.URL.Scheme)
			}
			return nil
		},
	}
	return &downloader{
		client:      client,
		maxSize:     maxSize,
		retries:     4,
		maxAttempts: 20,
		backoff:     500 * time.Millisecond,
		idle:        60 * time.Second,
	}
}

// fetchRequest is one download.
type fetchRequest struct {
	URL    string
	Bearer string // sent as Authorization: Bearer when not empty
	Dir    string // the file is created here
	// Check inspects the first response before its body is read; its error
	// ends the download as is (a *runner.ForwardError, for instance).
	Check func(resp *http.Response) error
	// Progress receives the bytes received so far and the total, -1 when
	// the server did not say. It runs on the downloading goroutine.
	Progress func(done, total int64)
}

// fetched is a completed download.
type fetched struct {
	Path        string
	Name        string // the server's file name (Content-Disposition) or the URL's last path element
	Size        int64
	SHA256      string // hex
	Verified    bool   // the server announced a sha256 and it matched
	ContentType string
	Resumes     int // Range requests that continued a dropped transfer
}

// fetch downloads req.URL. On failure nothing is left in req.Dir.
func (d *downloader) fetch(ctx context.Context, req fetchRequest) (*fetched, error) {
	u, err := url.Parse(req.URL)
	if err != nil {
		return nil, fmt.Errorf("download: bad URL %q: %w", req.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("download: URL %q is not an http or https URL", redactURL(u))
	}
	x := &transfer{d: d, req: req, u: u, h: sha256.New(), total: -1}
	res, err := x.run(ctx)
	if err != nil {
		x.discard()
		return nil, fmt.Errorf("download %s: %w", redactURL(u), err)
	}
	return res, nil
}

// transfer is the state of one download across its attempts.
type transfer struct {
	d   *downloader
	req fetchRequest
	u   *url.URL

	f         *os.File
	h         hash.Hash
	got       int64
	total     int64 // -1: unknown
	validator string
	wantSHA   string
	name      string
	ctype     string
	resumes   int
}

func (x *transfer) run(ctx context.Context) (*fetched, error) {
	failures := 0
	for attempt := 1; ; attempt++ {
		before := x.got
		done, err := x.attempt(ctx)
		if err == nil && done {
			break
		}
		var retry *retryable
		if err != nil && !errors.As(err, &retry) {
			return nil, err
		}
		if x.got > before {
			failures = 0
		} else {
			failures++
		}
		if failures > x.d.retries || attempt >= x.d.maxAttempts {
			return nil, fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		wait := x.d.backoff << min(max(failures-1, 0), 4)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		case <-t.C:
		}
		if x.got > 0 {
			x.resumes++
		}
	}
	if x.total >= 0 && x.got != x.total {
		return nil, fmt.Errorf("received %d bytes of %d", x.got, x.total)
	}
	sum := hex.EncodeToString(x.h.Sum(nil))
	if x.wantSHA != "" && sum != x.wantSHA {
		return nil, fmt.Errorf("%w (%s says %s, received %s)", ErrChecksum, SHA256Header, x.wantSHA, sum)
	}
	if x.f == nil { // an empty body on a 200 that never created the file
		if err := x.create(); err != nil {
			return nil, err
		}
	}
	if err := x.f.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", x.f.Name(), err)
	}
	res := &fetched{Path: x.f.Name(), Name: x.name, Size: x.got, SHA256: sum, Verified: x.wantSHA != "", ContentType: x.ctype, Resumes: x.resumes}
	x.f = nil
	return res, nil
}

// retryable marks an attempt's error as worth another attempt.
type retryable struct{ err error }

func (r *retryable) Error() string { return r.err.Error() }
func (r *retryable) Unwrap() error { return r.err }

// attempt makes one request and reads its body into the file. It returns
// done when the whole file is in.
func (x *transfer) attempt(ctx context.Context) (bool, error) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(x.d.idle, func() { cancel(errStalled) })
	defer idle.Stop()

	hreq, err := http.NewRequestWithContext(actx, http.MethodGet, x.u.String(), nil)
	if err != nil {
		return false, err
	}
	if x.req.Bearer != "" {
		hreq.Header.Set("Authorization", "Bearer "+x.req.Bearer)
	}
	// Raw bytes: Range offsets and the sha256 are about the file, not a
	// compressed rendition of it.
	hreq.Header.Set("Accept-Encoding", "identity")
	if x.got > 0 {
		hreq.Header.Set("Range", fmt.Sprintf("bytes=%d-", x.got))
		if x.validator != "" {
			hreq.Header.Set("If-Range", x.validator)
		}
	}
	resp, err := x.d.client.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return false, context.Cause(ctx)
		}
		if b := blockedAddress(err); b != nil {
			return false, b
		}
		if context.Cause(actx) == errStalled {
			return false, &retryable{fmt.Errorf("server sent no response for %s", x.d.idle)}
		}
		return false, &retryable{err}
	}
	defer resp.Body.Close()

	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		if x.got > 0 { // the server ignored Range or the file changed: start over
			if err := x.restart(); err != nil {
				return false, err
			}
		}
		if err := x.begin(resp); err != nil {
			return false, err
		}
	case code == http.StatusPartialContent:
		start, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != x.got {
			return false, fmt.Errorf("%w: asked for bytes %d-, got Content-Range %q", errNotResumable, x.got, resp.Header.Get("Content-Range"))
		}
		if x.f == nil {
			if err := x.begin(resp); err != nil {
				return false, err
			}
		}
		if size >= 0 && x.total >= 0 && size != x.total {
			return false, fmt.Errorf("file changed size during the download (%d, now %d bytes)", x.total, size)
		}
	case code == http.StatusRequestedRangeNotSatisfiable && x.got > 0 && x.got == x.total:
		return true, nil
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		hint := " (set MORAG_API_KEY to an API key of the file's owner)"
		if x.req.Bearer != "" {
			hint = " (the worker's MORAG_API_KEY is not accepted for this file: is it the owner's key?)"
		}
		return false, fmt.Errorf("server refused the download: HTTP %d%s", code, hint)
	case code == http.StatusNotFound || code == http.StatusGone:
		return false, fmt.Errorf("HTTP %d: the file is not there (an upload expires, or is deleted once its task has a result)", code)
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return false, &retryable{fmt.Errorf("HTTP %d from the server", code)}
	default:
		return false, fmt.Errorf("unexpected HTTP %d from the server", code)
	}

	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			idle.Reset(x.d.idle)
			if x.d.maxSize > 0 && x.got+int64(n) > x.d.maxSize {
				return false, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, x.d.maxSize)
			}
			if _, err := x.f.Write(buf[:n]); err != nil {
				return false, fmt.Errorf("write %s: %w", x.f.Name(), err)
			}
			x.h.Write(buf[:n])
			x.got += int64(n)
			if x.req.Progress != nil {
				x.req.Progress(x.got, x.total)
			}
		}
		if rerr == io.EOF {
			if x.total >= 0 && x.got < x.total {
				return false, &retryable{fmt.Errorf("connection closed after %d of %d bytes", x.got, x.total)}
			}
			return true, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return false, context.Cause(ctx)
			}
			if context.Cause(actx) == errStalled {
				return false, &retryable{fmt.Errorf("no data for %s after %d bytes", x.d.idle, x.got)}
			}
			return false, &retryable{fmt.Errorf("connection lost after %d bytes: %w", x.got, rerr)}
		}
	}
}

// begin takes the file's description from the first good response and
// creates the file.
func (x *transfer) begin(resp *http.Response) error {
	x.ctype = resp.Header.Get("Content-Type")
	if x.total < 0 {
		if resp.StatusCode == http.StatusOK {
			x.total = resp.ContentLength
		} else if _, size, ok := parseContentRange(resp.Header.Get("Content-Range")); ok {
			x.total = size
		}
	}
	if x.d.maxSize > 0 && x.total > x.d.maxSize {
		return fmt.Errorf("%w: the server says %d bytes, the limit is %d", ErrTooLarge, x.total, x.d.maxSize)
	}
	if etag := resp.Header.Get("ETag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		x.validator = etag
	} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
		x.validator = lm
	}
	if v := resp.Header.Get(SHA256Header); v != "" {
		sum, err := parseSHA256(v)
		if err != nil {
			return err
		}
		x.wantSHA = sum
	}
	x.name = responseName(resp, x.u)
	if x.req.Check != nil {
		if err := x.req.Check(resp); err != nil {
			return err
		}
	}
	if x.f == nil {
		return x.create()
	}
	return nil
}

func (x *transfer) create() error {
	if x.name == "" {
		x.name = responseName(nil, x.u)
	}
	f, err := os.CreateTemp(x.req.Dir, "input-*"+safeExt(x.name))
	if err != nil {
		return fmt.Errorf("create the download file: %w", err)
	}
	x.f = f
	return nil
}

// restart empties the file for a transfer that must begin again.
func (x *transfer) restart() error {
	if err := x.f.Truncate(0); err != nil {
		return err
	}
	if _, err := x.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	x.h.Reset()
	x.got, x.total, x.wantSHA = 0, -1, ""
	return nil
}

// discard removes a partial download.
func (x *transfer) discard() {
	if x.f != nil {
		x.f.Close()
		os.Remove(x.f.Name())
		x.f = nil
	}
}

// parseContentRange reads "bytes START-END/SIZE"; size is -1 for "*".
func parseContentRange(v string) (start, size int64, ok bool) {
	v, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, sz, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	s, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	size = -1
	if sz = strings.TrimSpace(sz); sz != "*" {
		if size, err = strconv.ParseInt(sz, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, size, true
}

// parseSHA256 accepts a sha256 as hex or base64, with or without a
// "sha256=" prefix, and returns it as lower-case hex.
func parseSHA256(v string) (string, error) {
	s := strings.TrimSpace(v)
	if k, rest, ok := strings.Cut(s, "="); ok && (strings.EqualFold(k, "sha256") || strings.EqualFold(k, "sha-256")) {
		s = rest
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) == sha256.Size {
		return strings.ToLower(s), nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == sha256.Size {
		return hex.EncodeToString(b), nil
	}
	return "", fmt.Errorf("the server's %s header %q is not a sha256 (hex or base64)", SHA256Header, v)
}

// responseName is the file's name: Content-Disposition's filename, else the
// URL's last path element, else "download".
func responseName(resp *http.Response, u *url.URL) string {
	if resp != nil {
		if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
			if n := cleanName(params["filename"]); n != "" {
				return n
			}
		}
	}
	if n := cleanName(path.Base(u.Path)); n != "" {
		return n
	}
	return "download"
}

// cleanName keeps a file name's last element and drops control characters.
func cleanName(n string) string {
	n = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, n)
	n = path.Base(strings.ReplaceAll(n, "\\", "/"))
	if n == "." || n == "/" || n == ".." {
		return ""
	}
	return strings.TrimSpace(n)
}

// safeExt is name's extension if it is short and plain, so the temporary
// file keeps a hint ffmpeg can use without carrying odd characters.
func safeExt(name string) string {
	ext := strings.ToLower(filepath.Ext(name))
	if len(ext) < 2 || len(ext) > 9 {
		return ""
	}
	for _, r := range ext[1:] {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return ""
		}
	}
	return ext
}

// signedFilesPath starts the gateway's signed file URLs, whose next two path
// elements are the expiry and the signature (gateway/files.SignedURL).
const signedFilesPath = "/api/v1/files/s/"

// redactURL hides query parameters and signed-URL path elements (tokens) and
// credentials in logs and errors.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		c.RawQuery = "…"
	}
	if i := strings.Index(c.Path, signedFilesPath); i >= 0 {
		if parts := strings.SplitN(c.Path[i+len(signedFilesPath):], "/", 3); len(parts) == 3 {
			c.Path = c.Path[:i+len(signedFilesPath)] + "redacted/redacted/" + parts[2]
			c.RawPath = ""
		}
	}
	c.Fragment = ""
	return c.String()
}
