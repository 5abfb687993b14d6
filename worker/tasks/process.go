package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"morag-gpu/media"
	"morag-gpu/media/morag"
	"morag-gpu/media/transcribe"
)

// kind is what a task's input is, as far as this worker is concerned; the
// gateway classifies the same way (media.Kind) when it routes.
type kind = media.Kind

const (
	kindUnknown = media.KindUnknown // find out by probing the file
	kindAudio   = media.KindAudio
	kindVideo   = media.KindVideo
	kindOther   = media.KindOther // documents, images, web pages: a Python worker's job
)

var (
	kindFromContentType = media.KindFromContentType
	kindFromName        = media.KindFromName
	kindFromURL         = media.KindFromURL
)

// taskOptions are the task_options (or options) keys this worker uses.
type taskOptions struct {
	IncludeThumbnails bool
	ExtractKeyframes  bool
	VideoQuality      string // "720p": make a proxy transcode
	Language          string // "" or "auto": detect
}

func parseOptions(m map[string]any) (taskOptions, error) {
	var o taskOptions
	var err error
	if o.IncludeThumbnails, err = boolOption(m, "include_thumbnails"); err != nil {
		return o, err
	}
	if o.ExtractKeyframes, err = boolOption(m, "extract_keyframes"); err != nil {
		return o, err
	}
	if o.VideoQuality, err = stringOption(m, "video_quality"); err != nil {
		return o, err
	}
	if o.Language, err = stringOption(m, "language"); err != nil {
		return o, err
	}
	return o, nil
}

func boolOption(m map[string]any, key string) (bool, error) {
	switch v := m[key].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1", "yes", "on":
			return true, nil
		case "false", "0", "no", "off", "":
			return false, nil
		}
	case json.Number:
		f, err := v.Float64()
		return f != 0, err
	case float64:
		return v != 0, nil
	}
	return false, fmt.Errorf("task option %s must be true or false, got %v", key, m[key])
}

func stringOption(m map[string]any, key string) (string, error) {
	switch v := m[key].(type) {
	case nil:
		return "", nil
	case string:
		return strings.TrimSpace(v), nil
	}
	return "", fmt.Errorf("task option %s must be a string, got %v", key, m[key])
}

// processor turns an audio or video file into MoRAG's result.
type processor struct {
	tools *media.Tools
	tr    transcribe.Transcriber // nil: this worker cannot transcribe
	// gate admits the transcriptions that may run at once, across all the
	// worker's tasks (-transcribe-streams); nil leaves it to tr's slots.
	// A task holds it only while it transcribes, so its download, probe,
	// frames and proxy never hold transcription capacity.
	gate *transcribe.Gate
	// window is the PCM transcribed at a time (transcribe.DefaultWindow).
	window time.Duration
}

// job is one file to process.
type job struct {
	Path     string
	Name     string // the original file name, for titles and metadata
	Size     int64
	Options  taskOptions
	Progress func(fraction float64, message string) // fraction of the processing, 0..1
	// ProxyDir receives the proxy transcode, when one is asked for.
	ProxyDir string
}

// plan is what the probe decided.
type plan struct {
	Info *media.Info
	Kind kind // kindAudio or kindVideo
	// Forward, when not empty, is why the file is not audio or video and
	// belongs to a Python worker.
	Forward string
	// NeedsTranscript says whether the pipeline transcribes: audio always,
	// video when it has an audio stream.
	NeedsTranscript bool
}

// decide probes the file and picks the pipeline. hint comes from the
// content type or the file name; kindUnknown lets the probe decide.
func (p *processor) decide(ctx context.Context, file string, hint kind) (*plan, error) {
	info, err := p.tools.Probe(ctx, file)
	if err != nil {
		if hint == kindUnknown && (errors.Is(err, media.ErrCorrupt) || errors.Is(err, media.ErrNoStreams)) {
			return &plan{Forward: "the file is not audio or video (ffprobe cannot read it as media)"}, nil
		}
		// A refused format is not opened, and fails the task, unless it
		// is an image of unknown kind: MoRAG's Python workers take those.
		var fe *media.FormatError
		if hint == kindUnknown && errors.As(err, &fe) && (fe.Format == "" || media.IsImageFormat(fe.Format)) {
			return &plan{Forward: fmt.Sprintf("the file is not audio or video (detected %q)", fe.Format)}, nil
		}
		return nil, err
	}
	pl := &plan{Info: info}
	switch {
	case hint == kindUnknown && media.IsImageFormat(info.Format):
		pl.Forward = fmt.Sprintf("the file is an image (%s), not audio or video", info.Format)
		return pl, nil
	case hint == kindAudio:
		if !info.HasAudio() {
			return nil, &media.Error{Op: "process audio", Path: file, Kind: media.ErrNoAudio}
		}
		pl.Kind = kindAudio
	case info.HasVideo():
		pl.Kind = kindVideo
	case info.HasAudio():
		// Sent as video but holds only sound (an audio-only .webm, say):
		// what MoRAG's audio pipeline makes of it is what the client wants.
		pl.Kind = kindAudio
	case hint == kindUnknown:
		pl.Forward = "the file has neither an audio nor a video stream"
		return pl, nil
	default:
		return nil, &media.Error{Op: "process video", Path: file, Kind: media.ErrNoStreams}
	}
	pl.NeedsTranscript = pl.Kind == kindAudio || info.HasAudio()
	return pl, nil
}

// output is a processed file: MoRAG's content and metadata, plus what this
// worker adds.
type output struct {
	Content    string
	Metadata   map[string]any
	Thumbnails []string // data URLs, when asked for
	Keyframes  []string // data URLs, when asked for
	// ProxyFile is the proxy transcode's path, when one was made; the
	// caller uploads it. ProxyPath says how it was made.
	ProxyFile string
	ProxyPath media.Path
	ProxyErr  error
	// Timings is seconds per stage: where a slow task spent its time, for
	// operators and make bench. The task adds download and probe and
	// writes it as metadata "timings".
	Timings map[string]float64
}

// run processes the file as pl says. The transcriber must be present when
// pl.NeedsTranscript.
func (p *processor) run(ctx context.Context, j job, pl *plan) (*output, error) {
	started := time.Now()
	report := j.Progress
	if report == nil {
		report = func(float64, string) {}
	}
	timings := map[string]float64{}
	var (
		tr *transcribe.Transcript
		fr *frameSet
	)
	wantFrames := pl.Kind == kindVideo && (j.Options.IncludeThumbnails || j.Options.ExtractKeyframes)
	if pl.NeedsTranscript {
		if p.tr == nil {
			return nil, errors.New("no transcriber") // callers check first; this is a backstop
		}
		var frames <-chan frameResult
		if wantFrames {
			// Thumbnails and keyframes read the same local file and need
			// no transcriber: they run while this task waits for, and
			// holds, a transcription stream. Each ffmpeg child is bounded
			// by the media limits, so one more at a time is safe. The
			// goroutine belongs to this call: fctx ends it on any return,
			// and every path below waits for it.
			fctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch := make(chan frameResult, 1)
			frames = ch
			go func() {
				fs, err := p.frames(fctx, j, nil)
				ch <- frameResult{fs, err}
			}()
			defer func() {
				if frames != nil { // not collected: a failed transcription
					cancel()
					<-frames
				}
			}()
		}
		var err error
		if tr, err = p.transcribe(ctx, j, pl, report, timings); err != nil {
			return nil, err
		}
		if frames != nil {
			r := <-frames
			frames = nil
			if r.err != nil {
				return nil, r.err
			}
			fr = r.set
		}
	}
	if pl.Kind == kindAudio {
		report(0.95, "formatting")
		meta := morag.AudioMetadata(morag.AudioInput{
			FileName: j.Name, FileSize: j.Size, Info: pl.Info, Transcript: tr, ProcessingTime: time.Since(started),
		})
		meta["decode"] = media.PathCPU // audio codecs have no GPU decoder
		content := morag.AudioMarkdown(j.Name, tr, meta)
		if content == "" {
			meta["warning"] = "no speech was found: the transcript is empty"
		}
		return &output{Content: content, Metadata: meta, Timings: timings}, nil
	}
	if wantFrames && fr == nil { // nothing to transcribe: the frames come now
		var err error
		if fr, err = p.frames(ctx, j, report); err != nil {
			return nil, err
		}
	}
	if fr != nil {
		for k, v := range fr.timings {
			timings[k] += v
		}
	}
	return p.video(ctx, j, pl, tr, fr, started, report, timings)
}

// transcribe waits for a transcription stream, then decodes and
// transcribes the audio, filling timings' wait_transcriber, transcribe and
// decode_audio.
func (p *processor) transcribe(ctx context.Context, j job, pl *plan, report func(float64, string), timings map[string]float64) (*transcribe.Transcript, error) {
	if !p.gate.TryAcquire() {
		// Every stream is busy with other tasks: say so rather than sit
		// at "transcribing 0 %".
		report(0, "waiting for a transcriber")
		t0 := time.Now()
		err := p.gate.Acquire(ctx)
		timings["wait_transcriber"] = time.Since(t0).Seconds()
		if err != nil {
			return nil, fmt.Errorf("transcribe %s: waiting for a transcriber: %w", j.Name, err)
		}
	}
	defer p.gate.Release()
	// Transcription is most of the work: the first 80 %.
	report(0, "transcribing")
	// Decoding and transcribing are one stream: the time spent in fn
	// (the transcriber's, per window) is transcription, the rest of
	// the stream is ffmpeg decoding audio.
	var inModel time.Duration
	src := func(ctx context.Context, window time.Duration, fn func(time.Duration, []float32) error) error {
		return p.tools.StreamPCM(ctx, j.Path, window, func(off time.Duration, pcm []float32) error {
			t0 := time.Now()
			defer func() { inModel += time.Since(t0) }()
			return fn(off, pcm)
		})
	}
	t0 := time.Now()
	tr, err := transcribe.Stream(ctx, p.tr, src, p.window, pl.Info.Duration,
		transcribe.Options{Language: j.Options.Language},
		func(f float64) { report(0.8*f, "transcribing") })
	if err != nil {
		return nil, fmt.Errorf("transcribe %s: %w", j.Name, err)
	}
	timings["transcribe"] = inModel.Seconds()
	timings["decode_audio"] = (time.Since(t0) - inModel).Seconds()
	return tr, nil
}

// timed runs fn and adds its wall time to timings[stage].
func timed(timings map[string]float64, stage string, fn func()) {
	t0 := time.Now()
	fn()
	timings[stage] += time.Since(t0).Seconds()
}

// frameSet is a video's thumbnails and keyframes, as asked for.
type frameSet struct {
	thumbs, keys []media.Frame
	thumbPath    media.Path
	keyPath      media.Path
	timings      map[string]float64 // its own map: it may be filled concurrently with the transcription's
}

type frameResult struct {
	set *frameSet
	err error
}

// frames extracts the thumbnails and keyframes j asks for. report, when
// not nil, receives the stage; it is nil when the frames are made during
// the transcription, whose progress is the one reported then.
func (p *processor) frames(ctx context.Context, j job, report func(float64, string)) (*frameSet, error) {
	fs := &frameSet{timings: map[string]float64{}}
	var err error
	if j.Options.IncludeThumbnails {
		if report != nil {
			report(0.82, "thumbnails")
		}
		timed(fs.timings, "thumbnails", func() { fs.thumbs, fs.thumbPath, err = p.tools.Thumbnails(ctx, j.Path, media.FrameOptions{}) })
		if err != nil {
			return nil, fmt.Errorf("thumbnails of %s: %w", j.Name, err)
		}
	}
	if j.Options.ExtractKeyframes {
		if report != nil {
			report(0.86, "keyframes")
		}
		timed(fs.timings, "keyframes", func() { fs.keys, fs.keyPath, err = p.tools.Keyframes(ctx, j.Path, media.FrameOptions{}) })
		if err != nil {
			return nil, fmt.Errorf("keyframes of %s: %w", j.Name, err)
		}
	}
	return fs, nil
}

func (p *processor) video(ctx context.Context, j job, pl *plan, tr *transcribe.Transcript, fr *frameSet, started time.Time, report func(float64, string), timings map[string]float64) (*output, error) {
	out := &output{}
	meta := morag.VideoMetadata(pl.Info)
	// Audio extraction never decodes video, so without frames or a proxy
	// the video decode path is the CPU's (nothing decoded).
	used := media.Path{Decode: media.PathCPU}
	var thumbs, keys []morag.Image
	if j.Options.IncludeThumbnails {
		used = fr.thumbPath
		for i, f := range fr.thumbs {
			out.Thumbnails = append(out.Thumbnails, f.DataURL())
			thumbs = append(thumbs, morag.Image{Ref: fmt.Sprintf("thumbnail_%d.jpg", i+1), Time: f.Time})
		}
	}
	if j.Options.ExtractKeyframes {
		if !j.Options.IncludeThumbnails {
			used = fr.keyPath
		}
		for i, f := range fr.keys {
			out.Keyframes = append(out.Keyframes, f.DataURL())
			keys = append(keys, morag.Image{Ref: fmt.Sprintf("keyframe_%d.jpg", i+1), Time: f.Time})
		}
	}
	if q := j.Options.VideoQuality; q != "" {
		report(0.9, "transcoding a "+q+" proxy")
		timed(timings, "proxy", func() { out.ProxyFile, out.ProxyPath, out.ProxyErr = p.proxy(ctx, j, q) })
		if out.ProxyErr == nil {
			used.Encode = out.ProxyPath.Encode
			if !j.Options.IncludeThumbnails && !j.Options.ExtractKeyframes {
				used.Decode, used.Fallback = out.ProxyPath.Decode, out.ProxyPath.Fallback
			}
		} else if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
	}
	report(0.97, "formatting")
	meta["decode"] = used.Decode
	if used.Encode != "" {
		meta["encode"] = used.Encode
	}
	if used.Fallback != "" {
		meta["gpu_fallback"] = used.Fallback
	}
	// The keys MoRAG's JSON-mode video content adds to its metadata.
	meta["thumbnails_count"] = len(out.Thumbnails)
	meta["keyframes_count"] = len(out.Keyframes)
	meta["filename"] = j.Name
	meta["file_size"] = j.Size
	if tr != nil {
		meta["transcript_length"] = len(tr.Text())
		meta["segments_count"] = len(tr.Segments)
		meta["word_count"] = tr.WordCount()
		meta["has_speaker_diarization"] = false
		meta["has_topic_segmentation"] = false
		if tr.Language != "" {
			meta["language"] = tr.Language
		}
		if len(tr.Segments) == 0 {
			meta["warning"] = "no speech was found in the audio track: the transcript is empty"
		}
	}
	meta["processing_time"] = time.Since(started).Seconds()
	out.Timings = timings
	out.Metadata = meta
	out.Content = morag.VideoMarkdown(morag.VideoInput{Info: pl.Info, Transcript: tr, Thumbnails: thumbs, Keyframes: keys})
	return out, nil
}

// proxy transcodes the video to the quality asked for, into j.ProxyDir.
func (p *processor) proxy(ctx context.Context, j job, quality string) (string, media.Path, error) {
	h, err := media.ParseQuality(quality)
	if err != nil {
		return "", media.Path{}, err
	}
	dst := filepath.Join(j.ProxyDir, "proxy_"+strconv.Itoa(h)+"p.mp4")
	used, err := p.tools.Transcode(ctx, j.Path, dst, media.TranscodeOptions{Height: h})
	if err != nil {
		os.Remove(dst)
		return "", used, err
	}
	return dst, used, nil
}
