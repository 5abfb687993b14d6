// Command whisper-model-fetch downloads a published whisper model by name
// into the model cache (as the worker's -whisper-model NAME would) and
// prints its path; scripts/run uses it so the worker starts with a model.
//
//	go run ./internal/cmd/whisper-model-fetch base.en
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/media/transcribe"
)

func main() {
	dir := flag.String("dir", transcribe.DefaultModelDir(), "model cache")
	url := flag.String("url", os.Getenv(transcribe.ModelURLEnv), "mirror with ggml-<name>.bin files")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	flag.Parse()
	name := flag.Arg(0)
	if name == "" {
		name = transcribe.DefaultModel
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	s := transcribe.ModelStore{Dir: *dir, BaseURL: *url, Log: log, StallTimeout: 30 * time.Second}
	p, err := s.Resolve(ctx, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(p)
}
