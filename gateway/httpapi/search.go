package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/contract"
	"morag-gpu/protocol"
)

// search is POST /search: MoRAG's SearchRequest {query, limit = 10,
// filters}, answered {"results": [...]}. Upstream searches in-process; here
// morag.worker.search_task (query, limit, filters) runs on the Python fleet
// (the vector store lives there), routed like any request without gpu, and
// the answer waits for it as the /process routes do. The routing decision
// is in the X-Morag-Queue headers so the body stays MoRAG's.
func (g *Gateway) search(c echo.Context) error {
	m, ferr := readJSONBody(c.Request())
	if ferr != nil {
		return unprocessable(c, *ferr)
	}
	var v validator
	b := bodyField{v: &v, body: m}
	query, _ := b.str("query", true)
	limit := b.integer("limit", 10)
	filters := b.object("filters")
	async := v.queryBool(c.Request(), "async", false)
	if v.failed() {
		return unprocessable(c, v.errs...)
	}
	d, _ := g.route(c, false, nil)
	routingHeaders(c, d)
	meta, err := g.submit(c, d, auth.Need{}, async, contract.SearchTask, []any{query, limit, optionsOrNil(filters)})
	if meta == nil {
		return err
	}
	if terr := meta.Err(); terr != nil {
		// Upstream: HTTPException(500, str(e)).
		g.metrics.outcome("failure")
		msg := terr.Error()
		var te *protocol.TaskError
		if errors.As(terr, &te) && len(te.ExcMessage) > 0 {
			msg = fmt.Sprint(te.ExcMessage...)
		}
		return detail(c, http.StatusInternalServerError, "%s", *g.publicMessage(meta.TaskID, &msg))
	}
	var out any
	if err := meta.DecodeResult(&out); err != nil {
		return detail(c, http.StatusInternalServerError, "%v", err)
	}
	g.metrics.outcome("success")
	results := any([]any{})
	if r, ok := out.(map[string]any); ok {
		if list, ok := r["results"]; ok && list != nil {
			results = list
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"results": results})
}
