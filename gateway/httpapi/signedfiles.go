package httpapi

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// getSignedFile is GET /api/v1/files/s/{expires}/{token}/{transfer_id}: the
// signed file URL remote workers download without an API key. The
// signature is in the path so the URL ends in the file's extension (see
// files.Store.SignedURL).
func (g *Gateway) getSignedFile(c echo.Context) error {
	id := c.Param("transfer_id")
	if err := g.files.Verify(id, c.Param("expires"), c.Param("token")); err != nil {
		g.log.Warn().Err(err).Str("transfer_id", id).Str("client_ip", c.RealIP()).Msg("refused signed file URL")
		return detail(c, http.StatusForbidden, "%s", strings.ToUpper(err.Error()[:1])+err.Error()[1:])
	}
	u, err := g.files.Get(c.Request().Context(), id)
	if err != nil {
		return fileError(c, err)
	}
	return g.serve(c, u)
}
