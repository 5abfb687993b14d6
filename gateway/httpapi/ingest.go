package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
)

const ingestPrefix = "morag.ingest_tasks."

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
		return clientError(c, err)
	}
	up := f.upload
	fail := func(err error) error {
		_ = g.files.Delete(context.WithoutCancel(req.Context()), up.ID)
		return clientError(c, err)
	}
	docID := f.value("document_id")
	if docID != "" && !documentIDPattern.MatchString(docID) {
		return fail(&errBadForm{"Invalid document_id: only letters, digits, '_' and '-' are allowed"})
	}
	replace, err := parseBool("replace_existing", f.value("replace_existing"), false)
	if err != nil {
		return fail(err)
	}
	metadata, err := parseJSONObject("metadata", f.value("metadata"))
	if err != nil {
		return fail(err)
	}
	if metadata == nil {
		metadata = map[string]any{}
	}
	useDocling, err := parseBool("use_docling", f.value("use_docling"), false)
	if err != nil {
		return fail(err)
	}
	chunkSize, err := parseOptionalInt("chunk_size", f.value("chunk_size"), 500, 16000)
	if err != nil {
		return fail(err)
	}
	chunkOverlap, err := parseOptionalInt("chunk_overlap", f.value("chunk_overlap"), 0, 1000)
	if err != nil {
		return fail(err)
	}
	gpu, err := parseBool("gpu", f.value("gpu"), false)
	if err != nil {
		return fail(err)
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
	d, _ := g.route(c, gpu)
	source := g.files.Path(up)
	if d.GPU || g.cfg.FileTransfer == TransferHTTP {
		// A remote worker cannot read our disk: it gets the signed URL
		// in place of the path, and in options.file_url.
		source = g.files.SignedURL(g.cfg.PublicURL, up.ID, g.cfg.URLTTL)
		options["file_url"] = source
	}
	res, err := g.send(c, d, ingestPrefix+"ingest_file_task", []any{source, nullable(f.value("source_type")), options})
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
	var body struct {
		SourceType string         `json:"source_type"`
		URL        string         `json:"url"`
		WebhookURL string         `json:"webhook_url"`
		Metadata   map[string]any `json:"metadata"`
		GPU        bool           `json:"gpu"`
	}
	if err := decodeJSON(c.Request(), &body); err != nil {
		return clientError(c, err)
	}
	if strings.TrimSpace(body.URL) == "" {
		return detail(c, http.StatusUnprocessableEntity, "url is required")
	}
	if body.Metadata == nil {
		body.Metadata = map[string]any{}
	}
	options := map[string]any{"webhook_url": body.WebhookURL, "metadata": body.Metadata, "store_in_vector_db": true}
	d, _ := g.route(c, body.GPU)
	res, err := g.send(c, d, ingestPrefix+"ingest_url_task", []any{body.URL, nullable(body.SourceType), options})
	if err != nil {
		return enqueueError(c, err)
	}
	routingHeaders(c, d)
	return c.JSON(http.StatusOK, IngestResponse{TaskID: res.ID, Status: "pending",
		Message: fmt.Sprintf("URL ingestion started for %s", body.URL), EstimatedTime: intp(120)})
}

// ingestBatch is POST /api/v1/ingest/batch: one task for all items.
func (g *Gateway) ingestBatch(c echo.Context) error {
	var body struct {
		Items      []map[string]any `json:"items"`
		WebhookURL string           `json:"webhook_url"`
		GPU        bool             `json:"gpu"`
	}
	if err := decodeJSON(c.Request(), &body); err != nil {
		return clientError(c, err)
	}
	if body.Items == nil {
		return detail(c, http.StatusUnprocessableEntity, "items is required")
	}
	items := make([]any, len(body.Items))
	for i, it := range body.Items {
		items[i] = it
	}
	d, _ := g.route(c, body.GPU)
	res, err := g.send(c, d, ingestPrefix+"ingest_batch_task",
		[]any{items, map[string]any{"webhook_url": body.WebhookURL, "store_in_vector_db": true}})
	if err != nil {
		return enqueueError(c, err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	routingHeaders(c, d)
	return c.JSON(http.StatusOK, BatchIngestResponse{BatchID: "batch-" + hex.EncodeToString(b[:]), TaskIDs: []string{res.ID},
		TotalItems: len(items), Message: fmt.Sprintf("Batch ingestion started for %d items", len(items))})
}
