// Package ggmlgen writes ggml whisper models with seeded random weights at
// the real dimensions of every published size, so that whisper.cpp runs
// its real encoder and decoder on them: the same work per 30-second
// window as the published model, without downloading one.
//
// The file layout is whisper.cpp's (src/whisper.cpp whisper_model_load,
// models/convert-pt-to-ggml.py): magic, hyperparameters, mel filters,
// vocabulary, then tensors (dims, name length, type, shape, name, data).
//
// The decoder is rigged so that decoding is short and deterministic: the
// positional embedding at each position points at the token embedding of
// the token that should come next, so greedy decoding emits a fixed script
// per 30-second window, whatever the audio: segments of eight words every
// three seconds with timestamps, as dense speech gives (about 100 tokens
// per window), then end of text. Without that, random weights would make
// whisper.cpp fall back through five temperatures and five decoders per
// window and measure nothing realistic. The encoder's weights are plain
// random.
package ggmlgen

import (
	"fmt"
	"sort"
	"strings"
)

// Dims are a model's hyperparameters, in the file's order.
type Dims struct {
	NVocab, NAudioCtx, NAudioState, NAudioHead, NAudioLayer int32
	NTextCtx, NTextState, NTextHead, NTextLayer, NMels      int32
}

// Multilingual reports whether whisper.cpp treats the model as
// multilingual (its rule: n_vocab >= 51865).
func (d Dims) Multilingual() bool { return d.NVocab >= 51865 }

func dims(state, head, layer, textLayer, mels, vocab int32) Dims {
	return Dims{NVocab: vocab, NAudioCtx: 1500, NAudioState: state, NAudioHead: head, NAudioLayer: layer,
		NTextCtx: 448, NTextState: state, NTextHead: head, NTextLayer: textLayer, NMels: mels}
}

// sizes maps a published model name, without quantisation suffix, to its
// dimensions (openai/whisper's model dims).
var sizes = map[string]Dims{
	"tiny":           dims(384, 6, 4, 4, 80, 51865),
	"tiny.en":        dims(384, 6, 4, 4, 80, 51864),
	"base":           dims(512, 8, 6, 6, 80, 51865),
	"base.en":        dims(512, 8, 6, 6, 80, 51864),
	"small":          dims(768, 12, 12, 12, 80, 51865),
	"small.en":       dims(768, 12, 12, 12, 80, 51864),
	"small.en-tdrz":  dims(768, 12, 12, 12, 80, 51864),
	"medium":         dims(1024, 16, 24, 24, 80, 51865),
	"medium.en":      dims(1024, 16, 24, 24, 80, 51864),
	"large-v1":       dims(1280, 20, 32, 32, 80, 51865),
	"large-v2":       dims(1280, 20, 32, 32, 80, 51865),
	"large-v3":       dims(1280, 20, 32, 32, 128, 51866),
	"large-v3-turbo": dims(1280, 20, 32, 4, 128, 51866),
}

// Sizes lists the model names Generate knows.
func Sizes() []string {
	var out []string
	for k := range sizes {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// DimsOf returns the dimensions of a model name; a quantisation suffix
// (-q5_0) is ignored, as generated models are always f16.
func DimsOf(name string) (Dims, error) {
	name = strings.TrimSuffix(strings.TrimPrefix(name, "ggml-"), ".bin")
	if i := strings.Index(name, "-q"); i > 0 {
		name = name[:i]
	}
	d, ok := sizes[name]
	if !ok {
		return Dims{}, fmt.Errorf("ggmlgen: unknown model size %q; known: %s", name, strings.Join(Sizes(), ", "))
	}
	return d, nil
}

// vocab holds the special token ids whisper.cpp derives from n_vocab
// (src/whisper.cpp whisper_vocab and whisper_model_load).
type vocab struct {
	eot, sot, transcribe, solm, beg, langEN int32
	nText                                   int32 // tokens written to the file: the text tokens, 0..eot-1
}

func vocabOf(d Dims) vocab {
	v := vocab{eot: 50256, sot: 50257, transcribe: 50358, solm: 50359, beg: 50363}
	if d.Multilingual() {
		dt := (d.NVocab - 51765 - 1) - 98
		v.eot++
		v.sot++
		v.transcribe += dt
		v.solm += dt
		v.beg += dt
	}
	v.langEN = v.sot + 1
	v.nText = v.eot
	return v
}
