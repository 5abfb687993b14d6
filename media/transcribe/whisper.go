//go:build whisper

package transcribe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// ErrClosed is returned by Transcribe after Close.
var ErrClosed = errors.New("transcribe: whisper transcriber is closed")

// Available reports whether this binary can transcribe, and if not, why.
func Available() (bool, string) {
	if gpus := gpuDevices(); len(gpus) > 0 {
		return true, "whisper.cpp linked; GPU: " + strings.Join(gpus, ", ")
	}
	return true, "whisper.cpp linked; CPU only (libwhisper built without CUDA, or no usable GPU)"
}

// GPUMemory reports the used and total memory of each GPU whisper.cpp can
// use (device-wide, every process included); nil in a CPU build or
// without a GPU.
func GPUMemory() []DeviceMemory { return gpuMemory() }

type whisperTranscriber struct {
	cfg     WhisperConfig
	devices []int    // where each model copy is: CUDA device numbers
	models  []*model // one per device; slot i uses models[i%len]
	tdrz    bool
	slots   chan int // the free slot numbers
	// running counts jobs between taking a slot and freeing their state;
	// Close waits for it after closing `closing`.
	running sync.WaitGroup
	mu      sync.Mutex // guards closed and running.Add against Close
	closed  bool
	closing chan struct{}
	once    sync.Once
}

// NewWhisper loads the model once per placement device (GPUDevices, else
// every GPU whisper.cpp can use, else once on the CPU); cfg.Slots
// transcriptions run at once, slot i on device i mod len(devices), each
// on its own whisper state (KV cache and buffers, tens of MB for the small
// models), so memory grows by a state per slot, not a model.
func NewWhisper(cfg WhisperConfig) (Transcriber, error) {
	return NewWhisperContext(context.Background(), cfg)
}

// NewWhisperContext is NewWhisper where cfg.Model may be a published model
// name that must be downloaded first: ctx bounds that download.
func NewWhisperContext(ctx context.Context, cfg WhisperConfig) (Transcriber, error) {
	cfg, err := cfg.resolve(ctx)
	if err != nil {
		return nil, err
	}
	w := &whisperTranscriber{
		cfg:     cfg,
		tdrz:    cfg.TinyDiarize || IsTinyDiarize(cfg.Model),
		slots:   make(chan int, cfg.Slots),
		closing: make(chan struct{}),
	}
	if w.devices, err = cfg.placement(len(gpuDevices())); err != nil {
		return nil, err
	}
	for _, dev := range w.devices {
		m, err := loadModel(cfg.Model, modelParams{useGPU: !cfg.NoGPU, flashAttn: !cfg.NoFlashAttn, gpuDevice: dev, verbose: cfg.Verbose})
		if err != nil {
			for _, m := range w.models {
				m.free()
			}
			return nil, err
		}
		w.models = append(w.models, m)
	}
	for i := range cfg.Slots {
		w.slots <- i
	}
	return w, nil
}

// Info describes the loaded model for the worker's health and inspect
// output: which device each slot transcribes on, among others.
func (w *whisperTranscriber) Info() map[string]any {
	names := make([]string, len(w.devices))
	gpus := gpuDevices()
	for i, d := range w.devices {
		names[i] = "cpu"
		if d < len(gpus) && !w.cfg.NoGPU {
			names[i] = gpus[d]
		}
	}
	slotDevices := make([]string, w.cfg.Slots)
	for i := range slotDevices {
		slotDevices[i] = names[i%len(names)]
	}
	return map[string]any{
		"model_type":    w.models[0].typeName(),
		"multilingual":  w.models[0].multilingual,
		"slots":         w.cfg.Slots,
		"threads":       w.cfg.Threads,
		"speaker_turns": w.tdrz,
		"device":        names[0],
		"devices":       names,
		"slot_devices":  slotDevices,
	}
}

func (w *whisperTranscriber) Transcribe(ctx context.Context, pcm []float32, opts Options, progress func(float64)) (*Transcript, error) {
	out := &Transcript{Duration: pcmDuration(len(pcm))}
	if !opts.Auto() {
		out.Language = strings.ToLower(opts.Language)
	}
	m := w.models[0]
	lang, err := w.language(m, opts)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, ErrClosed
	}
	w.running.Add(1)
	w.mu.Unlock()
	defer w.running.Done()
	if len(pcm) == 0 {
		if out.Language == "" {
			out.Language = "en"
		}
		return out, nil
	}

	var slot int
	select {
	case slot = <-w.slots:
	case <-w.closing:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { w.slots <- slot }()
	m = w.models[slot%len(w.models)]

	var onProgress func(int)
	if progress != nil {
		onProgress = func(p int) { progress(min(1, float64(p)/100)) }
	}
	// Close cancels running jobs rather than waiting minutes for them; the
	// goroutine below belongs to this call and ends with jctx.
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.closing:
			cancel()
		case <-jctx.Done():
		}
	}()
	segs, detected, err := m.full(jctx, pcm, fullParams{threads: w.cfg.Threads, beam: w.cfg.BeamSize, language: lang, tdrz: w.tdrz}, onProgress)
	if err != nil {
		if ctx.Err() == nil && jctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, err
	}
	out.Segments = toSegments(segs, out.Duration, w.tdrz)
	if opts.Auto() {
		out.Language = detected
		if !m.multilingual || out.Language == "" {
			out.Language = "en"
		}
	}
	if progress != nil {
		progress(1)
	}
	return out, nil
}

// language is the language to pass to whisper.cpp for opts.
func (w *whisperTranscriber) language(m *model, opts Options) (string, error) {
	if opts.Auto() {
		if m.multilingual {
			return "auto", nil
		}
		return "en", nil
	}
	lang := strings.ToLower(opts.Language)
	if !m.multilingual && lang != "en" {
		return "", fmt.Errorf("transcribe: the whisper model is English-only and cannot transcribe language %q; use a multilingual model (a name without .en)", lang)
	}
	if !knownLanguage(lang) {
		return "", fmt.Errorf("transcribe: whisper does not know language %q; use an ISO 639-1 code such as en, de or fr, or auto", lang)
	}
	return lang, nil
}

// Close stops accepting work, cancels running transcriptions, waits for
// them to free their states, then frees the model.
func (w *whisperTranscriber) Close() error {
	w.once.Do(func() {
		w.mu.Lock()
		w.closed = true
		close(w.closing)
		w.mu.Unlock()
		w.running.Wait()
		for _, m := range w.models {
			m.free()
		}
	})
	return nil
}
