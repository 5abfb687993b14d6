// Command whisper-model-gen writes a ggml whisper model with seeded random
// weights at the real dimensions of a published size (see
// media/transcribe/ggmlgen), for tests and benchmarks without a download:
//
//	go run ./internal/cmd/whisper-model-gen -size base.en -o /tmp/ggml-gen-base.en.bin
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"morag-gpu/media/transcribe/ggmlgen"
)

func main() {
	size := flag.String("size", "tiny.en", "model size: "+strings.Join(ggmlgen.Sizes(), ", "))
	out := flag.String("o", "", "output file (default ggml-gen-<size>.bin)")
	seed := flag.Uint64("seed", 1, "random seed; the same seed writes the same file")
	turns := flag.Bool("speaker-turns", false, "emit tinydiarize speaker turns (on for *-tdrz sizes)")
	flag.Parse()
	if *out == "" {
		*out = "ggml-gen-" + *size + ".bin"
	}
	if err := ggmlgen.WriteFile(*out, ggmlgen.Options{Name: *size, Seed: *seed, SpeakerTurns: *turns}); err != nil {
		fmt.Fprintln(os.Stderr, "whisper-model-gen:", err)
		os.Exit(1)
	}
	st, _ := os.Stat(*out)
	fmt.Printf("%s: %s, %d bytes\n", *out, *size, st.Size())
}
