package transcribe

import (
	"context"
	"errors"
	"fmt"
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
	// GPUDevices places one copy of the model on each of these CUDA
	// devices (numbered within CUDA_VISIBLE_DEVICES, as CUDA numbers
	// them) and spreads the slots over them round-robin. Empty: every GPU
	// whisper.cpp can use.
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

// placement lists the devices a copy of the model is loaded on, given
// how many GPUs whisper.cpp can use: GPUDevices, else every GPU, else one
// copy on the CPU (device 0, which a CPU build ignores). Listed devices
// are kept without a GPU too, each copy then on the CPU: the same code
// path as on several GPUs, which is how it is tested here.
func (c WhisperConfig) placement(gpus int) ([]int, error) {
	if len(c.GPUDevices) == 0 {
		if c.NoGPU || gpus == 0 {
			return []int{0}, nil
		}
		all := make([]int, gpus)
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	seen := map[int]bool{}
	for _, d := range c.GPUDevices {
		if d < 0 || (!c.NoGPU && gpus > 0 && d >= gpus) {
			return nil, fmt.Errorf("transcribe: GPU device %d does not exist: whisper.cpp sees %d GPU(s), numbered 0 to %d within CUDA_VISIBLE_DEVICES", d, gpus, gpus-1)
		}
		if seen[d] {
			return nil, fmt.Errorf("transcribe: GPU device %d is listed twice; one model copy per device", d)
		}
		seen[d] = true
	}
	return c.GPUDevices, nil
}
