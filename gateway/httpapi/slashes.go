package httpapi

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// redirectSlash answers a request no route matches, when the same path with
// its trailing slash added or removed does match (any method), with a 307
// to that path: Starlette's redirect_slashes, which MoRAG's clients meet at
// GET /api/v1/status (registered as /api/v1/status/). It reports whether it
// answered.
func (g *Gateway) redirectSlash(c echo.Context) bool {
	req := c.Request()
	p := req.URL.Path
	if p == "/" || p == "" {
		return false
	}
	other := p + "/"
	if strings.HasSuffix(p, "/") {
		other = strings.TrimSuffix(p, "/")
	}
	probe := g.echo.NewContext(req, nil)
	g.echo.Router().Find(req.Method, other, probe)
	if probe.Path() == "" {
		return false
	}
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	u := *req.URL
	u.Scheme, u.Host, u.Path, u.RawPath = scheme, req.Host, other, ""
	c.Response().Header().Set("Location", u.String())
	c.Response().WriteHeader(http.StatusTemporaryRedirect)
	return true
}
