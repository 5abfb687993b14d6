package transcribe

import (
	"context"
	"errors"
	"os"
	"runtime"
)

// WhisperConfig configures the whisper.cpp backend.
type WhisperConfig struct {
	// Model is a ggml model file (ggml-base.bin, …) or a published model
	// name (base.en, large-v3-turbo, small.en-tdrz, …; see PublishedModels),
	// downloaded once into Store.Dir. "" means $WHISPER_MODEL. The worker's
	// -whisper-model flag sets it.
	Model string
	// Store finds and downloads named models.
	Store ModelStore
	// Slots is the number of transcriptions that may run at once. They
	// share one loaded model, each on its own whisper state. 0 means 1.
	Slots int
	// Threads is the CPU threads per transcription; 0 means the number of
	// CPUs, at most 8. With a CUDA build most work runs on the GPU anyway.
	Threads int
	// NoGPU keeps whisper.cpp on the CPU even in a CUDA build.
	NoGPU bool
	// GPUDevice is the CUDA device the model is placed on.
	GPUDevice int
	// GPUDevices, when set, places one copy of the model on each of these
	// CUDA devices and spreads the slots over them round-robin (GPUDevice
	// is then ignored).
	GPUDevices []int
	// NoFlashAttn turns flash attention off (it is on by default, as in
	// whisper.cpp).
	NoFlashAttn bool
	// BeamSize > 1 decodes with beam search of that many beams (as
	// whisper-cli and OpenAI's whisper do by default); 0 or 1 is greedy
	// sampling with temperature fallback, the worker's default: on the
	// GPU it is several times faster per stream (see gpu-check).
	BeamSize int
	// TinyDiarize turns speaker-turn detection on; it is on by itself for
	// models whose name contains "tdrz".
	TinyDiarize bool
	// Verbose passes whisper.cpp's and ggml's informational logging through
	// to stderr; otherwise only warnings and errors are printed.
	Verbose bool
}

// ModelEnv is the environment variable naming the default model (a file
// or a published name).
const ModelEnv = "WHISPER_MODEL"

func (c WhisperConfig) resolve(ctx context.Context) (WhisperConfig, error) {
	if c.Model == "" {
		c.Model = os.Getenv(ModelEnv)
	}
	if c.Model == "" {
		return c, errors.New("transcribe: no whisper model: pass -whisper-model NAME_OR_PATH or set " + ModelEnv + " (e.g. base.en, downloaded once, or a ggml .bin file)")
	}
	path, err := c.Store.Resolve(ctx, c.Model)
	if err != nil {
		return c, err
	}
	if IsTinyDiarize(c.Model) {
		c.TinyDiarize = true
	}
	c.Model = path
	if c.Slots <= 0 {
		c.Slots = 1
	}
	if c.Threads <= 0 {
		c.Threads = min(runtime.NumCPU(), 8)
	}
	return c, nil
}

// devices lists the devices a model is loaded on.
func (c WhisperConfig) devices() []int {
	if len(c.GPUDevices) > 0 {
		return c.GPUDevices
	}
	return []int{c.GPUDevice}
}
