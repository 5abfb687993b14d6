package ggmlgen

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// Options say what to generate.
type Options struct {
	// Name is the published model name whose dimensions to use (tiny,
	// base.en, large-v3-turbo, small.en-tdrz, …).
	Name string
	// Seed makes the weights; the same seed gives the same file.
	Seed uint64
	// SpeakerTurns puts tinydiarize speaker-turn tokens in the script,
	// after every other segment; on by itself for names with "tdrz".
	SpeakerTurns bool
}

const (
	fileMagic      = 0x67676d6c // "ggml"
	ftypeF16       = 1
	typeF32        = 0
	typeF16        = 1
	segmentSeconds = 3
	wordsPerSeg    = 8
	windowSeconds  = 30
)

// scriptWords are the script's text tokens, distinct so that whisper.cpp's
// repetition check (entropy of the last 32 tokens) passes.
var scriptWords = strings.Fields(`and so my fellow americans ask not what your country can do for you
	citizens of the world will together we freedom man finally whether are or same high standards strength
	sacrifice which with good conscience our only sure reward history final judge deeds let us go forth lead
	land love asking his blessing help but knowing that here on earth gods work must truly be own
	the a in it is was this they he she have had not by from at one all there when up out if about who get
	which their time no just him know take people into year`)

// Script returns the token ids the generated model emits per 30-second
// window after its prompt, and the text tokens' words (for tests).
func Script(d Dims, speakerTurns bool) []int32 {
	v := vocabOf(d)
	ts := func(sec int) int32 { return v.beg + int32(sec*50) }
	var s []int32
	w := 0
	for k := 0; k*segmentSeconds < windowSeconds; k++ {
		if k == 0 {
			s = append(s, ts(0))
		}
		for range wordsPerSeg {
			s = append(s, int32(w%len(scriptWords)))
			w++
		}
		if speakerTurns && k%2 == 1 {
			s = append(s, v.solm)
		}
		end := min((k+1)*segmentSeconds, windowSeconds)
		s = append(s, ts(end))
		if end < windowSeconds {
			s = append(s, ts(end))
		}
	}
	return append(s, v.eot)
}

// ScriptText is the text of the segments of one window, in order.
func ScriptText() []string {
	var out []string
	w := 0
	for k := 0; k*segmentSeconds < windowSeconds; k++ {
		var words []string
		for range wordsPerSeg {
			words = append(words, scriptWords[w%len(scriptWords)])
			w++
		}
		out = append(out, strings.Join(words, " "))
	}
	return out
}

type tensor struct {
	name string
	ne   []int32 // ggml order: ne[0] varies fastest
	typ  int32
	fill func(r *rand.Rand, out []float32)
}

// Generate writes the model to w.
func Generate(w io.Writer, o Options) error {
	d, err := DimsOf(o.Name)
	if err != nil {
		return err
	}
	turns := o.SpeakerTurns || strings.Contains(o.Name, "tdrz")
	v := vocabOf(d)
	bw := bufio.NewWriterSize(w, 1<<20)
	put := func(x int32) { binary.Write(bw, binary.LittleEndian, x) }

	put(fileMagic)
	for _, x := range []int32{d.NVocab, d.NAudioCtx, d.NAudioState, d.NAudioHead, d.NAudioLayer,
		d.NTextCtx, d.NTextState, d.NTextHead, d.NTextLayer, d.NMels, ftypeF16} {
		put(x)
	}
	// Mel filters: triangles over the 201 FFT bins.
	const nFFT = 201
	put(d.NMels)
	put(nFFT)
	filters := make([]float32, int(d.NMels)*nFFT)
	for m := range int(d.NMels) {
		center := float64(m+1) * nFFT / float64(d.NMels+1)
		width := float64(nFFT) / float64(d.NMels+1)
		for k := range nFFT {
			filters[m*nFFT+k] = float32(math.Max(0, 1-math.Abs(float64(k)-center)/width))
		}
	}
	if err := binary.Write(bw, binary.LittleEndian, filters); err != nil {
		return err
	}
	// Vocabulary: the text tokens; whisper.cpp adds the special ones.
	put(v.nText)
	for i := range v.nText {
		var tok string
		switch {
		case int(i) < len(scriptWords):
			tok = " " + scriptWords[i]
		case int(i) == len(scriptWords):
			tok = " " // whisper_full looks this one up
		default:
			tok = fmt.Sprintf("~%d", i)
		}
		put(int32(len(tok)))
		bw.WriteString(tok)
	}

	for _, t := range tensors(d, v, o.Seed, turns) {
		if err := writeTensor(bw, t, o.Seed); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func writeTensor(w *bufio.Writer, t tensor, seed uint64) error {
	put := func(x int32) { binary.Write(w, binary.LittleEndian, x) }
	put(int32(len(t.ne)))
	put(int32(len(t.name)))
	put(t.typ)
	n := 1
	for _, x := range t.ne {
		put(x)
		n *= int(x)
	}
	w.WriteString(t.name)
	r := rand.New(rand.NewPCG(seed, hashName(t.name)))
	const chunk = 1 << 16
	vals := make([]float32, chunk)
	buf := make([]byte, 4*chunk)
	// Tensors whose content depends on the row (embeddings) are filled
	// whole; the others chunk by chunk.
	if t.fill == nil {
		return fmt.Errorf("ggmlgen: tensor %s has no fill", t.name)
	}
	if strings.HasPrefix(t.name, "decoder.positional") || strings.HasPrefix(t.name, "decoder.token") || strings.HasPrefix(t.name, "encoder.positional") {
		vals = make([]float32, n)
		t.fill(r, vals)
		return writeVals(w, vals, t.typ, make([]byte, 4*n))
	}
	for done := 0; done < n; done += chunk {
		m := min(chunk, n-done)
		t.fill(r, vals[:m])
		if err := writeVals(w, vals[:m], t.typ, buf); err != nil {
			return err
		}
	}
	return nil
}

func writeVals(w io.Writer, vals []float32, typ int32, buf []byte) error {
	if typ == typeF16 {
		for i, x := range vals {
			binary.LittleEndian.PutUint16(buf[2*i:], f16(x))
		}
		_, err := w.Write(buf[:2*len(vals)])
		return err
	}
	for i, x := range vals {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
	}
	_, err := w.Write(buf[:4*len(vals)])
	return err
}

func hashName(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(s) {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return h
}

// f16 converts to IEEE half precision, rounding to nearest (no NaN care:
// the generator makes none).
func f16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b>>23)&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case exp >= 31:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		return sign | uint16((mant+(1<<(shift-1)))>>shift)
	}
	h := sign | uint16(exp<<10) | uint16(mant>>13)
	if mant&0x1000 != 0 {
		h++ // round; a carry into the exponent is still correct
	}
	return h
}

// WriteFile writes the model to path through a temporary file, so a
// reader never sees half a model.
func WriteFile(path string, o Options) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ggmlgen-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := Generate(tmp, o); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Cached returns dir/ggml-gen-<name>-seed<seed>.bin, generating it first
// when it is not there yet; tests and benchmarks share one file per size.
func Cached(dir string, o Options) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	suffix := ""
	if o.SpeakerTurns && !strings.Contains(o.Name, "tdrz") {
		suffix = "-turns"
	}
	path := filepath.Join(dir, fmt.Sprintf("ggml-gen-%s%s-seed%d.bin", o.Name, suffix, o.Seed))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, WriteFile(path, o)
}
