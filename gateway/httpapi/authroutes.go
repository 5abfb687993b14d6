package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/contract"
)

// formValue reads a form field from a urlencoded or multipart body.
func formValue(c echo.Context, name string) string {
	return strings.TrimSpace(c.FormValue(name))
}

// maxAuthForm bounds the body of the key routes: they take a few short
// fields, and an unbounded multipart body would spill to temp files.
const maxAuthForm = 64 << 10

// smallForm parses the key routes' form with a size limit before the
// handlers read fields, answering 413 for an oversized body.
func smallForm(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		r.Body = http.MaxBytesReader(c.Response(), r.Body, maxAuthForm)
		if err := r.ParseMultipartForm(maxAuthForm); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return detail(c, http.StatusRequestEntityTooLarge, "Request body larger than %d bytes", maxAuthForm)
			}
			return detail(c, http.StatusBadRequest, "invalid form: %v", err)
		}
		return next(c)
	}
}

// createKey is POST /api/v1/auth/create-key (admin only).
func (g *Gateway) createKey(c echo.Context) error {
	userID := formValue(c, "user_id")
	if userID == "" {
		return unprocessable(c, errMissing([]any{"body", "user_id"}, nil))
	}
	if err := auth.ValidateUserID(userID); err != nil {
		return detail(c, http.StatusBadRequest, "Invalid user_id: %v", err)
	}
	var expires any
	days := 0
	if s := formValue(c, "expires_days"); s != "" {
		var v validator
		n, ok := v.integer([]any{"body", "expires_days"}, s)
		switch {
		case !ok:
			return unprocessable(c, v.errs...)
		case n < 1:
			return unprocessable(c, fieldError{Type: "greater_than_equal", Loc: []any{"body", "expires_days"},
				Msg: "Input should be greater than or equal to 1", Input: s, Ctx: map[string]any{"ge": 1}})
		case n > auth.MaxExpiresDays:
			return unprocessable(c, fieldError{Type: "less_than_equal", Loc: []any{"body", "expires_days"},
				Msg: fmt.Sprintf("Input should be less than or equal to %d", auth.MaxExpiresDays), Input: s,
				Ctx: map[string]any{"le": auth.MaxExpiresDays}})
		}
		days, expires = int(n), int(n)
	}
	desc := c.FormValue("description")
	key, _, err := g.keys.Create(c.Request().Context(), userID, desc, days)
	if err != nil {
		return detail(c, http.StatusInternalServerError, "Failed to create API key: %v", err)
	}
	g.log.Info().Str("user", userID).Msg("API key created")
	return c.JSON(http.StatusOK, map[string]any{
		"api_key": key, "user_id": userID, "description": desc, "expires_days": expires,
		"message": "API key created successfully",
	})
}

// validateKey is POST /api/v1/auth/validate-key.
func (g *Gateway) validateKey(c echo.Context) error {
	key := formValue(c, "api_key")
	if key == "" {
		return unprocessable(c, errMissing([]any{"body", "api_key"}, nil))
	}
	// The same Guard as every other credential check: a guess here counts
	// against the client's budget as one in a header does.
	data, err := g.guard.CheckKey(c.Request().Context(), auth.ClientKey(c), key)
	var tm *auth.TooManyFailures
	if errors.As(err, &tm) {
		c.Response().Header().Set("Retry-After", strconv.Itoa(tm.Seconds()))
		return detail(c, http.StatusTooManyRequests, "Too many invalid credentials from this client; retry after %d seconds", tm.Seconds())
	}
	if err != nil {
		return detail(c, http.StatusServiceUnavailable, "Failed to validate API key: %v; check that Redis is reachable", err)
	}
	if data == nil {
		return detail(c, http.StatusUnauthorized, "Invalid API key")
	}
	return c.JSON(http.StatusOK, map[string]any{"valid": true, "user_data": data, "message": "API key is valid"})
}

// presentedKey reports whether the request carried an API key at all.
func presentedKey(c echo.Context) bool {
	h := c.Request().Header
	return strings.TrimSpace(h.Get("X-API-Key")) != "" ||
		len(h.Get("Authorization")) > 7 && strings.EqualFold(h.Get("Authorization")[:7], "bearer ")
}

// queueInfo is GET /api/v1/auth/queue-info: MoRAG's bodies plus queue
// lengths and the live GPU workers. A presented but invalid key still gets
// the anonymous body with 200 (as in MoRAG) and an "error" field, so
// scripts that grep for errors notice.
func (g *Gateway) queueInfo(c echo.Context) error {
	ctx := c.Request().Context()
	user := auth.UserFrom(c)
	length := func(q string) int64 {
		n, _ := g.broker.QueueLength(ctx, q)
		return n
	}
	if user == nil {
		body := map[string]any{
			"authenticated": false, "default_queue": contract.DefaultQueue,
			"message":       "No authentication provided - using default queue",
			"queue_lengths": map[string]int64{contract.DefaultQueue: length(contract.DefaultQueue)},
		}
		if presentedKey(c) {
			body["error"] = "Invalid API key"
		}
		return c.JSON(http.StatusOK, body)
	}
	gpuQ, cpuQ := contract.GPUQueue(user.UserID), contract.CPUQueue(user.UserID)
	live := []string{}
	for _, w := range g.fleet.Workers() {
		for _, q := range w.Queues {
			if q == gpuQ {
				live = append(live, w.Hostname)
				break
			}
		}
	}
	return c.JSON(http.StatusOK, map[string]any{
		"authenticated": true, "user_id": user.UserID, "gpu_queue": gpuQ, "cpu_queue": cpuQ,
		"default_queue": contract.DefaultQueue, "message": "User-specific queues available",
		"queue_lengths": map[string]int64{gpuQ: length(gpuQ), cpuQ: length(cpuQ), contract.DefaultQueue: length(contract.DefaultQueue)},
		"gpu_workers":   live, "gpu_available": len(live) > 0,
	})
}

// revokeKey is POST /api/v1/auth/revoke-key (admin only): form or JSON
// api_key (the key or its sha256 hex).
func (g *Gateway) revokeKey(c echo.Context) error {
	key := formValue(c, "api_key")
	if key == "" {
		key = formValue(c, "key_hash")
	}
	if key == "" && strings.HasPrefix(c.Request().Header.Get("Content-Type"), "application/json") {
		var body struct {
			APIKey  string `json:"api_key"`
			KeyHash string `json:"key_hash"`
		}
		if err := decodeJSON(c.Request(), &body); err != nil {
			return g.clientError(c, err)
		}
		key = body.APIKey
		if key == "" {
			key = body.KeyHash
		}
	}
	if key == "" {
		return unprocessable(c, errMissing([]any{"body", "api_key"}, nil))
	}
	ok, err := g.keys.Revoke(c.Request().Context(), key)
	if err != nil {
		return detail(c, http.StatusInternalServerError, "Failed to revoke API key: %v", err)
	}
	if !ok {
		return detail(c, http.StatusNotFound, "API key not found")
	}
	return c.JSON(http.StatusOK, map[string]any{"revoked": true, "message": "API key revoked"})
}

// listKeys is GET /api/v1/auth/keys?user_id= (admin only).
func (g *Gateway) listKeys(c echo.Context) error {
	userID := c.QueryParam("user_id")
	if err := auth.ValidateUserID(userID); err != nil {
		return detail(c, http.StatusBadRequest, "Invalid user_id: %v", err)
	}
	keys, err := g.keys.List(c.Request().Context(), userID)
	if err != nil {
		return detail(c, http.StatusInternalServerError, "Failed to list API keys: %v", err)
	}
	if keys == nil {
		keys = []auth.KeyInfo{}
	}
	return c.JSON(http.StatusOK, map[string]any{"user_id": userID, "keys": keys, "count": len(keys)})
}
