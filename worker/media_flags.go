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
	modelDir      string
	modelURL      string
	whisperGPU    bool
	whisperGPUs   string
	streams       int
	noTranscriber string
	allowPrivate  bool
	maxDownload   byteSize
	limits        media.Limits
	memory        byteSize
	probeOutput   byteSize
	tempDir       string
}

// registerMediaFlags defines -gpu, -whisper-model, -no-transcriber,
// -allow-private-urls and -max-download-size on fs.
func registerMediaFlags(fs *flag.FlagSet) *mediaFlags {
	f := &mediaFlags{maxDownload: 2 << 30}
	fs.StringVar(&f.gpu, "gpu", "auto", "GPU use for ffmpeg: auto (what a test run proves works), on (refuse to start without NVDEC), off")
	fs.StringVar(&f.whisperModel, "whisper-model", os.Getenv(transcribe.ModelEnv), "whisper model: a ggml file or a published name (base.en, large-v3-turbo, small.en-tdrz, …) downloaded once (env WHISPER_MODEL; needs a build with -tags whisper)")
	fs.StringVar(&f.modelDir, "whisper-model-dir", transcribe.DefaultModelDir(), "where named whisper models are downloaded")
	fs.StringVar(&f.modelURL, "whisper-model-url", os.Getenv(transcribe.ModelURLEnv), "mirror holding ggml-<name>.bin files (env WHISPER_MODEL_URL; default: where whisper.cpp publishes them)")
	fs.BoolVar(&f.whisperGPU, "whisper-gpu", true, "let whisper.cpp use the GPU when libwhisper was built with CUDA")
	fs.StringVar(&f.whisperGPUs, "whisper-gpus", "", "comma-separated CUDA devices (numbered within CUDA_VISIBLE_DEVICES): one model copy on each, transcription streams spread over them (default: every GPU whisper.cpp can use)")
	fs.IntVar(&f.streams, "transcribe-streams", 0, "transcriptions run at once, each on its own whisper state (0: same as -concurrency); set -concurrency above it so other tasks download, probe and cut thumbnails meanwhile")
	fs.StringVar(&f.noTranscriber, "no-transcriber", string(tasks.NoTranscriberForward), "without a transcriber, audio/video needing a transcript are: forward (to -forward-unknown's queue) or fail")
	fs.BoolVar(&f.allowPrivate, "allow-private-urls", false, "let process_url_task_remote fetch loopback, private and link-local addresses")
	fs.Var(&f.maxDownload, "max-download-size", "largest input a task downloads, e.g. 2GiB, 500MB or bytes (0: no limit)")
	// Hostile media: each limit below names itself in the error a task
	// fails with when an input exceeds it.
	d := media.DefaultLimits()
	f.limits = d
	f.memory, f.probeOutput = byteSize(d.Memory), byteSize(d.MaxProbeOutput)
	fs.Int64Var(&f.limits.MaxPixels, "media-max-pixels", d.MaxPixels, "largest video frame (width x height) probed or decoded")
	fs.DurationVar(&f.limits.MaxDuration, "media-max-duration", d.MaxDuration, "longest accepted audio/video")
	fs.IntVar(&f.limits.MaxStreams, "media-max-streams", d.MaxStreams, "most streams one file may have")
	fs.Float64Var(&f.limits.MaxFPS, "media-max-fps", d.MaxFPS, "highest average video frame rate")
	fs.Var(&f.probeOutput, "media-max-metadata", "most bytes of ffprobe's description of one file (tags included)")
	fs.IntVar(&f.limits.MaxPackets, "media-max-packets", d.MaxPackets, "most packets listed when looking for keyframes")
	fs.Var(&f.memory, "media-memory", "address-space limit of each ffmpeg/ffprobe process (RLIMIT_AS), e.g. 4GiB")
	fs.DurationVar(&f.limits.TimeBase, "media-time-base", d.TimeBase, "wall-clock time every ffmpeg/ffprobe run gets (a probe, a frame)")
	fs.Float64Var(&f.limits.TimeFactor, "media-time-factor", d.TimeFactor, "extra wall-clock seconds per second of media for runs that decode all of it (proxy, audio); CPU time is capped at the wall limit x -media-threads")
	fs.IntVar(&f.limits.Threads, "media-threads", d.Threads, "ffmpeg threads per run")
	fs.Float64Var(&f.limits.ProxyRatio, "proxy-max-ratio", d.ProxyRatio, "largest proxy transcode as a multiple of the input's size (at least 8 MiB)")
	fs.StringVar(&f.tempDir, "temp-dir", "", "where the worker's own temporary folder is made (default $TMPDIR); stale ones of dead workers are removed at start")
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
	f.limits.Memory, f.limits.MaxProbeOutput = int64(f.memory), int64(f.probeOutput)
	if err := f.limits.Validate(); err != nil {
		return nil, nil, err
	}
	work, err := tasks.NewWorkDir(f.tempDir, log)
	if err != nil {
		return nil, nil, err
	}
	started := false
	defer func() {
		if !started { // any early return below: leave nothing behind
			work.Close()
		}
	}()
	log.Info().Str("dir", work.Path).Msg("media: temporary files go to this worker's own folder")
	caps, err := media.Detect(ctx, media.DetectOptions{Mode: mode})
	if err != nil {
		// -gpu on without a usable NVDEC: the error says what each test
		// run printed and what to do.
		return nil, nil, err
	}
	log.Info().Interface("gpu", caps).Msg("media: " + caps.String())

	gpus, err := parseDevices(f.whisperGPUs)
	if err != nil {
		return nil, nil, err
	}
	if f.streams < 0 {
		return nil, nil, fmt.Errorf("-transcribe-streams %d: use a positive number, or 0 for -concurrency", f.streams)
	}
	// The transcriber's capacity is its own, not the runner's slots: a
	// task holds a stream only while it transcribes. The default keeps
	// one stream (one whisper state) per task slot, as before; more task
	// slots than streams let downloads and frames overlap transcription.
	streams := f.streams
	if streams == 0 {
		streams = max(1, concurrency)
	}
	var tr transcribe.Transcriber
	transcriber := map[string]any{"available": false}
	reason := ""
	if ok, why := transcribe.Available(); !ok {
		reason = why
	} else if t, err := transcribe.NewWhisperContext(ctx, transcribe.WhisperConfig{
		Model: f.whisperModel, Slots: streams, NoGPU: !f.whisperGPU, GPUDevices: gpus,
		Store: transcribe.ModelStore{Dir: f.modelDir, BaseURL: f.modelURL, Log: log},
	}); err != nil {
		if f.whisperModel != "" {
			// An explicit model that does not load is a mistake to fix, not
			// a reason to quietly hand every transcript away.
			return nil, nil, fmt.Errorf("-whisper-model: %w", err)
		}
		reason = err.Error()
	} else {
		tr = t
		transcriber = map[string]any{"available": true, "backend": "whisper.cpp", "model": modelPath(f.whisperModel), "detail": why, "slots": streams, "streams": streams}
		if in, ok := t.(interface{ Info() map[string]any }); ok {
			for k, v := range in.Info() {
				transcriber[k] = v
			}
		}
		log.Info().Str("model", modelPath(f.whisperModel)).Int("streams", streams).Int("concurrency", concurrency).Interface("device", transcriber["device"]).Msg("transcriber: whisper.cpp, " + why)
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

	tools := &media.Tools{GPU: caps, Limits: f.limits, TempDir: work.Path}
	err = tasks.RegisterMedia(mux, tasks.MediaConfig{
		Tools:             tools,
		Transcriber:       tr,
		TranscriberReason: reason,
		NoTranscriber:     policy,
		TranscribeStreams: streams,
		ForwardQueue:      forwardQueue,
		AllowPrivateURLs:  f.allowPrivate,
		MaxDownloadSize:   int64(f.maxDownload),
		APIKey:            os.Getenv("MORAG_API_KEY"),
		GatewayURL:        os.Getenv("MAIN_SERVER_URL"),
		TempDir:           work.Path,
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
		if err := work.Close(); err != nil {
			log.Warn().Err(err).Str("dir", work.Path).Msg("removing the worker's temporary folder")
		}
		if tr != nil {
			if err := tr.Close(); err != nil {
				log.Warn().Err(err).Msg("closing the transcriber")
			}
		}
	}
	started = true
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

// parseDevices parses -whisper-gpus ("0,1").
func parseDevices(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-whisper-gpus: %q is not a list of CUDA device numbers like 0,1", s)
		}
		out = append(out, n)
	}
	return out, nil
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
