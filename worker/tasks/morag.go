package tasks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"morag-gpu/contract"
	"morag-gpu/fleet"
	"morag-gpu/media"
	"morag-gpu/media/transcribe"
	"morag-gpu/protocol"
	"morag-gpu/worker/runner"
)

// MoRAG's media tasks, served here (names and signatures in package
// contract, which the gateway sends by).
const (
	ProcessFileRemote = contract.ProcessFileRemoteTask
	ProcessURLRemote  = contract.ProcessURLRemoteTask
	ProcessFile       = contract.ProcessFileTask
)

// pythonTasks are MoRAG tasks whose work (documents, web pages, YouTube,
// search, ingestion into the vector store) only a Python MoRAG worker can
// do; the Go worker forwards them unchanged.
func pythonTasks() []string {
	return []string{
		contract.ProcessURLTask,
		contract.ProcessWebPageTask,
		contract.ProcessYouTubeTask,
		contract.ProcessBatchTask,
		contract.SearchTask,
		contract.ProcessWebPageRemoteTask,
		contract.ProcessYouTubeRemoteTask,
		contract.IngestFileTask,
		contract.IngestURLTask,
		contract.IngestBatchTask,
	}
}

// NoTranscriber is what happens to audio and video that need a transcript
// on a worker without a transcriber.
type NoTranscriber string

const (
	// NoTranscriberForward hands the task, unchanged, to the forward queue,
	// where a Python MoRAG worker transcribes it.
	NoTranscriberForward NoTranscriber = "forward"
	// NoTranscriberFail fails the task with an error saying why.
	NoTranscriberFail NoTranscriber = "fail"
)

// ParseNoTranscriber parses the -no-transcriber flag ("" is forward).
func ParseNoTranscriber(s string) (NoTranscriber, error) {
	switch p := NoTranscriber(strings.ToLower(strings.TrimSpace(s))); p {
	case "":
		return NoTranscriberForward, nil
	case NoTranscriberForward, NoTranscriberFail:
		return p, nil
	}
	return "", fmt.Errorf("-no-transcriber %q: use forward or fail", s)
}

// MediaConfig configures the MoRAG media tasks.
type MediaConfig struct {
	// Tools runs ffmpeg, with the GPU capabilities Detect found. Nil means
	// the zero Tools: ffmpeg from PATH, CPU only.
	Tools *media.Tools
	// Transcriber is nil when this worker cannot transcribe; then
	// TranscriberReason says why and NoTranscriber what to do.
	Transcriber       transcribe.Transcriber
	TranscriberReason string
	NoTranscriber     NoTranscriber
	// TranscribeStreams is how many of this worker's tasks may transcribe
	// at once (-transcribe-streams), whatever the runner's concurrency: a
	// task takes a stream only for its transcription, and reports
	// "waiting for a transcriber" while none is free. 0 sets no limit of
	// its own (the transcriber's slots are then the limit).
	TranscribeStreams int
	// ForwardQueue receives tasks a Python worker must do (the worker's
	// -forward-unknown). Empty: such tasks fail, saying so.
	ForwardQueue string
	// AllowPrivateURLs lets process_url_task_remote fetch loopback, private
	// and link-local addresses.
	AllowPrivateURLs bool
	// MaxDownloadSize bounds every download, in bytes; 0 means no limit.
	MaxDownloadSize int64
	// APIKey (MORAG_API_KEY) is sent as a Bearer token when downloading a
	// file_url from the gateway and when uploading results to it; never to
	// the third-party hosts of process_url_task_remote.
	APIKey string
	// GatewayURL is where results are uploaded when the task does not tell
	// (a file_url's origin does); MoRAG's MAIN_SERVER_URL. Optional.
	GatewayURL string
	// TempDir holds the tasks' temporary directories (the worker's own
	// WorkDir); "" means os.TempDir().
	TempDir string
	// Logger receives the tasks' logs; each line carries task_id, task,
	// queue and worker. The zero value discards them.
	Logger zerolog.Logger
}

// mediaTasks serves the MoRAG media tasks.
type mediaTasks struct {
	cfg    MediaConfig
	proc   *processor
	files  *downloader // file_url from the gateway: any address, with the API key
	urls   *downloader // third-party URLs: public addresses only, unless allowed
	upload *http.Client
	log    zerolog.Logger
}

// RegisterMedia adds MoRAG's audio/video tasks (process_file_task_remote,
// process_url_task_remote, process_file_task) and forwarders for MoRAG's
// other tasks to mux.
func RegisterMedia(mux *runner.Mux, cfg MediaConfig) error {
	m, err := newMediaTasks(cfg)
	if err != nil {
		return err
	}
	mux.HandleFunc(ProcessFileRemote, m.processFileRemote)
	mux.HandleFunc(ProcessURLRemote, m.processURLRemote)
	mux.HandleFunc(ProcessFile, m.processFile)
	for _, name := range pythonTasks() {
		mux.HandleFunc(name, m.forwardTask)
	}
	return nil
}

func newMediaTasks(cfg MediaConfig) (*mediaTasks, error) {
	if cfg.Tools == nil {
		cfg.Tools = &media.Tools{}
	}
	if cfg.TempDir != "" && cfg.Tools.TempDir == "" {
		tools := *cfg.Tools
		tools.TempDir = cfg.TempDir
		cfg.Tools = &tools
	}
	if cfg.NoTranscriber == "" {
		cfg.NoTranscriber = NoTranscriberForward
	}
	if _, err := ParseNoTranscriber(string(cfg.NoTranscriber)); err != nil {
		return nil, err
	}
	if cfg.MaxDownloadSize < 0 {
		return nil, fmt.Errorf("tasks: MaxDownloadSize %d is negative; use 0 for no limit", cfg.MaxDownloadSize)
	}
	if cfg.GatewayURL != "" {
		if _, err := gatewayOrigin(cfg.GatewayURL); err != nil {
			return nil, fmt.Errorf("tasks: gateway URL: %w", err)
		}
	}
	if cfg.TranscribeStreams < 0 {
		return nil, fmt.Errorf("tasks: TranscribeStreams %d is negative; use 0 for the transcriber's own limit", cfg.TranscribeStreams)
	}
	var gate *transcribe.Gate
	if cfg.TranscribeStreams > 0 {
		gate = transcribe.NewGate(cfg.TranscribeStreams)
	}
	if cfg.Transcriber == nil && cfg.TranscriberReason == "" {
		cfg.TranscriberReason = "no transcriber configured"
	}
	return &mediaTasks{
		cfg:    cfg,
		proc:   &processor{tools: cfg.Tools, tr: cfg.Transcriber, gate: gate, window: transcribe.DefaultWindow},
		files:  newDownloader(false, cfg.MaxDownloadSize),
		urls:   newDownloader(!cfg.AllowPrivateURLs, cfg.MaxDownloadSize),
		upload: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
		log:    cfg.Logger,
	}, nil
}

// taskLog is the logger for one task.
func (m *mediaTasks) taskLog(t *runner.Task) zerolog.Logger {
	return m.log.With().Str("task_id", t.ID).Str("task", t.Name).Str("queue", t.Queue).Str("worker", t.Hostname).Logger()
}

// processFileRemote is morag.worker.process_file_task_remote(file_url,
// user_id, content_type=None, task_options=None): download the file from
// the gateway, process it, return MoRAG's result with user_id.
func (m *mediaTasks) processFileRemote(ctx context.Context, t *runner.Task) (any, error) {
	started := time.Now()
	log := m.taskLog(t)
	fileURL, userID, contentType, opts, err := remoteArgs(t, "file_url")
	if err != nil {
		return nil, err
	}
	gateway, err := gatewayOrigin(fileURL)
	if err != nil {
		return nil, fmt.Errorf("%s: file_url: %w", t.Name, err)
	}
	hint, dir, st, done, err := m.startDownload(ctx, log, t, contentType, fileURL)
	if done || err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	dl, err := m.files.fetch(ctx, fetchRequest{URL: fileURL, Bearer: m.cfg.APIKey, Dir: dir, Progress: st.download})
	if err != nil {
		return nil, err
	}
	log.Info().Str("file", dl.Name).Int64("bytes", dl.Size).Bool("sha256_verified", dl.Verified).Int("resumes", dl.Resumes).Msg("downloaded the input")
	if hint == kindUnknown {
		hint = kindFromName(dl.Name)
	}
	res, err := m.process(ctx, t, log, st, input{
		Path: dl.Path, Name: dl.Name, Size: dl.Size, Hint: hint,
		Options: opts, Dir: dir, Gateway: gateway, UserID: userID, Started: started, Download: dl,
	})
	if err != nil {
		return nil, err
	}
	res["user_id"] = userID
	return res, nil
}

// startDownload is what both download tasks do before fetching: classify
// the input from its declared content type or URL (forwarding what this
// worker does not process: done), make the task's temporary directory (the
// caller removes it) and report DOWNLOADING.
func (m *mediaTasks) startDownload(ctx context.Context, log zerolog.Logger, t *runner.Task, contentType, rawURL string) (hint kind, dir string, st *states, done bool, err error) {
	hint = kindFromContentType(contentType)
	if hint == kindUnknown {
		hint = kindFromURL(rawURL)
	}
	if done, err = m.early(log, t, hint, contentType); done || err != nil {
		return hint, "", nil, true, err
	}
	if dir, err = os.MkdirTemp(m.cfg.TempDir, "morag-task-"); err != nil {
		return hint, "", nil, true, fmt.Errorf("%s: create a temporary directory: %w", t.Name, err)
	}
	st = newStates(ctx, t, log)
	st.set(stateDownloading, map[string]any{"stage": "downloading_file", "progress": 0.0})
	return hint, dir, st, false, nil
}

// remoteArgs reads the arguments every *_remote task shares:
// (<first>, user_id, content_type=None, task_options=None).
func remoteArgs(t *runner.Task, first string) (target, userID, contentType string, opts taskOptions, err error) {
	if target, err = stringArg(t, 0, first, true); err != nil {
		return
	}
	if userID, err = stringArg(t, 1, "user_id", true); err != nil {
		return
	}
	if contentType, err = stringArg(t, 2, "content_type", false); err != nil {
		return
	}
	raw, err := mapArg(t, 3, "task_options")
	if err != nil {
		return
	}
	if opts, err = parseOptions(raw); err != nil {
		err = fmt.Errorf("%s: %w", t.Name, err)
	}
	return
}

// processURLRemote is morag.worker.process_url_task_remote(url, user_id,
// content_type=None, task_options=None): a direct media URL. Web pages and
// YouTube go to a Python worker.
func (m *mediaTasks) processURLRemote(ctx context.Context, t *runner.Task) (any, error) {
	started := time.Now()
	log := m.taskLog(t)
	rawURL, userID, contentType, opts, err := remoteArgs(t, "url")
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: %q is not an http or https URL", t.Name, rawURL)
	}
	if isYouTube(u) {
		return m.forward(log, t, "YouTube URLs are fetched by a Python worker (yt-dlp)")
	}
	hint, dir, st, done, err := m.startDownload(ctx, log, t, contentType, rawURL)
	if done || err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// Decide from the response's Content-Type before its body is read: a
	// web page is not downloaded, it is forwarded.
	check := func(resp *http.Response) error {
		if hint != kindUnknown {
			return nil
		}
		if k := kindFromContentType(resp.Header.Get("Content-Type")); k == kindOther {
			return &notMedia{reason: fmt.Sprintf("the URL serves %s, not audio or video", resp.Header.Get("Content-Type"))}
		}
		return nil
	}
	dl, err := m.urls.fetch(ctx, fetchRequest{URL: rawURL, Dir: dir, Check: check, Progress: st.download})
	var nm *notMedia
	switch {
	case errors.As(err, &nm):
		return m.forward(log, t, nm.reason)
	case blockedAddress(err) != nil:
		return nil, fmt.Errorf("%s refused to fetch %s: %w", t.Name, redactURL(u), blockedAddress(err))
	case err != nil:
		return nil, err
	}
	log.Info().Str("file", dl.Name).Int64("bytes", dl.Size).Int("resumes", dl.Resumes).Msg("downloaded the input")
	if hint == kindUnknown {
		hint = kindFromName(dl.Name)
	}
	res, err := m.process(ctx, t, log, st, input{
		Path: dl.Path, Name: dl.Name, Size: dl.Size, Hint: hint,
		Options: opts, Dir: dir, Gateway: m.cfg.GatewayURL, UserID: userID, Started: started, Download: dl,
	})
	if err != nil {
		return nil, err
	}
	res["user_id"] = userID
	return res, nil
}

// processFile is morag.worker.process_file_task(file_path,
// content_type=None, options=None): a file on storage shared with the
// gateway.
func (m *mediaTasks) processFile(ctx context.Context, t *runner.Task) (any, error) {
	started := time.Now()
	log := m.taskLog(t)
	filePath, err := stringArg(t, 0, "file_path", true)
	if err != nil {
		return nil, err
	}
	contentType, err := stringArg(t, 1, "content_type", false)
	if err != nil {
		return nil, err
	}
	raw, err := mapArg(t, 2, "options")
	if err != nil {
		return nil, err
	}
	opts, err := parseOptions(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	hint := kindFromContentType(contentType)
	if hint == kindUnknown {
		hint = kindFromName(filePath)
	}
	if fwd, err := m.early(log, t, hint, contentType); fwd || err != nil {
		return nil, err
	}
	st, err := os.Stat(filePath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%s: %s does not exist on this worker: process_file_task needs storage shared with the gateway (or run the gateway with -file-transfer http)", t.Name, filePath)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s: %s is not a regular file", t.Name, filePath)
	}
	dir, err := os.MkdirTemp(m.cfg.TempDir, "morag-task-")
	if err != nil {
		return nil, fmt.Errorf("%s: create a temporary directory: %w", t.Name, err)
	}
	defer os.RemoveAll(dir)
	return m.process(ctx, t, log, newStates(ctx, t, log), input{
		Path: filePath, Name: filepath.Base(filePath), Size: st.Size(), Hint: hint,
		Options: opts, Dir: dir, Gateway: m.cfg.GatewayURL, Started: started,
	})
}

// forwardTask hands a MoRAG task this worker cannot do to a Python worker.
func (m *mediaTasks) forwardTask(_ context.Context, t *runner.Task) (any, error) {
	return m.forward(m.taskLog(t), t, "documents, web pages, YouTube, search and ingestion are done by a Python MoRAG worker")
}

// early forwards (or fails) what can be decided before any download: a
// content type that is not audio or video, and audio on a worker that
// cannot transcribe. It reports whether the task was handed on, or the
// error ending it.
func (m *mediaTasks) early(log zerolog.Logger, t *runner.Task, hint kind, contentType string) (bool, error) {
	switch {
	case hint == kindOther:
		reason := fmt.Sprintf("content type %q is not audio or video", contentType)
		if contentType == "" {
			reason = "the file name says it is not audio or video"
		}
		_, err := m.forward(log, t, reason)
		return true, err
	case hint == kindAudio && m.cfg.Transcriber == nil:
		_, err := m.noTranscriber(log, t, "audio")
		return true, err
	}
	return false, nil
}

// forward hands the task to a Python worker on the forward queue, or
// returns an error saying there is none.
func (m *mediaTasks) forward(log zerolog.Logger, t *runner.Task, reason string) (any, error) {
	return m.forwardOr(log, t, reason, fmt.Sprintf("start a Python MoRAG worker on it (celery -A morag.worker worker --queues=%s)", m.cfg.ForwardQueue), pythonWorker)
}

// pythonWorker accepts the consumers that can do MoRAG's Python work: a Go
// worker there would only hand the task back.
func pythonWorker(w fleet.Worker) (bool, string) {
	if w.Implementation == "go" {
		return false, "a Go worker, which hands documents, web pages, YouTube, search and ingestion to Python"
	}
	return true, ""
}

// forwardOr returns a runner.ForwardError to the forward queue, with what
// to start should no live worker there be able to take it (remedy, and
// accept: nil for any), or an error saying there is no forward queue.
func (m *mediaTasks) forwardOr(log zerolog.Logger, t *runner.Task, reason, remedy string, accept func(fleet.Worker) (bool, string)) (any, error) {
	q := m.cfg.ForwardQueue
	if q == "" {
		return nil, fmt.Errorf("%s: %s, and this worker has no queue to forward it to (start it with -forward-unknown celery)", t.Name, reason)
	}
	log.Info().Str("to_queue", q).Str("reason", reason).Msg("handing the task to a Python worker")
	return nil, &runner.ForwardError{Queue: q, Reason: reason, Remedy: remedy, Accept: acceptFleet(accept)}
}

// noTranscriber applies the -no-transcriber policy to a task that needs a
// transcript. It never returns an empty transcript.
func (m *mediaTasks) noTranscriber(log zerolog.Logger, t *runner.Task, what string) (any, error) {
	if m.cfg.NoTranscriber == NoTranscriberFail {
		log.Warn().Str("reason", m.cfg.TranscriberReason).Msg("failing the task: it needs a transcript and this worker has no transcriber")
		return nil, fmt.Errorf("%s: the %s needs a transcript and this worker has no transcriber (%s); build it with `make worker-whisper` and pass -whisper-model, or start it with -no-transcriber forward to hand such tasks to a Python worker",
			t.Name, what, m.cfg.TranscriberReason)
	}
	return m.forwardOr(log, t, fmt.Sprintf("the %s needs a transcript and this worker has no transcriber (%s)", what, m.cfg.TranscriberReason),
		fmt.Sprintf("start a worker with whisper (make worker-whisper, -whisper-model) on %q, or a Python MoRAG worker on %q (celery -A morag.worker worker --queues=%s)",
			t.Queue, m.cfg.ForwardQueue, m.cfg.ForwardQueue),
		fleet.Worker.CanTranscribe) // another Go worker without whisper would only hand it back
}

// notMedia is a download's Check deciding the URL is not audio or video.
type notMedia struct{ reason string }

func (e *notMedia) Error() string { return e.reason }

// input is a file ready for processing.
type input struct {
	Path, Name string
	Size       int64
	Hint       kind
	Options    taskOptions
	Dir        string // the task's temporary directory
	Gateway    string // origin for upload-result; "" when unknown
	UserID     string
	Started    time.Time
	Download   *fetched // nil for shared storage
}

// process probes, forwards or processes, and builds MoRAG's result.
func (m *mediaTasks) process(ctx context.Context, t *runner.Task, log zerolog.Logger, st *states, in input) (map[string]any, error) {
	if in.Hint == kindOther { // the downloaded file's name says so
		return nil, forwardErr(m.forward(log, t, fmt.Sprintf("%s is not audio or video", in.Name)))
	}
	st.set(stateProcessing, map[string]any{"stage": "processing"})
	downloaded := time.Since(in.Started) // the download, when there was one, came first
	probeStart := time.Now()
	pl, err := m.proc.decide(ctx, in.Path, in.Hint)
	probed := time.Since(probeStart)
	if err != nil {
		return nil, m.mediaFailure(log, t, in, err)
	}
	if pl.Forward != "" {
		return nil, forwardErr(m.forward(log, t, pl.Forward))
	}
	if pl.NeedsTranscript && m.cfg.Transcriber == nil {
		what := "audio"
		if pl.Kind == kindVideo {
			what = "video's audio track"
		}
		return nil, forwardErr(m.noTranscriber(log, t, what))
	}
	log.Info().Str("file", in.Name).Str("kind", pl.Kind.String()).Float64("duration_s", pl.Info.Duration.Seconds()).
		Bool("transcribe", pl.NeedsTranscript).Msg("processing")

	out, err := m.proc.run(ctx, job{
		Path: in.Path, Name: in.Name, Size: in.Size, Options: in.Options, ProxyDir: in.Dir, Progress: st.progress,
	}, pl)
	if err != nil {
		return nil, m.mediaFailure(log, t, in, err)
	}
	meta := out.Metadata
	meta["content_type"] = pl.Kind.String()
	meta["processed_by"] = contract.WorkerSWIdent
	meta["worker"] = t.Hostname
	if dl := in.Download; dl != nil {
		meta["download"] = map[string]any{"bytes": dl.Size, "sha256": dl.SHA256, "sha256_verified": dl.Verified, "resumes": dl.Resumes}
		out.Timings["download"] = downloaded.Seconds()
	}
	out.Timings["probe"] = probed.Seconds()
	meta["timings"] = out.Timings
	if in.Options.VideoQuality != "" && pl.Kind == kindVideo {
		meta["proxy"] = m.deliverProxy(ctx, t, log, in, out)
	}
	result := map[string]any{
		"success":         true,
		"content":         out.Content,
		"metadata":        meta,
		"processing_time": time.Since(in.Started).Seconds(),
		"error_message":   nil,
	}
	if in.Options.IncludeThumbnails {
		result["thumbnails"] = nonNil(out.Thumbnails)
	}
	if in.Options.ExtractKeyframes {
		result["keyframes"] = nonNil(out.Keyframes)
	}
	st.progress(1, "done")
	log.Info().Str("kind", pl.Kind.String()).Str("decode", fmt.Sprint(meta["decode"])).
		Float64("processing_time", result["processing_time"].(float64)).Msg("processed")
	return result, nil
}

// mediaFailure logs a failed media step in full (paths, ffmpeg's output)
// and returns what the client sees: the task, the file's own name and
// media's public text, naming the limit or the format when that was it.
// The error chain underneath is kept for the runner (time limits,
// cancellation).
func (m *mediaTasks) mediaFailure(log zerolog.Logger, t *runner.Task, in input, err error) error {
	var me *media.Error
	if !errors.As(err, &me) {
		return fmt.Errorf("%s: %s: %w", t.Name, in.Name, err)
	}
	ev := log.Warn()
	if errors.Is(err, media.ErrLimit) || errors.Is(err, media.ErrFormat) {
		ev = log.Error() // hostile or oversized input: worth an operator's look
	}
	ev.Str("file", in.Name).Str("op", me.Op).Str("path", me.Path).Str("ffmpeg_stderr", me.Stderr).
		AnErr("cause", me.Err).Msg("media processing failed: " + me.Public())
	return media.PublicError(fmt.Sprintf("%s: %s: ", t.Name, in.Name), err)
}

// forwardErr keeps the error of a forward/fail decision (the value is
// always nil).
func forwardErr(_ any, err error) error { return err }

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// deliverProxy uploads the proxy transcode to the gateway and describes
// the outcome for the metadata. Nothing here fails the task: a client that
// asked for a proxy still gets its transcript.
func (m *mediaTasks) deliverProxy(ctx context.Context, t *runner.Task, log zerolog.Logger, in input, out *output) map[string]any {
	info := map[string]any{"video_quality": in.Options.VideoQuality}
	if out.ProxyErr != nil {
		log.Warn().Err(out.ProxyErr).Msg("proxy transcode failed; returning the result without it")
		// The client's view: the limit hit (e.g. the proxy's size cap),
		// never a worker path or ffmpeg's output.
		info["error"] = media.PublicError("", out.ProxyErr).Error()
		return info
	}
	info["decode"] = out.ProxyPath.Decode
	info["encode"] = out.ProxyPath.Encode
	if out.ProxyPath.Fallback != "" {
		info["gpu_fallback"] = out.ProxyPath.Fallback
	}
	if st, err := os.Stat(out.ProxyFile); err == nil {
		info["size"] = st.Size()
	}
	if in.Gateway == "" {
		info["uploaded"] = false
		info["error"] = "no gateway to upload the proxy to: the task has no file_url and the worker has no MAIN_SERVER_URL"
		return info
	}
	base := strings.TrimSuffix(filepath.Base(in.Name), filepath.Ext(in.Name))
	name := fmt.Sprintf("%s_%s.mp4", base, strings.ToLower(in.Options.VideoQuality))
	ref, err := m.uploadResult(ctx, in.Gateway, out.ProxyFile, name, map[string]any{
		"task_id":       t.ID,
		"user_id":       in.UserID,
		"kind":          "video_proxy",
		"filename":      name,
		"video_quality": in.Options.VideoQuality,
		"decode":        out.ProxyPath.Decode,
		"encode":        out.ProxyPath.Encode,
	})
	if err != nil {
		log.Warn().Err(err).Msg("could not upload the proxy transcode; returning the result without it")
		info["uploaded"] = false
		info["error"] = err.Error()
		return info
	}
	log.Info().Str("file", name).Msg("uploaded the proxy transcode")
	info["uploaded"] = true
	info["upload"] = ref
	return info
}

// gatewayOrigin is scheme://host of a URL.
func gatewayOrigin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an http or https URL", redactURL(u))
	}
	return u.Scheme + "://" + u.Host, nil
}

// isYouTube reports whether u is a YouTube page, which needs yt-dlp.
func isYouTube(u *url.URL) bool {
	h := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	return h == "youtu.be" || h == "youtube.com" || strings.HasSuffix(h, ".youtube.com") ||
		h == "youtube-nocookie.com" || strings.HasSuffix(h, ".youtube-nocookie.com")
}

// stringArg reads positional argument i or keyword name as a string; a
// missing or null optional argument is "".
func stringArg(t *runner.Task, i int, name string, required bool) (string, error) {
	v, ok := argAt(t, i, name)
	if !ok || v == nil {
		if required {
			return "", runner.MissingArguments(pyFunc(t.Name), name)
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", runner.TypeError("%s: argument %s must be a string, got %v", t.Name, name, v)
	}
	if required && strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%s: argument %s is empty", t.Name, name)
	}
	return s, nil
}

// pyFunc is the Python function name behind a task name
// ("morag.worker.process_file_task" -> "process_file_task"), as Python's
// TypeError names it.
func pyFunc(task string) string {
	if i := strings.LastIndex(task, "."); i >= 0 {
		return task[i+1:]
	}
	return task
}

// mapArg reads positional argument i or keyword name as a dict; a missing
// or null argument is nil.
func mapArg(t *runner.Task, i int, name string) (map[string]any, error) {
	v, ok := argAt(t, i, name)
	if !ok || v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, runner.TypeError("%s: argument %s must be a dict, got %v", t.Name, name, v)
	}
	return m, nil
}

// Custom states MoRAG's tasks store.
const (
	stateDownloading protocol.State = "DOWNLOADING"
	stateProcessing  protocol.State = "PROCESSING"
)

// states stores a task's intermediate states, throttled so that a fast
// download or transcription does not write Redis thousands of times. A
// failed store is logged, never fatal: the task matters more than its
// progress bar.
type states struct {
	ctx context.Context
	t   *runner.Task
	log zerolog.Logger

	mu       sync.Mutex
	lastFrac float64
	lastMsg  string
	lastAt   time.Time
	warned   bool
}

func newStates(ctx context.Context, t *runner.Task, log zerolog.Logger) *states {
	return &states{ctx: ctx, t: t, log: log, lastFrac: -1}
}

// due reports whether a report at fraction f with message msg is due.
func (s *states) due(f float64, msg string) bool {
	now := time.Now()
	if f < 1 && msg == s.lastMsg && (f-s.lastFrac < 0.01 || now.Sub(s.lastAt) < 500*time.Millisecond) {
		return false
	}
	s.lastFrac, s.lastMsg, s.lastAt = f, msg, now
	return true
}

func (s *states) set(state protocol.State, meta map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastFrac, s.lastMsg = -1, ""
	s.store(func(ctx context.Context) error { return s.t.SetState(ctx, state, meta) })
}

func (s *states) store(fn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	if err := fn(ctx); err != nil && !s.warned {
		s.warned = true
		s.log.Warn().Err(err).Msg("could not store the task's progress; carrying on without it")
	}
}

// download is the downloader's Progress callback.
func (s *states) download(done, total int64) {
	if total <= 0 {
		return
	}
	f := float64(done) / float64(total)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.due(f, "downloading") {
		return
	}
	s.store(func(ctx context.Context) error {
		return s.t.SetState(ctx, stateDownloading, map[string]any{"stage": "downloading_file", "progress": f})
	})
}

// progress stores PROGRESS {progress, message}; it is called from the
// transcriber's goroutine too.
func (s *states) progress(f float64, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.due(f, msg) {
		return
	}
	s.store(func(ctx context.Context) error { return s.t.Progress(ctx, f, msg) })
}
