package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"
)

// TestCORSOrigins: -cors-origins with a list answers only those origins,
// refuses other preflights with 400 (as Starlette), and an empty list sends
// no CORS headers at all.
func TestCORSOrigins(t *testing.T) {
	serve := func(origins []string, method, origin string, h ...string) *httptest.ResponseRecorder {
		e := echo.New()
		e.Pre(cors(origins))
		e.GET("/", func(c echo.Context) error { return c.String(http.StatusOK, "hi") })
		req := httptest.NewRequest(method, "/", nil)
		req.Header.Set("Origin", origin)
		for i := 0; i+1 < len(h); i += 2 {
			req.Header.Set(h[i], h[i+1])
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	list := []string{"https://ui.example"}
	pre := []string{"Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "X-API-Key"}

	if rec := serve(list, "OPTIONS", "https://ui.example", pre...); rec.Code != 200 ||
		rec.Header().Get("Access-Control-Allow-Origin") != "https://ui.example" || rec.Header().Get("Access-Control-Allow-Headers") != "X-API-Key" {
		t.Errorf("allowed preflight: %d %v", rec.Code, rec.Header())
	}
	if rec := serve(list, "OPTIONS", "https://evil.example", pre...); rec.Code != 400 || rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("other origin's preflight: %d %v", rec.Code, rec.Header())
	}
	if rec := serve(list, "GET", "https://ui.example"); rec.Header().Get("Access-Control-Allow-Origin") != "https://ui.example" || rec.Header().Get("Vary") != "Origin" {
		t.Errorf("listed origin: %v", rec.Header())
	}
	if rec := serve(list, "GET", "https://evil.example"); rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("other origin: %d %v", rec.Code, rec.Header())
	}
	if rec := serve([]string{"*"}, "GET", "https://any.example", "Cookie", "a=b"); rec.Header().Get("Access-Control-Allow-Origin") != "https://any.example" {
		t.Errorf("any origin with a cookie is echoed (Starlette): %v", rec.Header())
	}
	if rec := serve([]string{}, "OPTIONS", "https://ui.example", pre...); rec.Header().Get("Access-Control-Allow-Origin") != "" || rec.Code == 200 {
		t.Errorf("CORS off: %d %v", rec.Code, rec.Header())
	}
}
