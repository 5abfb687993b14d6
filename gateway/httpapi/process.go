package httpapi

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/contract"
)

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
		return g.clientError(c, err)
	}
	up := f.upload
	// From here on a refused request must delete the upload.
	drop := func() { _ = g.files.Delete(context.WithoutCancel(req.Context()), up.ID) }
	// FastAPI validates the declared fields (422) before the handler
	// parses options (400).
	var v validator
	gpu := v.formBool(f, "gpu", false)
	async := v.queryBool(req, "async", false) || v.formBool(f, "async", false)
	if v.failed() {
		drop()
		return unprocessable(c, v.errs...)
	}
	options, err := parseJSONObject("options", f.value("options"))
	if err != nil {
		drop()
		return g.clientError(c, err)
	}
	if err := noteUpload(c, up.Size, f.value("time_limit")); err != nil {
		drop()
		return g.clientError(c, err)
	}
	d, need := g.route(c, gpu, func() auth.Need {
		return uploadNeed(req.Context(), g.files.Path(up), up.Name, f.value("content_type"))
	})
	if why := g.checkDeadEnd(c, d, need, async); why != "" {
		drop()
		return g.unreachable(c, d, why)
	}
	// MoRAG types, not the MIME types clients often send (upstream
	// normalizes before processing; a Python worker makes a MIME type
	// "unknown").
	contentType := normalizeContentType(f.value("content_type"))
	var name string
	var args []any
	if d.GPU || g.cfg.FileTransfer == TransferHTTP {
		uid := d.UserID
		if uid == "" {
			uid = "anonymous"
		}
		name = contract.ProcessFileRemoteTask
		args = []any{g.files.SignedURL(g.cfg.PublicURL, up.ID, g.cfg.URLTTL), uid, contentType, optionsOrNil(options)}
	} else {
		name = contract.ProcessFileTask
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
	meta, err := g.wait(c, res, d, need)
	if err != nil {
		return g.waitError(c, res.ID, err)
	}
	drop() // the result is stored: the upload has served its purpose
	if meta.Err() != nil {
		return g.processingFailed(c, meta, d)
	}
	out := g.toResult(meta, d)
	out.Metadata["upload"] = map[string]any{"transfer_id": up.ID, "size": up.Size, "sha256": up.SHA256, "filename": up.Name}
	return c.JSON(http.StatusOK, out)
}

// urlRequest is MoRAG's ProcessURLRequest.
type urlRequest struct {
	URL         string
	ContentType string
	Options     map[string]any
	GPU         *bool
}

// readURLRequest validates a ProcessURLRequest body as pydantic does.
func readURLRequest(c echo.Context) (urlRequest, []fieldError) {
	m, ferr := readJSONBody(c.Request())
	if ferr != nil {
		return urlRequest{}, []fieldError{*ferr}
	}
	var v validator
	b := bodyField{v: &v, body: m}
	var r urlRequest
	r.URL, _ = b.str("url", true)
	r.ContentType, _ = b.str("content_type", false)
	r.Options = b.object("options")
	gpu := b.boolean("gpu", false)
	r.GPU = &gpu
	return r, v.errs
}

// processURLish is the shared body of /process/url, /web and /youtube.
func (g *Gateway) processURLish(c echo.Context, local, remote string, withContentType bool) error {
	body, errs := readURLRequest(c)
	var v validator
	async := v.queryBool(c.Request(), "async", false)
	if errs = append(errs, v.errs...); len(errs) > 0 {
		return unprocessable(c, errs...)
	}
	d, need := g.route(c, body.GPU != nil && *body.GPU, func() auth.Need {
		if !withContentType {
			return auth.Need{} // web pages and YouTube: a Python worker's job whatever they hold
		}
		return urlNeed(body.URL, body.ContentType)
	})
	var name string
	var args []any
	if d.GPU {
		name = remote
		args = []any{body.URL, d.UserID}
		if withContentType {
			args = append(args, nullable(body.ContentType))
		}
	} else {
		name = local
		args = []any{body.URL}
		if withContentType {
			args = append(args, nullable(body.ContentType))
		}
	}
	args = append(args, optionsOrNil(body.Options))
	meta, err := g.submit(c, d, need, async, name, args)
	if meta == nil {
		return err
	}
	if meta.Err() != nil {
		return g.processingFailed(c, meta, d)
	}
	return c.JSON(http.StatusOK, g.toResult(meta, d))
}

func (g *Gateway) processURL(c echo.Context) error {
	return g.processURLish(c, contract.ProcessURLTask, contract.ProcessURLRemoteTask, true)
}

func (g *Gateway) processWeb(c echo.Context) error {
	return g.processURLish(c, contract.ProcessWebPageTask, contract.ProcessWebPageRemoteTask, false)
}

func (g *Gateway) processYouTube(c echo.Context) error {
	return g.processURLish(c, contract.ProcessYouTubeTask, contract.ProcessYouTubeRemoteTask, false)
}

// processBatch is POST /process/batch: a JSON list of results.
func (g *Gateway) processBatch(c echo.Context) error {
	m, ferr := readJSONBody(c.Request())
	if ferr != nil {
		return unprocessable(c, *ferr)
	}
	var v validator
	b := bodyField{v: &v, body: m}
	items := b.objects("items")
	options := b.object("options")
	async := v.queryBool(c.Request(), "async", false)
	if v.failed() {
		return unprocessable(c, v.errs...)
	}
	d, _ := g.route(c, false, nil)
	meta, err := g.submit(c, d, auth.Need{}, async, contract.ProcessBatchTask, []any{items, optionsOrNil(options)})
	if meta == nil {
		return err
	}
	if terr := meta.Err(); terr != nil {
		return c.JSON(http.StatusOK, []ProcessingResult{g.toResult(meta, d)})
	}
	var result any
	_ = meta.DecodeResult(&result)
	list, _ := result.([]any)
	out := make([]ProcessingResult, 0, len(list))
	for _, it := range list {
		r := resultFromValue(it)
		r.ErrorMessage = g.publicMessage(meta.TaskID, r.ErrorMessage)
		r.Metadata["routing"] = routingMeta(d)
		out = append(out, r)
	}
	g.metrics.outcome("success")
	return c.JSON(http.StatusOK, out)
}
