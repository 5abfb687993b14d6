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
	if why := g.checkDeadEnd(c, d, auth.Need{}, async); why != "" {
		return g.unreachable(c, d, why)
	}
	res, err := g.send(c, d, contract.SearchTask, []any{query, limit, optionsOrNil(filters)})
	if err != nil {
		return enqueueError(c, err)
	}
	routingHeaders(c, d)
	if async {
		return g.accepted(c, res.ID, d)
	}
	meta, err := g.wait(c, res, d, auth.Need{})
	if err != nil {
		return g.waitError(c, res.ID, err)
	}
	if terr := meta.Err(); terr != nil {
		// Upstream: HTTPException(500, str(e)).
		g.metrics.outcome("failure")
		msg := terr.Error()
		var te *protocol.TaskError
		if errors.As(terr, &te) && len(te.ExcMessage) > 0 {
			msg = fmt.Sprint(te.ExcMessage...)
		}
		return detail(c, http.StatusInternalServerError, "%s", msg)
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
