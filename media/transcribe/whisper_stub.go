//go:build !whisper

package transcribe

import "fmt"

const unavailableReason = "built without the whisper build tag: no transcriber (build the worker with `make worker-whisper` against an installed libwhisper)"

// Available reports whether this binary can transcribe, and if not, why.
func Available() (bool, string) { return false, unavailableReason }

// NewWhisper fails in a build without the whisper tag; the error wraps
// ErrUnavailable.
func NewWhisper(cfg WhisperConfig) (Transcriber, error) {
	return nil, fmt.Errorf("%w: %s", ErrUnavailable, unavailableReason)
}
