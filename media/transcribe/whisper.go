//go:build whisper

package transcribe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"

	whisper "github.com/ggerganov/whisper.cpp/bindings/go/pkg/whisper"
)

// processMu serializes Process across the whole program. The bindings keep
// their callback tables in package-level maps that every Process writes
// and whisper.cpp's threads read without a lock (ggml-org/whisper.cpp#805,
// #918), so two Process calls at once race even on different models. The
// lock is package-level because the state it guards is.
var processMu sync.Mutex

// ErrClosed is returned by Transcribe after Close.
var ErrClosed = errors.New("transcribe: whisper transcriber is closed")

// Available reports whether this binary can transcribe, and if not, why.
func Available() (bool, string) {
	return true, "whisper.cpp linked (libwhisper); GPU use follows how libwhisper was built (GGML_CUDA)"
}

type whisperTranscriber struct {
	cfg     WhisperConfig
	models  []whisper.Model
	free    chan whisper.Model // one model per slot
	closing chan struct{}
	once    sync.Once
}

// NewWhisper loads cfg.Slots copies of the model. Each transcription takes
// a copy for itself, because a whisper.cpp context holds one job's state;
// the inference itself is serialized program-wide (see processMu), while
// reading results and preparing the next job overlap.
func NewWhisper(cfg WhisperConfig) (Transcriber, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	w := &whisperTranscriber{cfg: cfg, free: make(chan whisper.Model, cfg.Slots), closing: make(chan struct{})}
	for range cfg.Slots {
		m, err := whisper.New(cfg.Model)
		if err != nil {
			for _, m := range w.models {
				m.Close()
			}
			return nil, fmt.Errorf("transcribe: load whisper model %s: %w (is it a ggml .bin model?)", cfg.Model, err)
		}
		w.models = append(w.models, m)
		w.free <- m
	}
	return w, nil
}

func (w *whisperTranscriber) Transcribe(ctx context.Context, pcm []float32, opts Options, progress func(float64)) (*Transcript, error) {
	out := &Transcript{Duration: pcmDuration(len(pcm))}
	if !opts.Auto() {
		out.Language = strings.ToLower(opts.Language)
	}
	if len(pcm) == 0 {
		// The bindings index &samples[0]: empty input panics.
		return out, nil
	}

	var m whisper.Model
	select {
	case m = <-w.free:
	case <-w.closing:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { w.free <- m }()
	select {
	case <-w.closing:
		return nil, ErrClosed
	default:
	}

	c, err := m.NewContext()
	if err != nil {
		return nil, fmt.Errorf("transcribe: whisper context: %w", err)
	}
	c.SetThreads(uint(w.cfg.Threads))
	if err := setLanguage(c, opts); err != nil {
		return nil, err
	}

	// whisper.cpp asks before encoding each 30-second window whether to go
	// on: that is where a cancelled job stops.
	keepGoing := func() bool { return ctx.Err() == nil }
	var onProgress whisper.ProgressCallback
	if progress != nil {
		onProgress = func(p int) { progress(min(1, float64(p)/100)) }
	}
	processMu.Lock()
	err = c.Process(pcm, keepGoing, nil, onProgress)
	processMu.Unlock()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("transcribe: whisper: %w", err)
	}

	for {
		seg, err := c.NextSegment()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("transcribe: whisper segments: %w", err)
		}
		text := strings.TrimSpace(seg.Text)
		if text == "" || text == "[BLANK_AUDIO]" {
			continue
		}
		out.Segments = append(out.Segments, Segment{
			Start:      seg.Start,
			End:        seg.End,
			Text:       text,
			Confidence: meanLogProb(c, seg.Tokens),
		})
	}
	if opts.Auto() {
		out.Language = "en" // English-only (.en) models
		if c.IsMultilingual() {
			out.Language = c.DetectedLanguage()
		}
	}
	if progress != nil {
		progress(1)
	}
	return out, nil
}

func setLanguage(c whisper.Context, opts Options) error {
	if opts.Auto() {
		if c.IsMultilingual() {
			return c.SetLanguage("auto")
		}
		return nil
	}
	lang := strings.ToLower(opts.Language)
	if !c.IsMultilingual() {
		if lang == "en" {
			return nil
		}
		return fmt.Errorf("transcribe: the whisper model is English-only and cannot transcribe language %q; use a multilingual model", lang)
	}
	if err := c.SetLanguage(lang); err != nil {
		return fmt.Errorf("transcribe: language %q: %w", lang, err)
	}
	return nil
}

// meanLogProb is faster-whisper's avg_logprob as well as the bindings
// allow: the mean natural log of the text tokens' probabilities.
func meanLogProb(c whisper.Context, tokens []whisper.Token) float64 {
	var sum float64
	n := 0
	for _, t := range tokens {
		if c.IsText(t) && t.P > 0 {
			sum += math.Log(float64(t.P))
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// Close waits for running transcriptions to give their model back, then
// frees every model.
func (w *whisperTranscriber) Close() error {
	w.once.Do(func() {
		close(w.closing)
		for range w.models {
			(<-w.free).Close()
		}
	})
	return nil
}
