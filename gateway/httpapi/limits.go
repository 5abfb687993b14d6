package httpapi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"morag-gpu/remote"
)

// Per-route time and size limits on a request, set after routing. The
// http.Server's own timeouts (limits on headers and idle keep-alives) are
// in Run; a whole-request ReadTimeout there would cut slow but honest
// uploads, and a WriteTimeout would cut synchronous /process calls.

// uploadRoutes take a file: their body may be slow (a worker uploading
// over a thin link) but must keep arriving at -upload-min-rate.
var uploadRoutes = map[string]bool{
	"/process/file":               true,
	"/api/v1/ingest/file":         true,
	"/api/v1/files/upload-result": true,
}

// downloadRoutes stream whole uploads to workers: no write deadline.
var downloadRoutes = map[string]bool{
	"/api/v1/files/:transfer_id":                   true,
	"/api/v1/files/s/:expires/:token/:transfer_id": true,
	"/api/v1/files/download":                       true,
}

// errTooSlow is an upload body that fell below -upload-min-rate (408).
var errTooSlow = errors.New("request body too slow")

// requestLimits sets the read deadline and size bound of the body and the
// write deadline of the answer, by route:
//   - upload routes: a minimum-rate reader (see minRateBody);
//   - every other body: read here whole within -read-timeout, at most
//     -max-task-bytes (413);
//   - answers: /process/* may wait -wait-timeout for a result, downloads
//     stream files, everything else has -read-timeout to be written.
//
// Once a body has been read to its end, net/http clears the read deadline
// and reads the connection in the background to notice the client
// leaving; a deadline set after that would cancel the request when it
// expires. So a body-less request gets no read deadline (its background
// read has already started), and minRateBody stops moving the deadline at
// the end of the body.
func (g *Gateway) requestLimits(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		rc := http.NewResponseController(c.Response())
		route := c.Path()
		now := time.Now()
		answer, bounded := g.answerWithin(route)
		upload := uploadRoutes[route] && req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0
		// An upload's answer is timed from the end of its body, which
		// may arrive slowly (minRateBody sets it).
		if bounded && !upload {
			_ = rc.SetWriteDeadline(now.Add(answer))
		}
		if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
			return next(c)
		}
		if upload {
			req.Body = &minRateBody{r: req.Body, rc: rc, start: now, grace: g.cfg.UploadGrace, rate: g.cfg.UploadMinRate, answer: answer}
			return next(c)
		}
		// Nothing but a task message is made of these bodies, so they are
		// read here whole, within -read-timeout, and one larger than a task
		// may be is a 413 before any handler parses it.
		_ = rc.SetReadDeadline(now.Add(g.cfg.ReadTimeout))
		limit := g.cfg.MaxTaskBytes
		if strings.HasPrefix(route, remote.PathPrefix+"/") {
			// A gateway-mediated worker's commit carries results.
			limit = g.remote.MaxBody()
		}
		if req.ContentLength > limit {
			return g.bodyTooLarge(c)
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return inputError(c, http.StatusRequestTimeout, "The request body did not arrive within %s", g.cfg.ReadTimeout)
		case err != nil:
			return inputError(c, http.StatusBadRequest, "The request body ended early; send it again")
		case int64(len(body)) > limit:
			return g.bodyTooLarge(c)
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		return next(c)
	}
}

// bodyTooLarge answers a body over -max-task-bytes; the connection is
// closed after the answer, as the rest of the body is not read.
func (g *Gateway) bodyTooLarge(c echo.Context) error {
	c.Response().Header().Set("Connection", "close")
	return inputError(c, http.StatusRequestEntityTooLarge,
		"Request body larger than %d bytes (-max-task-bytes): a task message cannot be larger; send large content as a file upload", g.cfg.MaxTaskBytes)
}

// answerWithin is how long a route has to write its answer, and whether
// it is bounded at all: /process/* may wait -wait-timeout for the result;
// file downloads stream whole files (the connection caps bound them).
func (g *Gateway) answerWithin(route string) (time.Duration, bool) {
	switch {
	case strings.HasPrefix(route, "/process/"):
		return g.cfg.WaitTimeout + time.Minute, true
	case downloadRoutes[route]:
		return 0, false
	case strings.HasPrefix(route, remote.PathPrefix+"/"):
		// A long poll waits up to its maximum before it answers.
		return g.remote.MaxWait() + g.cfg.ReadTimeout + g.cfg.WriteTimeout, true
	}
	return g.cfg.ReadTimeout + g.cfg.WriteTimeout, true
}

// minRateBody lets a body be slow but not stall: byte n must have arrived
// by start + grace + n/rate. Each Read moves the connection's read
// deadline to that instant, so a client that keeps up is never cut and one
// that stops is cut within grace (plus what it sent ahead of schedule).
// After the end of the body it leaves the deadline alone (see
// requestLimits).
type minRateBody struct {
	r     io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	grace time.Duration
	rate  int64 // bytes per second
	n     int64
	eof   bool
	// answer is the time the handler has to answer once the body is in.
	answer time.Duration
}

func (b *minRateBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	due := b.start.Add(b.grace + time.Duration(float64(b.n)/float64(b.rate)*float64(time.Second)))
	_ = b.rc.SetReadDeadline(due)
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.eof = err == io.EOF; b.eof {
		_ = b.rc.SetWriteDeadline(time.Now().Add(b.answer))
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return n, errTooSlow
	}
	return n, err
}

func (b *minRateBody) Close() error { return b.r.Close() }
