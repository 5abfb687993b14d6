package httpapi

import (
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// corsMethods is what Starlette's CORSMiddleware answers for
// allow_methods=["*"].
const corsMethods = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"

// cors answers as MoRAG's CORSMiddleware(allow_origins=["*"],
// allow_credentials=True, allow_methods=["*"], allow_headers=["*"]) does,
// with the origins configurable (-cors-origins). Because credentials are
// allowed, Starlette echoes the caller's Origin rather than "*", and a
// preflight allows whatever headers it asks for (Authorization,
// X-API-Key). A preflight from an origin not allowed is 400, as there.
func cors(origins []string) echo.MiddlewareFunc {
	all := slices.Contains(origins, "*")
	allowed := func(o string) bool { return all || slices.Contains(origins, o) }
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			origin := req.Header.Get("Origin")
			if origin == "" || len(origins) == 0 {
				return next(c)
			}
			h := c.Response().Header()
			if req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != "" {
				h.Add("Vary", "Origin")
				h.Set("Access-Control-Allow-Methods", corsMethods)
				h.Set("Access-Control-Max-Age", "600")
				h.Set("Access-Control-Allow-Credentials", "true")
				if rh := req.Header.Get("Access-Control-Request-Headers"); rh != "" {
					h.Set("Access-Control-Allow-Headers", rh)
				}
				if !allowed(origin) {
					return c.String(http.StatusBadRequest, "Disallowed CORS origin")
				}
				h.Set("Access-Control-Allow-Origin", origin)
				return c.String(http.StatusOK, "OK")
			}
			if allowed(origin) {
				// Starlette: "*" for any origin unless a cookie came along,
				// then (and for an explicit list) the origin itself.
				if all && req.Header.Get("Cookie") == "" {
					h.Set("Access-Control-Allow-Origin", "*")
				} else {
					h.Set("Access-Control-Allow-Origin", origin)
					h.Add("Vary", "Origin")
				}
				h.Set("Access-Control-Allow-Credentials", "true")
				// Let browsers read our routing headers too.
				h.Set("Access-Control-Expose-Headers", strings.Join([]string{"X-Morag-Queue", "X-Morag-Routing-Reason"}, ", "))
			}
			return next(c)
		}
	}
}
