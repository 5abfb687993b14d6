package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// adminCleanup is POST /api/v1/admin/cleanup: upstream's forced temp-file
// cleanup, here one sweep of the upload store now (uploads past their age,
// uploads whose task has a result, abandoned partial uploads). Upstream
// leaves it open to anyone; here it needs the admin token.
func (g *Gateway) adminCleanup(c echo.Context) error {
	n, err := g.files.Sweep(c.Request().Context())
	if err != nil {
		g.log.Error().Err(err).Int("deleted", n).Msg("manual cleanup failed")
		return detail(c, http.StatusInternalServerError, "%v", err)
	}
	g.log.Info().Int("files_deleted", n).Msg("manual cleanup completed")
	return c.JSON(http.StatusOK, struct {
		Message      string `json:"message"`
		FilesDeleted int    `json:"files_deleted"`
	}{"Cleanup completed successfully", n})
}
