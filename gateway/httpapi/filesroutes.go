package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/contract"
	"morag-gpu/gateway/files"
	"morag-gpu/protocol"
)

// getFile is GET /api/v1/files/{transfer_id}: with a valid signed token in
// the query (what file_url carries), or with the owner's API key.
func (g *Gateway) getFile(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("transfer_id")
	q := c.Request().URL.Query()
	if q.Has("token") || q.Has("expires") {
		if err := g.files.Verify(id, q.Get("expires"), q.Get("token")); err != nil {
			g.log.Warn().Err(err).Str("transfer_id", id).Str("client_ip", c.RealIP()).Msg("refused signed file URL")
			return detail(c, http.StatusForbidden, "%s", strings.ToUpper(err.Error()[:1])+err.Error()[1:])
		}
		u, err := g.files.Get(ctx, id)
		if err != nil {
			return fileError(c, err)
		}
		return g.serve(c, u)
	}
	user := auth.UserFrom(c)
	if user == nil {
		c.Response().Header().Set("WWW-Authenticate", "Bearer")
		return detail(c, http.StatusUnauthorized, "Valid API key required")
	}
	u, err := g.files.Get(ctx, id)
	if err != nil {
		return fileError(c, err)
	}
	if u.UserID == "" || u.UserID != user.UserID {
		// Same answer as a missing file: ids of others' files are not confirmed.
		g.log.Warn().Str("user", user.UserID).Str("transfer_id", id).Msg("refused another user's file")
		return detail(c, http.StatusNotFound, "File not found")
	}
	return g.serve(c, u)
}

func fileError(c echo.Context, err error) error {
	switch {
	case errors.Is(err, files.ErrNotFound):
		return detail(c, http.StatusNotFound, "File not found")
	case errors.Is(err, files.ErrOutside):
		return detail(c, http.StatusForbidden, "File access denied")
	}
	return detail(c, http.StatusInternalServerError, "%v", err)
}

// serve sends an upload with Range support and its sha256.
func (g *Gateway) serve(c echo.Context, u *files.Upload) error {
	f, err := os.Open(g.files.Path(u))
	if err != nil {
		return detail(c, http.StatusNotFound, "File not found")
	}
	defer f.Close()
	h := c.Response().Header()
	h.Set("X-Content-SHA256", u.SHA256)
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": u.Name}))
	h.Set("Cache-Control", "no-store")
	http.ServeContent(c.Response(), c.Request(), u.ID, time.Unix(u.CreatedAt, 0), f)
	return nil
}

// legacyDownload is POST /api/v1/files/download {file_path}: only uploads
// inside -upload-dir (after cleaning and resolving symlinks) that the
// caller owns.
func (g *Gateway) legacyDownload(c echo.Context) error {
	var body struct {
		FilePath string `json:"file_path"`
	}
	if err := decodeJSON(c.Request(), &body); err != nil {
		return g.clientError(c, err)
	}
	if body.FilePath == "" {
		return detail(c, http.StatusBadRequest, "file_path required")
	}
	user := auth.UserFrom(c)
	u, err := g.files.Resolve(c.Request().Context(), body.FilePath)
	if err != nil {
		g.log.Warn().Err(err).Str("user", user.UserID).Str("file_path", body.FilePath).Msg("refused legacy download")
		return fileError(c, err)
	}
	if u.UserID != user.UserID {
		g.log.Warn().Str("user", user.UserID).Str("transfer_id", u.ID).Msg("refused another user's file")
		return detail(c, http.StatusNotFound, "File not found")
	}
	return g.serve(c, u)
}

// uploadResult is POST /api/v1/files/upload-result: a remote worker's
// result (result_data JSON, optional file), stored and attached to its task
// (result_data.task_id) for 24 h.
func (g *Gateway) uploadResult(c echo.Context) error {
	ctx := c.Request().Context()
	user := auth.UserFrom(c)
	f, err := g.readForm(ctx, c.Request(), user.UserID, false)
	if err != nil {
		return g.clientError(c, err)
	}
	drop := func() {
		if f.upload != nil {
			_ = g.files.Delete(context.WithoutCancel(ctx), f.upload.ID)
		}
	}
	raw, ok := f.fields["result_data"]
	if !ok {
		drop()
		return unprocessable(c, errMissing([]any{"body", "result_data"}, nil))
	}
	result, err := parseJSONObject("result_data", raw)
	if err != nil {
		drop()
		return g.clientError(c, err)
	}
	if result == nil {
		result = map[string]any{}
	}
	taskID, _ := result["task_id"].(string)
	if taskID != "" && !validTaskID(taskID) {
		drop()
		return inputError(c, http.StatusBadRequest, "Invalid result_data.task_id: at most 128 letters, digits and . _ : -")
	}
	if taskID == "" {
		taskID = "result-" + protocol.NewID()
	}
	if f.upload != nil {
		result["uploaded_file"] = map[string]any{"transfer_id": f.upload.ID, "size": f.upload.Size,
			"sha256": f.upload.SHA256, "filename": f.upload.Name}
	}
	record, _ := json.Marshal(map[string]any{"user_id": user.UserID, "task_id": taskID, "result": result,
		"received_at": time.Now().UTC().Format(time.RFC3339)})
	conn, err := g.pool.GetContext(ctx)
	if err != nil {
		drop()
		return detail(c, http.StatusServiceUnavailable, "Could not store the result: %v", err)
	}
	defer conn.Close()
	// A result may only be attached to the uploader's own task: otherwise
	// any key could overwrite another user's result.
	if other, err := g.resultOwner(ctx, conn, taskID); err != nil {
		drop()
		return detail(c, http.StatusServiceUnavailable, "Could not store the result: %v", err)
	} else if other != "" && other != user.UserID {
		drop()
		g.log.Warn().Str("user", user.UserID).Str("task_id", taskID).Msg("refused a result for another user's task")
		return taskNotFound(c) // as for an unknown task: existence does not leak
	}
	if _, err := redis.DoContext(conn, ctx, "SET", contract.ResultKey(taskID), record, "EX", int64(g.cfg.ResultExpires/time.Second)); err != nil {
		drop()
		return detail(c, http.StatusServiceUnavailable, "Could not store the result: %v", err)
	}
	g.log.Info().Str("user", user.UserID).Str("task_id", taskID).Bool("file", f.upload != nil).Msg("result uploaded from remote worker")
	out := map[string]any{"status": "success", "message": "Result uploaded successfully", "task_id": taskID}
	if f.upload != nil {
		out["transfer_id"] = f.upload.ID
	}
	return c.JSON(http.StatusOK, out)
}

// resultOwner is the user a task belongs to: who submitted it with a key,
// else who stored its result first; "" when nobody has claimed it.
func (g *Gateway) resultOwner(ctx context.Context, conn redis.Conn, taskID string) (string, error) {
	owner, err := ownerOn(ctx, conn, taskID)
	if err != nil || owner.user != "" {
		return owner.user, err
	}
	raw, err := redis.Bytes(redis.DoContext(conn, ctx, "GET", contract.ResultKey(taskID)))
	if errors.Is(err, redis.ErrNil) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var prev struct {
		UserID string `json:"user_id"`
	}
	_ = json.Unmarshal(raw, &prev)
	return prev.UserID, nil
}
