package fleet

// Capabilities is what a Go worker says, in `inspect stats`, it can finish
// itself rather than hand on: the worker puts its transcriber and GPU
// findings there (worker/media_flags.go).
type Capabilities struct {
	Transcriber Transcriber `json:"transcriber"`
	// GPU is the worker's media.Capabilities as it reported them (nvdec,
	// nvenc, scale_cuda, device, ...); nil when it reported none.
	GPU map[string]any `json:"gpu,omitempty"`
}

// Transcriber is the stats' "transcriber" entry.
type Transcriber struct {
	Available bool   `json:"available"`
	Backend   string `json:"backend,omitempty"`
	Model     string `json:"model,omitempty"`
	// Reason says why there is none ("built without whisper tag", ...).
	Reason string `json:"reason,omitempty"`
}

// parseCapabilities reads a Go worker's stats reply. A worker that reports
// no transcriber entry (one without the media tasks) cannot transcribe.
func parseCapabilities(stats map[string]any) *Capabilities {
	c := &Capabilities{Transcriber: Transcriber{Reason: "the worker reports no transcriber"}}
	if t, ok := stats["transcriber"].(map[string]any); ok {
		c.Transcriber.Available, _ = t["available"].(bool)
		c.Transcriber.Backend, _ = t["backend"].(string)
		c.Transcriber.Model, _ = t["model"].(string)
		c.Transcriber.Reason, _ = t["reason"].(string)
	}
	if g, ok := stats["gpu"].(map[string]any); ok {
		c.GPU = g
	}
	return c
}

// CanTranscribe reports whether the worker can finish a task that needs a
// transcript, and if not, why. Python workers are taken at their word:
// they finish everything they register (MoRAG's own workers run whisper).
func (w Worker) CanTranscribe() (bool, string) {
	switch {
	case w.Implementation != "go":
		return true, ""
	case w.Capabilities == nil:
		return false, "its capabilities are not known (it did not answer inspect stats)"
	case !w.Capabilities.Transcriber.Available:
		why := w.Capabilities.Transcriber.Reason
		if why == "" {
			why = "no transcriber"
		}
		return false, "no transcriber: " + why
	}
	return true, ""
}
