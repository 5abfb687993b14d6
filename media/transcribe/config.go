package transcribe

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// WhisperConfig configures the whisper.cpp backend.
type WhisperConfig struct {
	// Model is a ggml model file (ggml-base.bin, ggml-large-v3.bin, …);
	// "" means $WHISPER_MODEL. The worker's -whisper-model flag sets it.
	Model string
	// Slots is the number of transcriptions that may be in progress at
	// once; each slot loads its own copy of the model, because a whisper.cpp
	// context must never serve two jobs. 0 means 1.
	Slots int
	// Threads is the CPU threads per transcription; 0 means the number of
	// CPUs, at most 8. With a CUDA build most work runs on the GPU anyway.
	Threads int
}

// ModelEnv is the environment variable naming the default model file.
const ModelEnv = "WHISPER_MODEL"

func (c WhisperConfig) resolve() (WhisperConfig, error) {
	if c.Model == "" {
		c.Model = os.Getenv(ModelEnv)
	}
	if c.Model == "" {
		return c, errors.New("transcribe: no whisper model: pass -whisper-model PATH or set " + ModelEnv + " to a ggml model file (e.g. ggml-base.bin from huggingface.co/ggerganov/whisper.cpp)")
	}
	st, err := os.Stat(c.Model)
	if err != nil {
		return c, fmt.Errorf("transcribe: whisper model %s: %w", c.Model, err)
	}
	if st.IsDir() {
		return c, fmt.Errorf("transcribe: whisper model %s is a directory, want a ggml .bin file", c.Model)
	}
	if c.Slots <= 0 {
		c.Slots = 1
	}
	if c.Threads <= 0 {
		c.Threads = min(runtime.NumCPU(), 8)
	}
	return c, nil
}
