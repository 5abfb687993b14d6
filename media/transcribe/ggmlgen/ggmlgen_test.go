package ggmlgen

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Reads a generated file back as whisper.cpp's loader does and checks the
// header and the tensor table against the dimensions.
func TestGeneratedLayout(t *testing.T) {
	for _, name := range []string{"tiny.en", "tiny"} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Generate(&buf, Options{Name: name, Seed: 7}); err != nil {
				t.Fatal(err)
			}
			d, _ := DimsOf(name)
			r := bufio.NewReader(&buf)
			get := func() int32 {
				var x int32
				if err := binary.Read(r, binary.LittleEndian, &x); err != nil {
					t.Fatal(err)
				}
				return x
			}
			if get() != fileMagic {
				t.Fatal("bad magic")
			}
			hp := []int32{d.NVocab, d.NAudioCtx, d.NAudioState, d.NAudioHead, d.NAudioLayer, d.NTextCtx, d.NTextState, d.NTextHead, d.NTextLayer, d.NMels, ftypeF16}
			for i, want := range hp {
				if got := get(); got != want {
					t.Fatalf("hparam %d = %d, want %d", i, got, want)
				}
			}
			nMel, nFFT := get(), get()
			r.Discard(int(nMel * nFFT * 4))
			nVocab := get()
			if nVocab != vocabOf(d).eot {
				t.Errorf("vocab %d tokens, want %d", nVocab, vocabOf(d).eot)
			}
			for range nVocab {
				r.Discard(int(get()))
			}
			names := map[string]bool{}
			for {
				var hdr [3]int32
				if err := binary.Read(r, binary.LittleEndian, &hdr); err == io.EOF {
					break
				} else if err != nil {
					t.Fatal(err)
				}
				n := int64(1)
				ne := make([]int32, hdr[0])
				for i := range ne {
					ne[i] = get()
					n *= int64(ne[i])
				}
				nm := make([]byte, hdr[1])
				io.ReadFull(r, nm)
				names[string(nm)] = true
				size := int64(4)
				if hdr[2] == typeF16 {
					size = 2
				}
				if _, err := r.Discard(int(n * size)); err != nil {
					t.Fatalf("%s: %v", nm, err)
				}
			}
			if want := 11 + 15*int(d.NAudioLayer) + 24*int(d.NTextLayer); len(names) != want {
				t.Errorf("%d tensors, want %d (whisper.cpp refuses a partial model)", len(names), want)
			}
			for _, n := range []string{"encoder.conv1.weight", "decoder.token_embedding.weight", fmt.Sprintf("decoder.blocks.%d.cross_attn.out.bias", d.NTextLayer-1)} {
				if !names[n] {
					t.Errorf("missing %s", n)
				}
			}
		})
	}
}

func TestSameSeedSameFile(t *testing.T) {
	dir := t.TempDir()
	a, err := Cached(dir, Options{Name: "tiny.en", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(dir, "again.bin")
	if err := WriteFile(b, Options{Name: "tiny.en", Seed: 3}); err != nil {
		t.Fatal(err)
	}
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if !bytes.Equal(x, y) {
		t.Error("the same seed wrote different files")
	}
	if _, err := DimsOf("huge"); err == nil {
		t.Error("unknown size accepted")
	}
	if d, err := DimsOf("large-v3-turbo-q5_0"); err != nil || d.NTextLayer != 4 || d.NMels != 128 {
		t.Errorf("large-v3-turbo-q5_0: %+v %v", d, err)
	}
}

func TestF16(t *testing.T) {
	for _, c := range []struct {
		f float32
		h uint16
	}{{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {0.5, 0x3800}, {65504, 0x7bff}, {1e9, 0x7c00}} {
		if got := f16(c.f); got != c.h {
			t.Errorf("f16(%g) = %#x, want %#x", c.f, got, c.h)
		}
	}
}
