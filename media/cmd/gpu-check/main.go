// Command gpu-check measures what the GPU does for the worker on this
// machine: ffmpeg capability detection, NVDEC vs CPU decode, NVENC vs
// libx264 encode, thumbnails, and whisper GPU vs CPU real-time factor when
// built with -tags whisper and given WHISPER_MODEL. On a machine without a
// GPU it reports each GPU row as unavailable, with the reason. It finishes
// within -timeout (default 4m30s). Run it through scripts/gpu-check.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 270*time.Second, "stop measuring after this long")
	whisperChild := flag.String("whisper-child", "", "internal: transcribe this 16 kHz f32le file and print the real-time factor")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var err error
	if *whisperChild != "" {
		err = whisperRTF(ctx, os.Stdout, *whisperChild)
	} else {
		err = check(ctx, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpu-check:", err)
		os.Exit(1)
	}
}
