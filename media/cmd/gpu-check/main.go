// Command gpu-check measures what the GPU does for the worker on this
// machine: ffmpeg capability detection, NVDEC vs CPU decode, NVENC vs
// libx264 encode, thumbnails, and whisper speed when built with -tags
// whisper: generated models of several sizes (or WHISPER_MODEL) at 1…8
// streams on one model, flash attention on and off, beam search, GPU vs
// CPU, device memory per stream, and hours of audio per hour per GPU. On a machine without a
// GPU it reports each GPU row as unavailable, with the reason. It finishes
// within -timeout (default 4m30s). Run it through scripts/gpu-check.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 270*time.Second, "stop measuring after this long")
	childPCM := flag.String("whisper-child", "", "internal: transcribe this 16 kHz f32le file and print the timings")
	streams := flag.String("whisper-streams", "1", "internal: with -whisper-child, the comma-separated stream counts to measure")
	noFA := flag.Bool("whisper-no-fa", false, "internal: with -whisper-child, flash attention off")
	beam := flag.Int("whisper-beam", 0, "internal: with -whisper-child, beam search with this many beams (0: greedy)")
	threads := flag.Int("whisper-threads", 0, "internal: with -whisper-child, CPU threads per stream (0: whisper's default)")
	only := flag.String("only", "", "measure only this section: media (detection and ffmpeg) or whisper")
	flag.Parse()
	if *only != "" && *only != "media" && *only != "whisper" {
		fmt.Fprintf(os.Stderr, "gpu-check: -only %q: want media or whisper\n", *only)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var err error
	if *childPCM != "" {
		cc := childConfig{noFA: *noFA, beam: *beam, threads: *threads}
		for _, f := range strings.Split(*streams, ",") {
			n, perr := strconv.Atoi(strings.TrimSpace(f))
			if perr != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "gpu-check: -whisper-streams %q: want counts like 1,2,4\n", *streams)
				os.Exit(2)
			}
			cc.streams = append(cc.streams, n)
		}
		err = whisperChild(ctx, os.Stdout, *childPCM, cc)
	} else {
		err = check(ctx, os.Stdout, *only != "whisper", *only != "media")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpu-check:", err)
		os.Exit(1)
	}
}
