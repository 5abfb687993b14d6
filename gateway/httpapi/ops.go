package httpapi

import (
	_ "embed"
	"morag-gpu/contract"
	"net/http"
	"slices"
	"time"

	"github.com/labstack/echo/v4"
)

//go:embed openapi.json
var openAPI []byte

//go:embed docs.html
var docsPage []byte

func serveOpenAPI(c echo.Context) error { return c.Blob(http.StatusOK, "application/json", openAPI) }

func serveDocs(c echo.Context) error { return c.HTMLBlob(http.StatusOK, docsPage) }

// redocPage is FastAPI's get_redoc_html for MoRAG's app (title "MoRAG API",
// ReDoc 2 from jsDelivr), as upstream serves it at /redoc; browsers without
// internet access use /docs, which needs nothing from outside.
const redocPage = `<!DOCTYPE html>
<html>
<head>
<title>MoRAG API - ReDoc</title>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link href="https://fonts.googleapis.com/css?family=Montserrat:300,400,700|Roboto:300,400,700" rel="stylesheet">
<link rel="shortcut icon" href="https://fastapi.tiangolo.com/img/favicon.png">
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<noscript>ReDoc requires Javascript to function. Please enable it to browse the documentation.</noscript>
<redoc spec-url="/openapi.json"></redoc>
<script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"> </script>
</body>
</html>
`

func serveRedoc(c echo.Context) error { return c.HTML(http.StatusOK, redocPage) }

// moragServices are the services MoRAG's /health reports, in its order
// (MoRAGServices.get_health_status).
var moragServices = []string{"document", "audio", "video", "image", "embedding", "web", "youtube"}

// health is GET /health in MoRAG's shape ({overall_status, services:
// {document, audio, video, image, embedding, web, youtube},
// unhealthy_services?}) plus the gateway's own services, redis and
// workers, and uptime_seconds. MoRAG's services run on the workers here:
// one is healthy when a live worker consumes the queue its tasks go to
// (celery; for audio and video also a GPU queue). Redis down is
// "unhealthy" and 503; anything else that is not healthy is "degraded"
// and 200.
func (g *Gateway) health(c echo.Context) error {
	ctx := c.Request().Context()
	services := map[string]any{}
	var unhealthy []string
	overall := "healthy"
	start := time.Now()
	redisUp := true
	if err := ping(ctx, g.pool); err != nil {
		redisUp = false
		services["redis"] = map[string]any{"status": "unhealthy", "error": err.Error()}
		overall = "unhealthy"
	} else {
		services["redis"] = map[string]any{"status": "healthy", "latency_ms": float64(time.Since(start).Microseconds()) / 1000}
	}
	workers := g.fleet.Workers()
	gpu, goW, py, celery := 0, 0, 0, 0
	for _, w := range workers {
		if w.GPU {
			gpu++
		}
		if w.Implementation == "go" {
			goW++
		} else {
			py++
		}
		if slices.Contains(w.Queues, contract.DefaultQueue) {
			celery++
		}
	}
	for _, name := range moragServices {
		n := celery
		if name == "audio" || name == "video" {
			n += gpu
		}
		st := map[string]any{"status": "healthy", "workers": n}
		switch {
		case !redisUp:
			st["status"], st["error"] = "unhealthy", "redis is unreachable: no task can be queued"
		case n == 0:
			st["status"], st["message"] = "degraded", "no live worker consumes its queue: tasks wait until one does"
		}
		services[name] = st
	}
	ws := map[string]any{"status": "healthy", "total": len(workers), "gpu": gpu, "go": goW, "python": py}
	if len(workers) == 0 {
		ws["status"] = "degraded"
		ws["message"] = "no live workers: tasks wait in their queues"
	}
	services["workers"] = ws
	for _, name := range append(slices.Clone(moragServices), "redis", "workers") {
		if st, _ := services[name].(map[string]any); st["status"] != "healthy" {
			unhealthy = append(unhealthy, name)
		}
	}
	if overall == "healthy" && len(unhealthy) > 0 {
		overall = "degraded"
	}
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

// metricsHandler is GET /metrics in Prometheus text format (see metrics.go).
func (g *Gateway) metricsHandler(c echo.Context) error {
	g.metrics.http.ServeHTTP(c.Response(), c.Request())
	return nil
}
