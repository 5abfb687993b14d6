package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/contract"
)

var documentIDPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// IngestResponse is MoRAG's IngestResponse.
type IngestResponse struct {
	TaskID        string `json:"task_id"`
	Status        string `json:"status"`
	Message       string `json:"message"`
	EstimatedTime *int   `json:"estimated_time"`
}

// BatchIngestResponse is MoRAG's BatchIngestResponse.
type BatchIngestResponse struct {
	BatchID    string   `json:"batch_id"`
	TaskIDs    []string `json:"task_ids"`
	TotalItems int      `json:"total_items"`
	Message    string   `json:"message"`
}

func intp(n int) *int { return &n }

// routingHeaders tell the client where an ingest task went without
// changing MoRAG's response bodies.
func routingHeaders(c echo.Context, d auth.Decision) {
	c.Response().Header().Set("X-Morag-Queue", d.Queue)
	c.Response().Header().Set("X-Morag-Routing-Reason", d.Reason)
}

// ingestFile is POST /api/v1/ingest/file with MoRAG's form fields.
func (g *Gateway) ingestFile(c echo.Context) error {
	req := c.Request()
	owner := ""
	if u := auth.UserFrom(c); u != nil {
		owner = u.UserID
	}
	f, err := g.readForm(req.Context(), req, owner, true)
	if err != nil {
		return g.clientError(c, err)
	}
	up := f.upload
	fail := func(err error) error {
		_ = g.files.Delete(context.WithoutCancel(req.Context()), up.ID)
		return g.clientError(c, err)
	}
	// Upstream's order: the declared fields (422), metadata's JSON (400),
	// then its own range and pattern checks (400).
	var v validator
	replace := v.formBool(f, "replace_existing", false)
	useDocling := v.formBool(f, "use_docling", false)
	chunkSize := v.formInt(f, "chunk_size")
	chunkOverlap := v.formInt(f, "chunk_overlap")
	gpu := v.formBool(f, "gpu", false)
	if v.failed() {
		_ = g.files.Delete(context.WithoutCancel(req.Context()), up.ID)
		return unprocessable(c, v.errs...)
	}
	if err := noteUpload(c, up.Size, f.value("time_limit")); err != nil {
		return fail(err)
	}
	metadata, err := parseJSONObject("metadata", f.value("metadata"))
	if err != nil {
		return fail(err)
	}
	if metadata == nil {
		metadata = map[string]any{}
	}
	if n, ok := chunkSize.(int64); ok && (n < 500 || n > 16000) {
		return fail(&errBadForm{"chunk_size must be between 500 and 16000 characters"})
	}
	if n, ok := chunkOverlap.(int64); ok && (n < 0 || n > 1000) {
		return fail(&errBadForm{"chunk_overlap must be between 0 and 1000 characters"})
	}
	docID := f.value("document_id")
	if docID != "" && !documentIDPattern.MatchString(docID) {
		return fail(&errBadForm{"Document ID must contain only alphanumeric characters, hyphens, and underscores"})
	}
	// Detected as upstream does, from the stored file's name, which keeps
	// the client's (as upstream's <8hex>_<name> did).
	sourceType := f.value("source_type")
	if sourceType == "" {
		sourceType = detectFromFile(g.files.Path(up))
	}
	options := map[string]any{
		"document_id":        nullable(docID),
		"replace_existing":   replace,
		"webhook_url":        f.value("webhook_url"),
		"metadata":           metadata,
		"use_docling":        useDocling,
		"chunk_size":         chunkSize,
		"chunk_overlap":      chunkOverlap,
		"chunking_strategy":  nullable(f.value("chunking_strategy")),
		"store_in_vector_db": true,
	}
	d, need := g.route(c, gpu, func() auth.Need {
		return uploadNeed(req.Context(), g.files.Path(up), up.Name, f.value("source_type"))
	})
	g.checkDeadEnd(c, d, need, true) // ingest is always asynchronous
	source := g.files.Path(up)
	if d.GPU || g.cfg.FileTransfer == TransferHTTP {
		// A remote worker cannot read our disk: it gets the signed URL
		// in place of the path, and in options.file_url.
		source = g.files.SignedURL(g.cfg.PublicURL, up.ID, g.cfg.URLTTL)
		options["file_url"] = source
	}
	res, err := g.send(c, d, contract.IngestFileTask, []any{source, sourceType, options})
	if err != nil {
		_ = g.files.Delete(context.WithoutCancel(req.Context()), up.ID)
		return enqueueError(c, err)
	}
	if err := g.files.AttachTask(req.Context(), up, res.ID); err != nil {
		g.log.Warn().Err(err).Str("task_id", res.ID).Msg("could not attach the upload to its task")
	}
	routingHeaders(c, d)
	return c.JSON(http.StatusOK, IngestResponse{TaskID: res.ID, Status: "pending",
		Message: fmt.Sprintf("File ingestion started for %s", up.Name), EstimatedTime: intp(60)})
}

// ingestURL is POST /api/v1/ingest/url (MoRAG's IngestURLRequest, plus gpu).
func (g *Gateway) ingestURL(c echo.Context) error {
	m, ferr := readJSONBody(c.Request())
	if ferr != nil {
		return unprocessable(c, *ferr)
	}
	var v validator
	b := bodyField{v: &v, body: m}
	var body struct {
		SourceType, URL, WebhookURL string
		Metadata                    map[string]any
		GPU                         bool
	}
	body.SourceType, _ = b.str("source_type", false)
	body.URL, _ = b.str("url", true)
	body.WebhookURL, _ = b.str("webhook_url", false)
	body.Metadata = b.object("metadata")
	body.GPU = b.boolean("gpu", false)
	if v.failed() {
		return unprocessable(c, v.errs...)
	}
	if body.Metadata == nil {
		body.Metadata = map[string]any{}
	}
	if body.SourceType == "" {
		body.SourceType = detectFromURL(body.URL)
	}
	options := map[string]any{"webhook_url": body.WebhookURL, "metadata": body.Metadata, "store_in_vector_db": true}
	d, need := g.route(c, body.GPU, func() auth.Need { return urlNeed(body.URL, body.SourceType) })
	g.checkDeadEnd(c, d, need, true) // ingest is always asynchronous
	res, err := g.send(c, d, contract.IngestURLTask, []any{body.URL, nullable(body.SourceType), options})
	if err != nil {
		return enqueueError(c, err)
	}
	routingHeaders(c, d)
	return c.JSON(http.StatusOK, IngestResponse{TaskID: res.ID, Status: "pending",
		Message: fmt.Sprintf("URL ingestion started for %s", body.URL), EstimatedTime: intp(120)})
}

// ingestBatch is POST /api/v1/ingest/batch: one task for all items.
func (g *Gateway) ingestBatch(c echo.Context) error {
	m, ferr := readJSONBody(c.Request())
	if ferr != nil {
		return unprocessable(c, *ferr)
	}
	var v validator
	b := bodyField{v: &v, body: m}
	var body struct {
		WebhookURL string
		GPU        bool
	}
	items := b.objects("items")
	body.WebhookURL, _ = b.str("webhook_url", false)
	body.GPU = b.boolean("gpu", false)
	if v.failed() {
		return unprocessable(c, v.errs...)
	}
	d, _ := g.route(c, body.GPU, nil)
	g.checkDeadEnd(c, d, auth.Need{}, true)
	res, err := g.send(c, d, contract.IngestBatchTask,
		[]any{items, map[string]any{"webhook_url": body.WebhookURL, "store_in_vector_db": true}})
	if err != nil {
		return enqueueError(c, err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	routingHeaders(c, d)
	return c.JSON(http.StatusOK, BatchIngestResponse{BatchID: "batch-" + hex.EncodeToString(rnd[:]), TaskIDs: []string{res.ID},
		TotalItems: len(items), Message: fmt.Sprintf("Batch ingestion started with %d items", len(items))})
}
