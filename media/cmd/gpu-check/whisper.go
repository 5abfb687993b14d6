package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
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

// level is one measurement in a child: `streams` transcriptions of the
// same audio at once on one loaded model.
type level struct {
	streams   int
	wall      float64 // seconds from the first start to the last end
	audio     float64 // seconds of audio per stream
	words     int     // per stream (the same in every stream)
	vramModel uint64  // device memory the loaded model added
	vramPeak  uint64  // the most device memory used during the level, above the model
	device    string
}

// xRT is the aggregate speed: seconds of audio transcribed per second of
// wall time, over all streams.
func (l level) xRT() float64 { return float64(l.streams) * l.audio / math.Max(l.wall, 1e-9) }

// setting is one child process: a model, a place and decoding settings,
// measured at several stream counts.
type setting struct {
	model, modelPath string
	where            string // "GPU" or "CPU"
	label            string // "fa on", "fa off", "beam 5, fa on", "8 threads"
	streams          []int
	env              []string
	args             []string
}

// whisperSection measures whisper.cpp as the worker runs it: one model
// loaded once, N transcriptions at once, each on its own state. Per
// generated model size (media/transcribe/ggmlgen: real dimensions, random
// weights, a decoder rigged to emit a fixed ~100-token script per 30 s
// window, so the decoder's work is that of real speech), in child
// processes so that each starts with an empty GPU:
//   - on the GPU, greedy, flash attention on, at 1, 2, 4 and 8 streams
//     (aggregate speed and device memory per stream); flash attention off;
//     beam search of 5;
//   - on the CPU (the same binary with CUDA_VISIBLE_DEVICES empty, which
//     leaves ggml-cuda no device), at 1 and 2 streams.
//
// It ends with streams per GPU and hours of audio per hour per GPU, the
// number a MoRAG operator buys GPUs by. WHISPER_MODEL, when set, replaces
// the generated models.
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
		sizes = []string{"tiny", "base", "small", "large-v3-turbo"}
	}
	if s := os.Getenv("GPU_CHECK_SIZES"); s != "" {
		sizes = strings.Split(s, ",")
	}
	raw, audio, err := speechPCM(ctx, dir)
	if err != nil {
		fmt.Fprintln(out, "not measured:", err)
		return
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(out, "not measured:", err)
		return
	}
	fmt.Fprintf(out, "input: %.1f s of espeak-ng speech per stream (one window); ×RT = seconds of audio transcribed per second, all streams together\n", audio)

	type model struct{ label, path string }
	var models []model
	if m := os.Getenv(transcribe.ModelEnv); m != "" {
		models = append(models, model{m, m})
	} else {
		for _, size := range sizes {
			t := time.Now()
			p, err := ggmlgen.Cached(filepath.Join(os.TempDir(), "morag-gpu-ggmlgen"), ggmlgen.Options{Name: size, Seed: 1})
			if err != nil {
				fmt.Fprintf(out, "%s: not generated: %v\n", size, err)
				continue
			}
			if d := time.Since(t); d > time.Second {
				fmt.Fprintf(out, "generated %s in %.1fs\n", size, d.Seconds())
			}
			models = append(models, model{size, p})
		}
	}

	// In order of what matters most, so that a run out of time loses the
	// least: every size on the GPU as the worker runs it, then the CPU,
	// then flash attention off and beam search.
	cpuThreads := max(1, min(runtime.NumCPU()/2, 8))
	cpuLabel := fmt.Sprintf("%d threads/stream", cpuThreads)
	var settings []setting
	pass := func(where, label string, streams []int, env []string, args ...string) {
		if where == "GPU" && !hasGPU {
			return
		}
		for _, m := range models {
			settings = append(settings, setting{model: m.label, modelPath: m.path, where: where, label: label, streams: streams, env: env, args: args})
		}
	}
	pass("GPU", "fa on", []int{1, 2, 4, 8}, nil)
	pass("CPU", cpuLabel, []int{1, 2}, []string{"CUDA_VISIBLE_DEVICES="}, "-whisper-threads", strconv.Itoa(cpuThreads))
	pass("GPU", "fa off", []int{1, 8}, nil, "-whisper-no-fa")
	pass("GPU", "beam 5, fa on", []int{1, 8}, nil, "-whisper-beam", "5")

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "model\twhere\tsettings\tstreams\t×RT total\t×RT/stream\tVRAM model\tVRAM/stream\tnote")
	results := map[string][]level{} // model|where|label
	for _, s := range settings {
		if ctx.Err() != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\tskipped: out of time\n", s.model, s.where, s.label)
			continue
		}
		levels, err := runChild(ctx, self, raw, s)
		if err != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\tfailed: %s\n", s.model, s.where, s.label, firstLine(err.Error()))
		}
		for _, l := range levels {
			vm, vs := "-", "-"
			if s.where == "GPU" {
				vm = mib(l.vramModel)
				vs = mib(l.vramPeak / uint64(l.streams))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1f\t%.1f\t%s\t%s\t%d words/stream on %s\n", s.model, s.where, s.label, l.streams,
				l.xRT(), l.xRT()/float64(l.streams), vm, vs, l.words, l.device)
		}
		results[s.model+"|"+s.where+"|"+s.label] = levels
	}
	tw.Flush()

	// The summary an operator reads: the fewest streams within 10% of the
	// best aggregate speed, and what one GPU transcribes per hour there.
	for _, m := range models {
		gpu := results[m.label+"|GPU|fa on"]
		cpu := results[m.label+"|CPU|"+cpuLabel]
		if len(gpu) == 0 {
			continue
		}
		best := gpu[0]
		for _, l := range gpu {
			if l.xRT() > best.xRT() {
				best = l
			}
		}
		pick := best
		for _, l := range gpu {
			if l.xRT() >= 0.9*best.xRT() && l.streams < pick.streams {
				pick = l
			}
		}
		line := fmt.Sprintf("%s: %d streams per GPU → %.0f hours of audio per hour per GPU (%.1f× real time in all; best %.1f× at %d streams)",
			m.label, pick.streams, pick.xRT(), pick.xRT(), best.xRT(), best.streams)
		if len(cpu) > 0 {
			cbest := cpu[0]
			for _, l := range cpu {
				if l.xRT() > cbest.xRT() {
					cbest = l
				}
			}
			line += fmt.Sprintf("; GPU vs this box's CPU: %.1f× (CPU best %.1f× real time)", pick.xRT()/cbest.xRT(), cbest.xRT())
		}
		fmt.Fprintln(out, line)
	}
}

// speechPCM records the speech sample with espeak-ng and writes it as raw
// 16 kHz f32le for the children; it returns the file and the seconds.
func speechPCM(ctx context.Context, dir string) (string, float64, error) {
	wav := filepath.Join(dir, "speech.wav")
	if out, err := exec.CommandContext(ctx, "espeak-ng", "-w", wav, speech).CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("espeak-ng: %v: %s", err, firstLine(string(out)))
	}
	pcm, err := (&media.Tools{}).DecodePCM(ctx, wav, 10*time.Minute)
	if err != nil {
		return "", 0, err
	}
	// One 30 s window exactly: whisper.cpp skips a last window under 5 s
	// (the sample is 33 s), so longer input would be credited audio that
	// was never transcribed, and a shorter one (a bundle's recorded
	// sample) still costs a whole window's encoder pass. A short sample
	// is repeated to fill the window.
	if len(pcm) == 0 {
		return "", 0, errors.New("espeak-ng wrote no audio")
	}
	for len(pcm) < 30*media.SampleRate {
		pcm = append(pcm, pcm[:min(len(pcm), 30*media.SampleRate-len(pcm))]...)
	}
	pcm = pcm[:30*media.SampleRate]
	raw := filepath.Join(dir, "speech.f32")
	buf := make([]byte, 4*len(pcm))
	for i, s := range pcm {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(s))
	}
	if err := os.WriteFile(raw, buf, 0o600); err != nil {
		return "", 0, err
	}
	return raw, float64(len(pcm)) / media.SampleRate, nil
}

// runChild measures one setting in a child process and parses its lines.
func runChild(ctx context.Context, self, raw string, s setting) ([]level, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	streams := make([]string, len(s.streams))
	for i, n := range s.streams {
		streams[i] = strconv.Itoa(n)
	}
	args := append([]string{"-whisper-child", raw, "-whisper-streams", strings.Join(streams, ",")}, s.args...)
	cmd := exec.CommandContext(cctx, self, args...)
	cmd.Env = append(append(os.Environ(), transcribe.ModelEnv+"="+s.modelPath), s.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	// GPU_CHECK_LOG_DIR keeps every child's stderr (whisper.cpp's and
	// ggml's own messages) for a run that has to be read afterwards.
	if d := os.Getenv("GPU_CHECK_LOG_DIR"); d != "" {
		name := strings.NewReplacer(" ", "_", ",", "", "/", "_").Replace(s.model + "-" + s.where + "-" + s.label + ".log")
		_ = os.WriteFile(filepath.Join(d, name), stderr.Bytes(), 0o644)
	}
	var levels []level
	for _, line := range strings.Split(stdout.String(), "\n") {
		var l level
		if n, _ := fmt.Sscanf(line, "streams=%d wall=%g audio=%g words=%d vram_model=%d vram_peak=%d device=%q",
			&l.streams, &l.wall, &l.audio, &l.words, &l.vramModel, &l.vramPeak, &l.device); n == 7 {
			levels = append(levels, l)
		}
	}
	if err != nil {
		return levels, fmt.Errorf("%v: %s", err, lastLine(stderr.String()))
	}
	return levels, nil
}

// childConfig is what the parent passes to a whisper child.
type childConfig struct {
	streams []int
	noFA    bool
	beam    int
	threads int
}

// whisperChild runs in the child: it loads the model once with as many
// slots as the largest stream count, then per stream count transcribes
// the raw PCM file that many times at once and prints one line. Device
// memory is sampled every 10 ms while the streams run.
func whisperChild(ctx context.Context, out io.Writer, raw string, cc childConfig) error {
	data, err := os.ReadFile(raw)
	if err != nil {
		return err
	}
	pcm := make([]float32, len(data)/4)
	for i := range pcm {
		pcm[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	slots := 1
	for _, n := range cc.streams {
		slots = max(slots, n)
	}
	before := usedVRAM()
	// Device 0 only: the table is per GPU, and the worker's default would
	// spread the streams over every GPU of a multi-GPU box.
	tr, err := transcribe.NewWhisper(transcribe.WhisperConfig{Slots: slots, NoFlashAttn: cc.noFA, BeamSize: cc.beam, Threads: cc.threads,
		GPUDevices: []int{0}, Verbose: os.Getenv("GPU_CHECK_LOG_DIR") != ""})
	if err != nil {
		return err
	}
	defer tr.Close()
	modelVRAM := sub(usedVRAM(), before)
	device := "?"
	if in, ok := tr.(interface{ Info() map[string]any }); ok {
		device = fmt.Sprint(in.Info()["device"])
	}
	audio := float64(len(pcm)) / transcribe.SampleRate
	// One short warm-up stream, so CUDA's first-use costs (kernel
	// loading, cuBLAS handles) are not charged to the first level.
	if _, err := tr.Transcribe(ctx, pcm[:min(len(pcm), transcribe.SampleRate)], transcribe.Options{Language: "auto"}, nil); err != nil {
		return err
	}
	for _, n := range cc.streams {
		idle := usedVRAM()
		var peak uint64
		stop := make(chan struct{})
		var sampler sync.WaitGroup
		sampler.Add(1)
		go func() {
			defer sampler.Done()
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				peak = max(peak, usedVRAM())
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		words := make([]int, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t, err := tr.Transcribe(ctx, pcm, transcribe.Options{Language: "auto"}, nil)
				if err != nil {
					errs[i] = err
					return
				}
				words[i] = t.WordCount()
			}()
		}
		wg.Wait()
		wall := time.Since(start).Seconds()
		close(stop)
		sampler.Wait()
		for _, err := range errs {
			if err != nil {
				return fmt.Errorf("%d streams: %w", n, err)
			}
		}
		fmt.Fprintf(out, "streams=%d wall=%g audio=%g words=%d vram_model=%d vram_peak=%d device=%q\n",
			n, wall, audio, words[0], modelVRAM, sub(peak, idle), device)
	}
	return nil
}

// usedVRAM is the memory used on the first GPU, device-wide; 0 without one.
func usedVRAM() uint64 {
	if m := transcribe.GPUMemory(); len(m) > 0 {
		return m[0].Used
	}
	return 0
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// lastLine is the last non-empty line of s: where a crashing child says why.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return firstLine(lines[len(lines)-1])
}
