package transcribe

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// ModelSpec is a published ggml whisper model: its name and the SHA-1 of
// ggml-<name>.bin, from whisper.cpp's models/README.md.
type ModelSpec struct {
	Name string
	SHA1 string
	// BaseURL is where ggml-<name>.bin is published when not under the
	// default (tinydiarize lives in another repository).
	BaseURL string
}

// DefaultModelURL is where whisper.cpp publishes its ggml models.
const DefaultModelURL = "https://huggingface.co/ggerganov/whisper.cpp/resolve/main"

const tdrzModelURL = "https://huggingface.co/akashmjn/tinydiarize-whisper.cpp/resolve/main"

// ModelURLEnv overrides where models are downloaded from (a mirror with
// every ggml-<name>.bin at its root).
const ModelURLEnv = "WHISPER_MODEL_URL"

// DefaultModel is the model `make run` fetches: small, fast on a CPU, and
// English as MoRAG's defaults are.
const DefaultModel = "base.en"

// PublishedModels returns whisper.cpp's model table (models/README.md at
// the pinned commit), smallest first.
func PublishedModels() []ModelSpec {
	return []ModelSpec{
		{Name: "tiny", SHA1: "bd577a113a864445d4c299885e0cb97d4ba92b5f"},
		{Name: "tiny.en", SHA1: "c78c86eb1a8faa21b369bcd33207cc90d64ae9df"},
		{Name: "base", SHA1: "465707469ff3a37a2b9b8d8f89f2f99de7299dac"},
		{Name: "base.en", SHA1: "137c40403d78fd54d454da0f9bd998f78703390c"},
		{Name: "small", SHA1: "55356645c2b361a969dfd0ef2c5a50d530afd8d5"},
		{Name: "small.en", SHA1: "db8a495a91d927739e50b3fc1cc4c6b8f6c2d022"},
		{Name: "small.en-tdrz", SHA1: "b6c6e7e89af1a35c08e6de56b66ca6a02a2fdfa1", BaseURL: tdrzModelURL},
		{Name: "medium", SHA1: "fd9727b6e1217c2f614f9b698455c4ffd82463b4"},
		{Name: "medium.en", SHA1: "8c30f0e44ce9560643ebd10bbe50cd20eafd3723"},
		{Name: "large-v1", SHA1: "b1caaf735c4cc1429223d5a74f0f4d0b9b59a299"},
		{Name: "large-v2", SHA1: "0f4c8e34f21cf1a914c59d8b3ce882345ad349d6"},
		{Name: "large-v2-q5_0", SHA1: "00e39f2196344e901b3a2bd5814807a769bd1630"},
		{Name: "large-v3", SHA1: "ad82bf6a9043ceed055076d0fd39f5f186ff8062"},
		{Name: "large-v3-q5_0", SHA1: "e6e2ed78495d403bef4b7cff42ef4aaadcfea8de"},
		{Name: "large-v3-turbo", SHA1: "4af2b29d7ec73d781377bfd1758ca957a807e941"},
		{Name: "large-v3-turbo-q5_0", SHA1: "e050f7970618a659205450ad97eb95a18d69c9ee"},
	}
}

// DefaultModelDir is $XDG_CACHE_HOME/morag-gpu/models, or
// ~/.cache/morag-gpu/models.
func DefaultModelDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "morag-gpu", "models")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "morag-gpu", "models")
	}
	return filepath.Join(os.TempDir(), "morag-gpu-models")
}

// ModelStore finds models by path or published name, downloading a named
// model once into Dir: resumed where a previous download stopped, checked
// against its SHA-1, renamed into place only when complete, and locked so
// that two workers fetching the same model download it once.
type ModelStore struct {
	Dir     string      // "" is DefaultModelDir()
	BaseURL string      // "" is $WHISPER_MODEL_URL, else where each model is published
	Models  []ModelSpec // nil is PublishedModels()
	Client  *http.Client
	Log     zerolog.Logger
	// StallTimeout aborts a download that receives nothing for this long;
	// 0 is one minute.
	StallTimeout time.Duration
}

// Spec returns the published model called name ("base.en", or
// "ggml-base.en.bin").
func (s ModelStore) Spec(name string) (ModelSpec, bool) {
	name = strings.TrimSuffix(strings.TrimPrefix(name, "ggml-"), ".bin")
	models := s.Models
	if models == nil {
		models = PublishedModels()
	}
	for _, m := range models {
		if m.Name == name {
			return m, true
		}
	}
	return ModelSpec{}, false
}

func (s ModelStore) names() string {
	models := s.Models
	if models == nil {
		models = PublishedModels()
	}
	var names []string
	for _, m := range models {
		names = append(names, m.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Resolve turns a -whisper-model value into a model file: an existing file
// is used as it is; a published name is looked up in Dir and downloaded
// there when missing.
func (s ModelStore) Resolve(ctx context.Context, nameOrPath string) (string, error) {
	if st, err := os.Stat(nameOrPath); err == nil {
		if st.IsDir() {
			return "", fmt.Errorf("transcribe: whisper model %s is a directory, want a ggml .bin file", nameOrPath)
		}
		return nameOrPath, nil
	}
	spec, ok := s.Spec(nameOrPath)
	if !ok {
		return "", fmt.Errorf("transcribe: whisper model %q is neither a file nor a published model name (%s)", nameOrPath, s.names())
	}
	return s.Fetch(ctx, spec)
}

func (s ModelStore) dir() string {
	if s.Dir != "" {
		return s.Dir
	}
	return DefaultModelDir()
}

func (s ModelStore) url(spec ModelSpec) string {
	base := s.BaseURL
	if base == "" {
		base = os.Getenv(ModelURLEnv)
	}
	if base == "" {
		base = spec.BaseURL
	}
	if base == "" {
		base = DefaultModelURL
	}
	return strings.TrimSuffix(base, "/") + "/ggml-" + spec.Name + ".bin"
}

// Fetch returns the path of spec's file in Dir, downloading it first if
// needed.
func (s ModelStore) Fetch(ctx context.Context, spec ModelSpec) (string, error) {
	dir := s.dir()
	final := filepath.Join(dir, "ggml-"+spec.Name+".bin")
	if _, err := os.Stat(final); err == nil {
		return final, nil // only a verified download is ever renamed here
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("transcribe: model cache %s: %w (set XDG_CACHE_HOME or -whisper-model-dir to a writable directory)", dir, err)
	}
	unlock, err := lockFile(ctx, final+".lock", s.Log)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return final, nil // the other fetcher finished while we waited
	}
	if err := s.download(ctx, spec, final); err != nil {
		return "", err
	}
	return final, nil
}

// lockFile takes an exclusive flock on path, polling so that ctx can end
// the wait.
func lockFile(ctx context.Context, path string, log zerolog.Logger) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("transcribe: model lock %s: %w", path, err)
	}
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("transcribe: model lock %s: %w", path, err)
		}
		if !logged {
			log.Info().Str("lock", path).Msg("whisper model: another process is downloading it; waiting")
			logged = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("transcribe: waiting for another download of %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s ModelStore) client() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}}
}

// download fetches spec into final+".part", resuming what is there, and
// renames it to final once its SHA-1 matches.
func (s ModelStore) download(ctx context.Context, spec ModelSpec, final string) error {
	part := final + ".part"
	url := s.url(spec)
	f, err := os.OpenFile(part, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("transcribe: %w", err)
	}
	defer f.Close()
	h := sha1.New()
	have, err := io.Copy(h, f) // hash what an earlier attempt left
	if err != nil {
		return fmt.Errorf("transcribe: reading %s: %w", part, err)
	}

	stall := s.StallTimeout
	if stall <= 0 {
		stall = time.Minute
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("transcribe: %w", err)
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	offline := func(err error) error {
		return fmt.Errorf("transcribe: cannot download whisper model %s from %s: %w. Offline? Fetch ggml-%s.bin on a connected machine and copy it to %s, or pass -whisper-model /path/to/model.bin (a mirror: %s)",
			spec.Name, url, err, spec.Name, final, ModelURLEnv)
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return offline(err)
	}
	defer resp.Body.Close()
	total := int64(-1)
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		total = have + resp.ContentLength
		s.Log.Info().Str("model", spec.Name).Int64("have", have).Msg("whisper model: resuming download")
	case resp.StatusCode == http.StatusOK:
		if have > 0 {
			s.Log.Info().Str("model", spec.Name).Msg("whisper model: server ignored the range; downloading from the start")
		}
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("transcribe: %w", err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("transcribe: %w", err)
		}
		h.Reset()
		have = 0
		total = resp.ContentLength
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
		// What we have is the whole file (or too long): the hash decides.
		total = have
	default:
		return offline(fmt.Errorf("HTTP %s", resp.Status))
	}
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		s.Log.Info().Str("model", spec.Name).Str("url", url).Int64("bytes", total).Str("to", final).Msg("whisper model: downloading")
		if err := copyWithProgress(rctx, cancel, f, resp.Body, h, have, total, stall, spec.Name, s.Log); err != nil {
			if cause := context.Cause(rctx); cause != nil && ctx.Err() == nil {
				err = cause
			}
			return offline(fmt.Errorf("%w (the %s kept so far resumes next time)", err, filepath.Base(part)))
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("transcribe: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != spec.SHA1 {
		os.Remove(part)
		return fmt.Errorf("transcribe: downloaded whisper model %s has SHA-1 %s, want %s: removed it; try again (a proxy or mirror may serve a wrong file, see %s)",
			spec.Name, got, spec.SHA1, ModelURLEnv)
	}
	if err := os.Rename(part, final); err != nil {
		return fmt.Errorf("transcribe: %w", err)
	}
	s.Log.Info().Str("model", spec.Name).Str("path", final).Msg("whisper model: downloaded and verified")
	return nil
}

// copyWithProgress copies body to f and h, logging progress every 5
// seconds and cancelling the request when nothing arrives for stall.
func copyWithProgress(ctx context.Context, cancel context.CancelCauseFunc, f *os.File, body io.Reader, h hash.Hash, have, total int64, stall time.Duration, name string, log zerolog.Logger) error {
	timer := time.AfterFunc(stall, func() { cancel(fmt.Errorf("no data for %v", stall)) })
	defer timer.Stop()
	buf := make([]byte, 1<<20)
	last := time.Now()
	w := io.MultiWriter(f, h)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			timer.Reset(stall)
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			have += int64(n)
			if time.Since(last) >= 5*time.Second {
				last = time.Now()
				ev := log.Info().Str("model", name).Int64("bytes", have)
				if total > 0 {
					ev = ev.Str("done", fmt.Sprintf("%.0f%%", 100*float64(have)/float64(total)))
				}
				ev.Msg("whisper model: downloading")
			}
		}
		if err == io.EOF {
			if total > 0 && have < total {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
	}
}
