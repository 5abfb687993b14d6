package httpapi

import (
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
	"morag-gpu/protocol"
)

// Task errors as clients see them. A worker's error can carry its temp
// paths, its environment's layout and pages of raw ffmpeg output; clients
// get a short, path-free line and the full text goes to the gateway's log
// with the task id, where operators look.

// maxPublicError bounds an error shown to a client, in runes.
const maxPublicError = 300

// absPath is an absolute path of two or more segments (a file on the
// worker); a single "/x" is usually not a path but prose ("and/or").
var absPath = regexp.MustCompile(`(?:file://)?(?:/[^\s/'":,;()\[\]]+){2,}/?`)

// publicTaskError shortens a task's error for a client: its first
// non-empty line, absolute paths replaced by <path>, at most
// maxPublicError runes.
func publicTaskError(msg string) string {
	line := ""
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			line = l
			break
		}
	}
	line = absPath.ReplaceAllString(line, "<path>")
	if utf8.RuneCountInString(line) > maxPublicError {
		r := []rune(line)
		line = string(r[:maxPublicError]) + "…"
	}
	if line == "" {
		line = "Task failed"
	}
	return line
}

// publicMessage applies publicTaskError to *s, logging the full text when
// it changed.
func (g *Gateway) publicMessage(taskID string, s *string) *string {
	if s == nil {
		return nil
	}
	short := publicTaskError(*s)
	if short != *s {
		g.log.Info().Str("task_id", taskID).Str("error", *s).Msg("task error (clients see a shortened form)")
	}
	return &short
}

// publicStatus is taskStatus with every error shortened for clients.
func (g *Gateway) publicStatus(meta *protocol.ResultMeta) TaskStatus {
	st := taskStatus(meta)
	st.Error = g.publicMessage(meta.TaskID, st.Error)
	if m, ok := st.Result.(map[string]any); ok {
		if e, ok := m["error_message"].(string); ok {
			m["error_message"] = *g.publicMessage(meta.TaskID, &e)
		}
	}
	return st
}

// processingFailed answers a /process/* task that raised as MoRAG's server
// answers processing that raised: 500 {"detail": "Processing failed: …"}
// (a task that returns success false is still a 200, as upstream's). The
// text is the short, path-free form; the full one goes to the log.
func (g *Gateway) processingFailed(c echo.Context, meta *protocol.ResultMeta, d auth.Decision) error {
	g.metrics.outcome("failure")
	msg := meta.Err().Error()
	short := g.publicMessage(meta.TaskID, &msg)
	g.log.Info().Str("task_id", meta.TaskID).Str("queue", d.Queue).Msg("task failed; answering 500 as MoRAG does")
	return c.JSON(http.StatusInternalServerError, map[string]any{"detail": "Processing failed: " + *short})
}
