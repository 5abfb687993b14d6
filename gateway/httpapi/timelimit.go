package httpapi

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"morag-gpu/protocol"
)

// TimeLimits set the [hard, soft] time limit of every task the gateway
// sends, so that no task, on any worker, Go or Python, runs forever: a live
// HLS playlist, a decompression bomb or a wedged decoder ends with a
// TimeLimitExceeded FAILURE at the latest. The default scales with the
// upload's size; a request may ask for its own limit up to Max.
type TimeLimits struct {
	// Base is the limit of a task without an upload (a URL: counted as
	// one GiB) and the fixed part for uploads. Default 30 min.
	Base time.Duration
	// PerGiB is added per GiB of upload. Default 2 h.
	PerGiB time.Duration
	// Max bounds the default and any requested limit. Default 6 h.
	Max time.Duration
}

func (l *TimeLimits) defaults() error {
	if l.Base == 0 {
		l.Base = 30 * time.Minute
	}
	if l.PerGiB == 0 {
		l.PerGiB = 2 * time.Hour
	}
	if l.Max == 0 {
		l.Max = 6 * time.Hour
	}
	if l.Base < 0 || l.PerGiB < 0 || l.Max < 0 {
		return fmt.Errorf("gateway: task time limits must be positive (got base %v, per GiB %v, max %v)", l.Base, l.PerGiB, l.Max)
	}
	return nil
}

// Echo context keys a handler sets before send when it knows more.
const (
	ctxInputSize = "morag.input_size" // int64 bytes of the upload
	ctxTimeLimit = "morag.time_limit" // string: the request's time_limit form field
)

// noteUpload tells send the upload's size and the request's time_limit
// form field; a malformed time_limit is the client's error.
func noteUpload(c echo.Context, size int64, requested string) error {
	c.Set(ctxInputSize, size)
	if requested != "" {
		if _, err := parseTimeLimit(requested); err != nil {
			return err
		}
		c.Set(ctxTimeLimit, requested)
	}
	return nil
}

// parseTimeLimit reads seconds ("600", "90.5") or a Go duration ("10m").
func parseTimeLimit(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f > 0) || math.IsInf(f, 0) || f > 1e9 {
		return 0, &errBadForm{fmt.Sprintf("time_limit %q: want seconds (e.g. 600) or a duration (e.g. 10m)", s)}
	}
	return time.Duration(f * float64(time.Second)), nil
}

// taskTimeLimit returns the [hard, soft] limits for the task this request
// sends: the request's time_limit (form field, or query parameter on any
// endpoint) when given, else the default for its input; never above Max.
func (g *Gateway) taskTimeLimit(c echo.Context) (hard, soft time.Duration, err error) {
	l := g.cfg.TaskTimeLimit
	requested, _ := c.Get(ctxTimeLimit).(string)
	if requested == "" {
		requested = c.QueryParam("time_limit")
	}
	if requested != "" {
		if hard, err = parseTimeLimit(requested); err != nil {
			return 0, 0, err
		}
		if hard > l.Max {
			return 0, 0, &errBadForm{fmt.Sprintf("time_limit %v exceeds this gateway's maximum of %v (its -task-time-limit-max)", hard, l.Max)}
		}
	} else {
		size, known := c.Get(ctxInputSize).(int64)
		if !known {
			size = 1 << 30
		}
		hard = min(l.Base+time.Duration(float64(l.PerGiB)*float64(size)/(1<<30)), l.Max)
	}
	// The soft limit comes first, so a task can still report what stopped
	// it (SoftTimeLimitExceeded) before the hard one abandons it.
	soft = hard - max(hard/10, time.Second)
	return hard.Round(time.Second), max(soft, time.Second).Round(time.Second), nil
}

// sendOptions are the options send gives every task.
func (g *Gateway) sendOptions(c echo.Context, queue string) (protocol.SendOptions, error) {
	hard, soft, err := g.taskTimeLimit(c)
	if err != nil {
		return protocol.SendOptions{}, err
	}
	return protocol.SendOptions{Queue: queue, TimeLimit: hard, SoftTimeLimit: soft}, nil
}
