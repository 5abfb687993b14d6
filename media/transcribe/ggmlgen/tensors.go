package ggmlgen

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// weightScale is the standard deviation of the random weights (GPT-2's
// initialisation): small enough that the rigged decoder embeddings
// dominate the residual stream.
const weightScale = 0.02

func ones(_ *rand.Rand, out []float32) {
	for i := range out {
		out[i] = 1
	}
}

func zeros(_ *rand.Rand, out []float32) { clear(out) }

// random fills uniformly with standard deviation weightScale.
func random(r *rand.Rand, out []float32) {
	a := float32(weightScale * math.Sqrt(3))
	for i := range out {
		out[i] = (2*r.Float32() - 1) * a
	}
}

// direction is a unit vector of n elements, fixed by seed and token.
func direction(seed uint64, token int32, n int) []float32 {
	r := rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15, uint64(token)))
	v := make([]float32, n)
	var norm float64
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		norm += x * x
	}
	inv := float32(1 / math.Sqrt(norm))
	for i := range v {
		v[i] *= inv
	}
	return v
}

// decoderTargets maps decoder positions to the token the logits there must
// pick: the language at position 0 (auto-detection reads it), then the
// script after the prompt ([SOT] for English-only models, [SOT, lang,
// transcribe] for multilingual ones).
func decoderTargets(d Dims, v vocab, turns bool) map[int]int32 {
	t := map[int]int32{}
	p0 := 0
	if d.Multilingual() {
		t[0] = v.langEN
		t[1] = v.transcribe
		p0 = 2
	}
	for i, tok := range Script(d, turns) {
		if p0+i < int(d.NTextCtx) {
			t[p0+i] = tok
		}
	}
	return t
}

func tensors(d Dims, v vocab, seed uint64, turns bool) []tensor {
	as, ts := d.NAudioState, d.NTextState
	targets := decoderTargets(d, v, turns)
	dirs := map[int32][]float32{}
	for _, tok := range targets {
		if dirs[tok] == nil {
			dirs[tok] = direction(seed, tok, int(ts))
		}
	}
	// Token embeddings (also the output projection): random, except the
	// targets, which get a long fixed direction each.
	dte := func(r *rand.Rand, out []float32) {
		random(r, out)
		for tok, dir := range dirs {
			row := out[int(tok)*int(ts) : int(tok+1)*int(ts)]
			for i := range row {
				row[i] = 1.5 * dir[i]
			}
		}
	}
	// Positional embeddings: at each position, far along the direction of
	// the token that must come next, so layer norm makes the final hidden
	// state point there whatever the random blocks add.
	scale := float32(10 * math.Sqrt(float64(ts)))
	dpe := func(r *rand.Rand, out []float32) {
		random(r, out)
		for p, tok := range targets {
			row := out[p*int(ts) : (p+1)*int(ts)]
			for i := range row {
				row[i] = scale * dirs[tok][i]
			}
		}
	}
	// The encoder's sinusoidal positions, as openai/whisper's.
	epe := func(_ *rand.Rand, out []float32) {
		half := int(as) / 2
		for p := range int(d.NAudioCtx) {
			for i := range half {
				inc := math.Log(10000) / float64(half-1)
				a := float64(p) * math.Exp(-inc*float64(i))
				out[p*int(as)+i] = float32(math.Sin(a))
				out[p*int(as)+half+i] = float32(math.Cos(a))
			}
		}
	}

	var out []tensor
	add := func(name string, typ int32, fill func(*rand.Rand, []float32), ne ...int32) {
		out = append(out, tensor{name: name, ne: ne, typ: typ, fill: fill})
	}
	add("encoder.positional_embedding", typeF32, epe, as, d.NAudioCtx)
	add("encoder.conv1.weight", typeF16, random, 3, d.NMels, as)
	add("encoder.conv1.bias", typeF32, zeros, 1, as)
	add("encoder.conv2.weight", typeF16, random, 3, as, as)
	add("encoder.conv2.bias", typeF32, zeros, 1, as)
	for i := range d.NAudioLayer {
		block(add, fmt.Sprintf("encoder.blocks.%d.", i), as, false)
	}
	add("encoder.ln_post.weight", typeF32, ones, as)
	add("encoder.ln_post.bias", typeF32, zeros, as)

	add("decoder.positional_embedding", typeF32, dpe, ts, d.NTextCtx)
	add("decoder.token_embedding.weight", typeF16, dte, ts, d.NVocab)
	for i := range d.NTextLayer {
		block(add, fmt.Sprintf("decoder.blocks.%d.", i), ts, true)
	}
	add("decoder.ln.weight", typeF32, ones, ts)
	add("decoder.ln.bias", typeF32, zeros, ts)
	return out
}

// block adds one transformer block's tensors (15, or 24 with cross
// attention), named as whisper.cpp's ASR_TENSOR_NAMES.
func block(add func(string, int32, func(*rand.Rand, []float32), ...int32), pfx string, n int32, cross bool) {
	attn := func(a string) {
		add(pfx+a+"_ln.weight", typeF32, ones, n)
		add(pfx+a+"_ln.bias", typeF32, zeros, n)
		add(pfx+a+".query.weight", typeF16, random, n, n)
		add(pfx+a+".query.bias", typeF32, zeros, n)
		add(pfx+a+".key.weight", typeF16, random, n, n)
		add(pfx+a+".value.weight", typeF16, random, n, n)
		add(pfx+a+".value.bias", typeF32, zeros, n)
		add(pfx+a+".out.weight", typeF16, random, n, n)
		add(pfx+a+".out.bias", typeF32, zeros, n)
	}
	attn("attn")
	if cross {
		attn("cross_attn")
	}
	add(pfx+"mlp_ln.weight", typeF32, ones, n)
	add(pfx+"mlp_ln.bias", typeF32, zeros, n)
	add(pfx+"mlp.0.weight", typeF16, random, n, 4*n)
	add(pfx+"mlp.0.bias", typeF32, zeros, 4*n)
	add(pfx+"mlp.2.weight", typeF16, random, 4*n, n)
	add(pfx+"mlp.2.bias", typeF32, zeros, n)
}
