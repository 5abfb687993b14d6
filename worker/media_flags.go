package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"morag-gpu/media"
	"morag-gpu/media/transcribe"
	"morag-gpu/worker/runner"
	"morag-gpu/worker/tasks"
)

// mediaFlags are the flags of the MoRAG audio/video tasks.
type mediaFlags struct {
	gpu           string
	whisperModel  string
	noTranscriber string
	allowPrivate  bool
	maxDownload   byteSize
}

// registerMediaFlags defines -gpu, -whisper-model, -no-transcriber,
// -allow-private-urls and -max-download-size on fs.
func registerMediaFlags(fs *flag.FlagSet) *mediaFlags {
	f := &mediaFlags{maxDownload: 2 << 30}
	fs.StringVar(&f.gpu, "gpu", "auto", "GPU use for ffmpeg: auto (what a test run proves works), on (refuse to start without NVDEC), off")
	fs.StringVar(&f.whisperModel, "whisper-model", os.Getenv(transcribe.ModelEnv), "ggml whisper model file for transcription (env WHISPER_MODEL; needs a build with -tags whisper)")
	fs.StringVar(&f.noTranscriber, "no-transcriber", string(tasks.NoTranscriberForward), "without a transcriber, audio/video needing a transcript are: forward (to -forward-unknown's queue) or fail")
	fs.BoolVar(&f.allowPrivate, "allow-private-urls", false, "let process_url_task_remote fetch loopback, private and link-local addresses")
	fs.Var(&f.maxDownload, "max-download-size", "largest input a task downloads, e.g. 2GiB, 500MB or bytes (0: no limit)")
	return f
}

// setup detects the GPU, loads the transcriber, registers the MoRAG media
// tasks on mux and returns what the worker reports about them (for
// runner.Config.Info: health check and inspect stats) and a cleanup that
// frees the transcriber. forwardQueue is -forward-unknown's queue.
func (f *mediaFlags) setup(ctx context.Context, log zerolog.Logger, concurrency int, forwardQueue string, mux *runner.Mux) (map[string]any, func(), error) {
	mode, err := media.ParseMode(f.gpu)
	if err != nil {
		return nil, nil, fmt.Errorf("-gpu: %w", err)
	}
	policy, err := tasks.ParseNoTranscriber(f.noTranscriber)
	if err != nil {
		return nil, nil, err
	}
	caps, err := media.Detect(ctx, media.DetectOptions{Mode: mode})
	if err != nil {
		// -gpu on without a usable NVDEC: the error says what each test
		// run printed and what to do.
		return nil, nil, err
	}
	log.Info().Interface("gpu", caps).Msg("media: " + caps.String())

	var tr transcribe.Transcriber
	transcriber := map[string]any{"available": false}
	reason := ""
	if ok, why := transcribe.Available(); !ok {
		reason = why
	} else if t, err := transcribe.NewWhisper(transcribe.WhisperConfig{Model: f.whisperModel, Slots: max(1, concurrency)}); err != nil {
		if f.whisperModel != "" {
			// An explicit model that does not load is a mistake to fix, not
			// a reason to quietly hand every transcript away.
			return nil, nil, fmt.Errorf("-whisper-model: %w", err)
		}
		reason = err.Error()
	} else {
		tr = t
		transcriber = map[string]any{"available": true, "backend": "whisper.cpp", "model": modelPath(f.whisperModel), "detail": why, "slots": max(1, concurrency)}
		log.Info().Str("model", modelPath(f.whisperModel)).Int("slots", max(1, concurrency)).Msg("transcriber: whisper.cpp, " + why)
	}
	if tr == nil {
		transcriber["reason"] = reason
		transcriber["no_transcriber"] = string(policy)
		short := "built without whisper tag"
		if ok, _ := transcribe.Available(); ok {
			short = "whisper model not loaded"
		}
		switch {
		case policy == tasks.NoTranscriberFail:
			log.Warn().Str("reason", reason).Msg("no transcriber: " + short + "; audio/video needing a transcript fail (-no-transcriber fail)")
		case forwardQueue == "":
			return nil, nil, fmt.Errorf("no transcriber (%s) and -forward-unknown is empty: audio/video needing a transcript could go nowhere; set -forward-unknown celery or -no-transcriber fail", reason)
		default:
			transcriber["forward_to"] = forwardQueue
			log.Warn().Str("reason", reason).Msg("no transcriber: " + short + "; audio/video needing a transcript are forwarded to " + forwardQueue)
		}
	}

	tools := &media.Tools{GPU: caps}
	err = tasks.RegisterMedia(mux, tasks.MediaConfig{
		Tools:             tools,
		Transcriber:       tr,
		TranscriberReason: reason,
		NoTranscriber:     policy,
		ForwardQueue:      forwardQueue,
		AllowPrivateURLs:  f.allowPrivate,
		MaxDownloadSize:   int64(f.maxDownload),
		APIKey:            os.Getenv("MORAG_API_KEY"),
		GatewayURL:        os.Getenv("MAIN_SERVER_URL"),
		Logger:            log,
	})
	if err != nil {
		if tr != nil {
			tr.Close()
		}
		return nil, nil, err
	}
	if f.allowPrivate {
		log.Warn().Msg("process_url_task_remote may fetch loopback, private and link-local addresses (-allow-private-urls)")
	}
	cleanup := func() {
		if tr != nil {
			if err := tr.Close(); err != nil {
				log.Warn().Err(err).Msg("closing the transcriber")
			}
		}
	}
	return map[string]any{"gpu": caps, "transcriber": transcriber}, cleanup, nil
}

// mediaStatus reads what setup reported: the GPU capabilities and whether a
// transcriber is loaded.
func mediaStatus(info map[string]any) (media.Capabilities, bool) {
	caps, _ := info["gpu"].(media.Capabilities)
	tr, _ := info["transcriber"].(map[string]any)
	available, _ := tr["available"].(bool)
	return caps, available
}

func modelPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return os.Getenv(transcribe.ModelEnv)
}

// byteSize is a flag holding a number of bytes, written as 2GiB, 500MB,
// 10k or a plain number.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	v := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
		{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1},
	} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || !(n >= 0) || n*float64(mult) > 1<<62 {
		return fmt.Errorf("%q is not a size like 2GiB, 500MB or 1048576", s)
	}
	*b = byteSize(n * float64(mult))
	return nil
}
