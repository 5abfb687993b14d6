package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

func TestTaskTimeLimit(t *testing.T) {
	l := TimeLimits{}
	if err := l.defaults(); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{cfg: Config{TaskTimeLimit: l}}
	ctx := func(query string) echo.Context {
		return echo.New().NewContext(httptest.NewRequest("POST", "/process/file"+query, nil), httptest.NewRecorder())
	}
	cases := []struct {
		name      string
		c         echo.Context
		size      int64 // -1: no upload
		form      string
		hard      time.Duration
		wantError string
	}{
		{"1 MiB upload", ctx(""), 1 << 20, "", 30*time.Minute + 7*time.Second, ""},
		{"1 GiB upload", ctx(""), 1 << 30, "", 150 * time.Minute, ""},
		{"huge upload is capped", ctx(""), 100 << 30, "", 6 * time.Hour, ""},
		{"URL task: counted as 1 GiB", ctx(""), -1, "", 150 * time.Minute, ""},
		{"form field", ctx(""), 1 << 20, "90", 90 * time.Second, ""},
		{"query parameter as a duration", ctx("?time_limit=5m"), -1, "", 5 * time.Minute, ""},
		{"above the maximum", ctx("?time_limit=7h"), -1, "", 0, "exceeds this gateway's maximum of 6h0m0s"},
		{"nonsense", ctx("?time_limit=soon"), -1, "", 0, "want seconds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.size >= 0 {
				if err := noteUpload(tc.c, tc.size, tc.form); err != nil {
					t.Fatal(err)
				}
			}
			opts, err := g.sendOptions(tc.c, "q")
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if opts.TimeLimit != tc.hard || opts.SoftTimeLimit >= opts.TimeLimit || opts.SoftTimeLimit <= 0 || opts.Queue != "q" {
				t.Errorf("got hard %v soft %v queue %q, want hard %v and a soft limit before it", opts.TimeLimit, opts.SoftTimeLimit, opts.Queue, tc.hard)
			}
		})
	}
	if err := noteUpload(ctx(""), 1, "-3"); err == nil {
		t.Error("a negative time_limit form field was accepted")
	}
}
