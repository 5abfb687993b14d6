package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"morag-gpu/media"
	"morag-gpu/media/transcribe"
	"morag-gpu/media/transcribe/ggmlgen"
)

const speech = "And so, my fellow Americans: ask not what your country can do for you, ask what you can do for your country. " +
	"My fellow citizens of the world: ask not what America will do for you, but what together we can do for the freedom of man. " +
	"Finally, whether you are citizens of America or citizens of the world, ask of us the same high standards of strength and sacrifice which we ask of you. " +
	"With a good conscience our only sure reward, with history the final judge of our deeds, let us go forth to lead the land we love, " +
	"asking His blessing and His help, but knowing that here on earth God's work must truly be our own."

// whisperSection measures the real-time factor (processing time / audio
// time) of the whisper backend per model, twice each, in child processes:
// as built (on the GPU when libwhisper has CUDA) and with
// CUDA_VISIBLE_DEVICES empty, which leaves ggml-cuda no device, so the same
// binary runs on the CPU. The models are WHISPER_MODEL when set, else
// generated ones (media/transcribe/ggmlgen: real dimensions, random
// weights, a fixed ~100-token script per window) of several sizes.
func whisperSection(ctx context.Context, out io.Writer, dir string) {
	fmt.Fprintln(out, "== whisper")
	ok, reason := transcribe.Available()
	if !ok {
		fmt.Fprintln(out, "not measured:", reason)
		return
	}
	fmt.Fprintln(out, reason)
	// Without a GPU, the big sizes would only measure the CPU for minutes.
	hasGPU := strings.Contains(reason, "GPU:")
	sizes := []string{"tiny", "base"}
	if hasGPU {
		sizes = []string{"tiny", "base", "small", "medium", "large-v3-turbo"}
	}
	wav := filepath.Join(dir, "speech.wav")
	if out, err := exec.CommandContext(ctx, "espeak-ng", "-w", wav, speech).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "espeak-ng: %v: %s\n", err, out)
		return
	}
	pcm, err := (&media.Tools{}).DecodePCM(ctx, wav, 10*time.Minute)
	if err != nil {
		fmt.Fprintln(out, "not measured:", err)
		return
	}
	raw := filepath.Join(dir, "speech.f32")
	buf := make([]byte, 4*len(pcm))
	for i, s := range pcm {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(s))
	}
	if err := os.WriteFile(raw, buf, 0o600); err != nil {
		fmt.Fprintln(out, "not measured:", err)
		return
	}
	type model struct{ label, path string }
	var models []model
	if m := os.Getenv(transcribe.ModelEnv); m != "" {
		models = append(models, model{m, m})
	} else {
		for _, size := range sizes {
			p, err := ggmlgen.Cached(filepath.Join(os.TempDir(), "morag-gpu-ggmlgen"), ggmlgen.Options{Name: size, Seed: 1})
			if err != nil {
				fmt.Fprintf(out, "%s: not generated: %v\n", size, err)
				continue
			}
			models = append(models, model{size + " (generated)", p})
		}
	}
	fmt.Fprintf(out, "input: %.1fs of espeak-ng speech\n", float64(len(pcm))/media.SampleRate)

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(out, "not measured:", err)
		return
	}
	run := func(m model, label string, env ...string) float64 {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, self, "-whisper-child", raw)
		cmd.Env = append(append(os.Environ(), transcribe.ModelEnv+"="+m.path), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(out, "%-26s %-4s failed (%v): %s\n", m.label, label, err, firstLine(stderr.String()+stdout.String()))
			return 0
		}
		var rtf, audio, secs float64
		var words int
		var device string
		fmt.Sscanf(strings.TrimSpace(stdout.String()), "rtf=%g audio=%g secs=%g words=%d device=%q", &rtf, &audio, &secs, &words, &device)
		fmt.Fprintf(out, "%-26s %-4s RTF %.4f (%.1fx real time): %.1fs audio in %.2fs, %d words, device %s\n",
			m.label, label, rtf, 1/math.Max(rtf, 1e-9), audio, secs, words, device)
		return rtf
	}
	for _, m := range models {
		if !hasGPU {
			fmt.Fprintf(out, "%-26s gpu  n/a (no GPU: libwhisper without CUDA, or none usable)\n", m.label)
			run(m, "cpu")
			continue
		}
		gpu := run(m, "gpu")
		cpu := run(m, "cpu", "CUDA_VISIBLE_DEVICES=")
		if gpu > 0 && cpu > 0 {
			fmt.Fprintf(out, "%-26s GPU vs CPU: %.1fx faster (same model, same binary)\n", m.label, cpu/gpu)
		}
	}
}

// whisperRTF runs in the child: it transcribes the raw PCM file once the
// model is loaded and prints the timing line whisperSection parses.
func whisperRTF(ctx context.Context, out io.Writer, raw string) error {
	data, err := os.ReadFile(raw)
	if err != nil {
		return err
	}
	pcm := make([]float32, len(data)/4)
	for i := range pcm {
		pcm[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	tr, err := transcribe.NewWhisper(transcribe.WhisperConfig{})
	if err != nil {
		return err
	}
	defer tr.Close()
	device := "?"
	if in, ok := tr.(interface{ Info() map[string]any }); ok {
		device = fmt.Sprint(in.Info()["device"])
	}
	start := time.Now()
	t, err := tr.Transcribe(ctx, pcm, transcribe.Options{Language: "auto"}, nil)
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	audio := float64(len(pcm)) / transcribe.SampleRate
	fmt.Fprintf(out, "rtf=%g audio=%g secs=%g words=%d device=%q\n", secs/audio, audio, secs, t.WordCount(), device)
	return nil
}
