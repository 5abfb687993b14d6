package runner

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"morag-gpu/protocol"
)

// heartbeatInterval is Celery's default worker heartbeat (freq 2.0).
const heartbeatInterval = 2 * time.Second

// eventTimeout bounds one event publish: events are best effort and never
// hold a task up.
const eventTimeout = 2 * time.Second

// taskEvent sends a task-* event when task events are enabled. While the
// worker runs, events ride in the group commit (one PUBLISH inside the
// batch's Lua call, no round trip of their own, nobody waiting for them).
func (s *Server) taskEvent(typ string, fields map[string]any) {
	if !s.taskEvents.Load() {
		return
	}
	if channel, env, err := s.tr.EncodeEvent(typ, fields); err == nil {
		if s.commits.trySubmit(&commitReq{ops: []protocol.CommitOp{{Kind: protocol.CommitPublish, Channel: channel, Payload: env}}}) {
			return
		}
	}
	// The commit queue is full or stopped: publish it on its own.
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := s.tr.SendEvent(ctx, typ, fields); err != nil {
		s.log.Debug().Err(err).Str("event", typ).Msg("could not send event")
	}
}

// workerEvent sends a worker-* event with the fields Celery's Heart sends.
func (s *Server) workerEvent(ctx context.Context, typ string, freq any) {
	if freq == nil {
		freq = json.Number("2.0")
	}
	s.mu.Lock()
	active, processed := s.active, s.processed
	s.mu.Unlock()
	fields := map[string]any{
		"freq":      freq,
		"active":    active,
		"processed": processed,
		"loadavg":   loadAverage(),
		"sw_ident":  s.cfg.SWIdent,
		"sw_ver":    s.cfg.SWVersion,
		"sw_sys":    swSys(),
	}
	ctx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	if err := s.tr.SendEvent(ctx, typ, fields); err != nil {
		s.log.Debug().Err(err).Str("event", typ).Msg("could not send event")
	}
}

// heartbeatLoop sends worker-heartbeat every 2 s until ctx ends.
func (s *Server) heartbeatLoop(ctx context.Context) {
	t := s.cfg.Clock.NewTicker(heartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			s.workerEvent(ctx, "worker-heartbeat", nil)
		}
	}
}

// loadAverage is Celery's load_average(): /proc/loadavg rounded to two
// decimals, or zeros where there is none.
func loadAverage() []any {
	out := []any{json.Number("0.0"), json.Number("0.0"), json.Number("0.0")}
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	fields := strings.Fields(string(data))
	for i := 0; i < 3 && i < len(fields); i++ {
		if f, err := strconv.ParseFloat(fields[i], 64); err == nil {
			out[i] = pyFloatNumber(float64(int64(f*100+0.5)) / 100)
		}
	}
	return out
}

// swSys is Python's platform.system().
func swSys() string {
	switch runtime.GOOS {
	case "linux":
		return "Linux"
	case "darwin":
		return "Darwin"
	case "windows":
		return "Windows"
	}
	return runtime.GOOS
}
