package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"

	"github.com/labstack/echo/v4"

	"morag-gpu/gateway/files"
)

// inputError answers a request refused because of what the client sent:
// a 4xx with a message saying what to change. Every such answer goes
// through here, so the body's shape can be changed in one place.
func inputError(c echo.Context, code int, format string, args ...any) error {
	return detail(c, code, format, args...)
}

// errBadForm is a client error in the form (400).
type errBadForm struct{ msg string }

func (e *errBadForm) Error() string { return e.msg }

// errAnonymousUpload is an upload without a key on a gateway started with
// -anonymous-uploads=false (401).
var errAnonymousUpload = errors.New("this gateway accepts uploads only with an API key (Authorization: Bearer <key> or X-API-Key)")

// clientError maps the errors of reading a request (form, upload, JSON
// body) to their answers: what the client can fix is a 4xx with a message;
// a full disk is 507; anything else is the gateway's fault (500, logged).
func (g *Gateway) clientError(c echo.Context, err error) error {
	var bf *errBadForm
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errNoFile):
		return unprocessable(c, errMissing([]any{"body", "file"}, nil))
	case errors.As(err, &bf):
		return inputError(c, http.StatusBadRequest, "%s", bf.msg)
	case errors.Is(err, files.ErrTooLarge), errors.Is(err, errTaskTooLarge):
		return inputError(c, http.StatusRequestEntityTooLarge, "%v", err)
	case errors.As(err, &mbe):
		return inputError(c, http.StatusRequestEntityTooLarge, "Request body larger than %d bytes", mbe.Limit)
	case errors.Is(err, files.ErrQuota):
		return inputError(c, http.StatusRequestEntityTooLarge, "%v", err)
	case errors.Is(err, files.ErrDiskFull):
		g.log.Warn().Err(err).Msg("upload refused: free disk below the floor")
		return detail(c, http.StatusInsufficientStorage, "%v", err)
	case errors.Is(err, errAnonymousUpload):
		c.Response().Header().Set("WWW-Authenticate", "Bearer")
		return inputError(c, http.StatusUnauthorized, "%v", err)
	case errors.Is(err, errTooSlow), errors.Is(err, os.ErrDeadlineExceeded):
		return inputError(c, http.StatusRequestTimeout, "The request body arrived too slowly; the gateway needs at least %d bytes/s after the first %s", g.cfg.UploadMinRate, g.cfg.UploadGrace)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return inputError(c, http.StatusBadRequest, "The request body ended early (truncated form or upload); send it again")
	case errors.Is(err, context.Canceled):
		return detail(c, 499, "client closed the request")
	}
	g.log.Error().Err(err).Str("path", c.Request().URL.Path).Msg("request failed")
	return detail(c, http.StatusInternalServerError, "The gateway could not handle the request; the error is in its log")
}
