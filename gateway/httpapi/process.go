package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
)

const taskPrefix = "morag.worker."

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func optionsOrNil(m map[string]any) any {
	if m == nil {
		return nil
	}
	return m
}

// processFile is POST /process/file: multipart file, content_type, options
// (JSON string), gpu; async=true answers 202 at once.
func (g *Gateway) processFile(c echo.Context) error {
	req := c.Request()
	user := auth.UserFrom(c)
	owner := ""
	if user != nil {
		owner = user.UserID
	}
	f, err := g.readForm(req.Context(), req, owner, true)
	if err != nil {
		return clientError(c, err)
	}
	up := f.upload
	// From here on a refused request must delete the upload.
	drop := func() { _ = g.files.Delete(context.WithoutCancel(req.Context()), up.ID) }
	options, err := parseJSONObject("options", f.value("options"))
	if err != nil {
		drop()
		return clientError(c, err)
	}
	gpu, err := parseBool("gpu", f.value("gpu"), false)
	if err != nil {
		drop()
		return clientError(c, err)
	}
	async, err := asyncRequested(req, f)
	if err != nil {
		drop()
		return clientError(c, err)
	}
	d, _ := g.route(c, gpu)
	contentType := nullable(f.value("content_type"))
	var name string
	var args []any
	if d.GPU || g.cfg.FileTransfer == TransferHTTP {
		uid := d.UserID
		if uid == "" {
			uid = "anonymous"
		}
		name = taskPrefix + "process_file_task_remote"
		args = []any{g.files.SignedURL(g.cfg.PublicURL, up.ID, g.cfg.URLTTL), uid, contentType, optionsOrNil(options)}
	} else {
		name = taskPrefix + "process_file_task"
		args = []any{g.files.Path(up), contentType, optionsOrNil(options)}
	}
	res, err := g.send(c, d, name, args)
	if err != nil {
		drop()
		return enqueueError(c, err)
	}
	if err := g.files.AttachTask(req.Context(), up, res.ID); err != nil {
		g.log.Warn().Err(err).Str("task_id", res.ID).Msg("could not attach the upload to its task; the sweeper removes it after 24 h")
	}
	if async {
		return g.accepted(c, res.ID, d)
	}
	meta, err := g.wait(c, res)
	if err != nil {
		return g.waitError(c, res.ID, err)
	}
	drop() // the result is stored: the upload has served its purpose
	out := g.toResult(meta, d)
	out.Metadata["upload"] = map[string]any{"transfer_id": up.ID, "size": up.Size, "sha256": up.SHA256, "filename": up.Name}
	return c.JSON(http.StatusOK, out)
}

// urlRequest is MoRAG's ProcessURLRequest.
type urlRequest struct {
	URL         string         `json:"url"`
	ContentType string         `json:"content_type"`
	Options     map[string]any `json:"options"`
	GPU         *bool          `json:"gpu"`
}

// processURLish is the shared body of /process/url, /web and /youtube.
func (g *Gateway) processURLish(c echo.Context, local, remote string, withContentType bool) error {
	var body urlRequest
	if err := decodeJSON(c.Request(), &body); err != nil {
		return clientError(c, err)
	}
	if strings.TrimSpace(body.URL) == "" {
		return detail(c, http.StatusUnprocessableEntity, "url is required")
	}
	async, err := asyncRequested(c.Request(), nil)
	if err != nil {
		return clientError(c, err)
	}
	d, _ := g.route(c, body.GPU != nil && *body.GPU)
	var name string
	var args []any
	if d.GPU {
		name = taskPrefix + remote
		args = []any{body.URL, d.UserID}
		if withContentType {
			args = append(args, nullable(body.ContentType))
		}
	} else {
		name = taskPrefix + local
		args = []any{body.URL}
		if withContentType {
			args = append(args, nullable(body.ContentType))
		}
	}
	args = append(args, optionsOrNil(body.Options))
	res, err := g.send(c, d, name, args)
	if err != nil {
		return enqueueError(c, err)
	}
	if async {
		return g.accepted(c, res.ID, d)
	}
	meta, err := g.wait(c, res)
	if err != nil {
		return g.waitError(c, res.ID, err)
	}
	return c.JSON(http.StatusOK, g.toResult(meta, d))
}

func (g *Gateway) processURL(c echo.Context) error {
	return g.processURLish(c, "process_url_task", "process_url_task_remote", true)
}

func (g *Gateway) processWeb(c echo.Context) error {
	return g.processURLish(c, "process_web_page_task", "process_web_page_task_remote", false)
}

func (g *Gateway) processYouTube(c echo.Context) error {
	return g.processURLish(c, "process_youtube_video_task", "process_youtube_video_task_remote", false)
}

// processBatch is POST /process/batch: a JSON list of results.
func (g *Gateway) processBatch(c echo.Context) error {
	var body struct {
		Items   []map[string]any `json:"items"`
		Options map[string]any   `json:"options"`
	}
	if err := decodeJSON(c.Request(), &body); err != nil {
		return clientError(c, err)
	}
	if body.Items == nil {
		return detail(c, http.StatusUnprocessableEntity, "items is required")
	}
	async, err := asyncRequested(c.Request(), nil)
	if err != nil {
		return clientError(c, err)
	}
	d, _ := g.route(c, false)
	items := make([]any, len(body.Items))
	for i, it := range body.Items {
		items[i] = it
	}
	res, err := g.send(c, d, taskPrefix+"process_batch_task", []any{items, optionsOrNil(body.Options)})
	if err != nil {
		return enqueueError(c, err)
	}
	if async {
		return g.accepted(c, res.ID, d)
	}
	meta, err := g.wait(c, res)
	if err != nil {
		return g.waitError(c, res.ID, err)
	}
	if terr := meta.Err(); terr != nil {
		return c.JSON(http.StatusOK, []ProcessingResult{g.toResult(meta, d)})
	}
	var v any
	_ = meta.DecodeResult(&v)
	list, _ := v.([]any)
	out := make([]ProcessingResult, 0, len(list))
	for _, it := range list {
		r := resultFromValue(it)
		r.Metadata["routing"] = map[string]any{"queue": d.Queue, "reason": d.Reason}
		out = append(out, r)
	}
	g.metrics.outcome("success")
	return c.JSON(http.StatusOK, out)
}
