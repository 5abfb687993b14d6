package httpapi

import (
	_ "embed"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

//go:embed openapi.json
var openAPI []byte

//go:embed docs.html
var docsPage []byte

func serveOpenAPI(c echo.Context) error { return c.Blob(http.StatusOK, "application/json", openAPI) }

func serveDocs(c echo.Context) error { return c.HTMLBlob(http.StatusOK, docsPage) }

// health is GET /health in MoRAG's shape, with Redis and worker status as
// services.
func (g *Gateway) health(c echo.Context) error {
	ctx := c.Request().Context()
	services := map[string]any{}
	var unhealthy []string
	overall := "healthy"
	start := time.Now()
	if err := ping(ctx, g.pool); err != nil {
		services["redis"] = map[string]any{"status": "unhealthy", "error": err.Error()}
		unhealthy = append(unhealthy, "redis")
		overall = "unhealthy"
	} else {
		services["redis"] = map[string]any{"status": "healthy", "latency_ms": float64(time.Since(start).Microseconds()) / 1000}
	}
	workers := g.fleet.Workers()
	gpu, goW, py := 0, 0, 0
	for _, w := range workers {
		if w.GPU {
			gpu++
		}
		if w.Implementation == "go" {
			goW++
		} else {
			py++
		}
	}
	ws := map[string]any{"status": "healthy", "total": len(workers), "gpu": gpu, "go": goW, "python": py}
	if len(workers) == 0 {
		ws["status"] = "degraded"
		ws["message"] = "no live workers: tasks wait in their queues"
		if overall == "healthy" {
			overall = "degraded"
		}
	}
	services["workers"] = ws
	body := map[string]any{"overall_status": overall, "services": services,
		"uptime_seconds": int64(time.Since(g.started).Seconds())}
	if len(unhealthy) > 0 {
		body["unhealthy_services"] = unhealthy
	}
	code := http.StatusOK
	if overall == "unhealthy" {
		code = http.StatusServiceUnavailable
	}
	return c.JSON(code, body)
}

// metricsHandler is GET /metrics in Prometheus text format.
func (g *Gateway) metricsHandler(c echo.Context) error {
	lengths, _ := g.queueLengths(c.Request().Context())
	workers := g.fleet.Workers()
	gpu := 0
	for _, w := range workers {
		if w.GPU {
			gpu++
		}
	}
	c.Response().Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	c.Response().WriteHeader(http.StatusOK)
	g.metrics.write(c.Response(), lengths, len(workers), gpu)
	return nil
}
