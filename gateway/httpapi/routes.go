package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
)

// routes builds the echo app. Order matters where MoRAG's did:
// /api/v1/status/workers and /stats/queues come before /{task_id}.
func (g *Gateway) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = g.errorHandler
	// Before routing, so preflights to any path are answered.
	e.Pre(cors(g.cfg.CORSOrigins))
	e.IPExtractor = g.ipExtractor()
	e.Use(g.observe, g.requestLimits, auth.Middleware(g.keys, auth.MiddlewareOptions{Logger: g.log, Guard: g.guard}))

	e.GET("/", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"message": "MoRAG API", "version": "0.1.0"})
	})
	e.GET("/health", g.health)
	e.GET("/metrics", g.metricsHandler)
	e.GET("/openapi.json", serveOpenAPI)
	e.GET("/docs", serveDocs)
	e.GET("/redoc", serveRedoc)

	e.POST("/process/url", g.processURL)
	e.POST("/process/file", g.processFile)
	e.POST("/process/web", g.processWeb)
	e.POST("/process/youtube", g.processYouTube)
	e.POST("/process/batch", g.processBatch)
	e.POST("/search", g.search)

	e.POST("/api/v1/ingest/file", g.ingestFile)
	e.POST("/api/v1/ingest/url", g.ingestURL)
	e.POST("/api/v1/ingest/batch", g.ingestBatch)
	e.DELETE("/api/v1/ingest/:task_id", g.cancelTask)

	e.GET("/api/v1/status/workers", g.statusWorkers)
	e.GET("/api/v1/status/stats/queues", g.statusQueues)
	e.GET("/api/v1/status/", g.statusActive)
	e.GET("/api/v1/status/:task_id", g.taskStatus)
	e.POST("/api/v1/admin/cleanup", g.adminCleanup, g.requireAdmin)

	e.POST("/api/v1/auth/create-key", g.createKey, g.requireAdmin, smallForm)
	e.POST("/api/v1/auth/validate-key", g.validateKey, smallForm)
	e.GET("/api/v1/auth/queue-info", g.queueInfo)
	e.POST("/api/v1/auth/revoke-key", g.revokeKey, g.requireAdmin, smallForm)
	e.GET("/api/v1/auth/keys", g.listKeys, g.requireAdmin)

	e.POST("/api/v1/files/download", g.legacyDownload, auth.RequireUser)
	e.POST("/api/v1/files/upload-result", g.uploadResult, auth.RequireUser)
	e.GET("/api/v1/files/s/:expires/:token/:transfer_id", g.getSignedFile)
	e.HEAD("/api/v1/files/s/:expires/:token/:transfer_id", g.getSignedFile)
	e.GET("/api/v1/files/:transfer_id", g.getFile)
	e.HEAD("/api/v1/files/:transfer_id", g.getFile)

	// Gateway-mediated workers (package remote): API key, no Redis.
	g.remote.Mount(e)
	return e
}

// detail is FastAPI's error body.
func detail(c echo.Context, code int, format string, args ...any) error {
	return c.JSON(code, map[string]string{"detail": fmt.Sprintf(format, args...)})
}

// errorHandler answers echo's own errors (404, 405, panics) the FastAPI way.
func (g *Gateway) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "Internal Server Error"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		msg = fmt.Sprint(he.Message)
		if code == http.StatusNotFound {
			if c.Path() == "" && g.redirectSlash(c) {
				return
			}
			msg = "Not Found"
		}
	} else {
		g.log.Error().Err(err).Str("path", c.Request().URL.Path).Msg("request failed")
	}
	_ = c.JSON(code, map[string]string{"detail": msg})
}

// observe logs and counts every request and turns a panic into a 500.
func (g *Gateway) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				g.log.Error().Interface("panic", p).Bytes("stack", debug.Stack()).Str("path", c.Request().URL.Path).
					Msg("handler panicked")
				err = detail(c, http.StatusInternalServerError, "internal error")
			}
			if err != nil {
				c.Error(err)
				err = nil
			}
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			status := c.Response().Status
			g.metrics.request(c.Request().Method, route, status)
			ev := g.log.Debug()
			if status >= 500 {
				ev = g.log.Warn()
			}
			ev.Str("method", c.Request().Method).Str("path", c.Request().URL.Path).Int("status", status).
				Dur("took", time.Since(start)).Msg("request")
		}()
		return next(c)
	}
}
