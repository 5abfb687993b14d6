//go:build !whisper

package transcribe

import (
	"context"
	"fmt"
)

const unavailableReason = "built without the whisper build tag: no transcriber (`make whisper worker-whisper` builds one)"

// Available reports whether this binary can transcribe, and if not, why.
func Available() (bool, string) { return false, unavailableReason }

// NewWhisper fails in a build without the whisper tag; the error wraps
// ErrUnavailable.
func NewWhisper(cfg WhisperConfig) (Transcriber, error) {
	return nil, fmt.Errorf("%w: %s", ErrUnavailable, unavailableReason)
}

// NewWhisperContext fails as NewWhisper does.
func NewWhisperContext(ctx context.Context, cfg WhisperConfig) (Transcriber, error) {
	return NewWhisper(cfg)
}

// GPUMemory is nil in a build without the whisper tag.
func GPUMemory() []DeviceMemory { return nil }
