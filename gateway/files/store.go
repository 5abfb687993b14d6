// Package files is the gateway's upload store: uploads stream to disk with
// a size limit and a sha256, their owner lives in Redis, and remote workers
// fetch them by transfer id with a signed, expiring URL.
package files

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"morag-gpu/contract"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"
)

const (
	// DefaultMaxAge is how long an upload is kept when its task never
	// finishes (MoRAG's cleanup service uses 24 h).
	DefaultMaxAge = 24 * time.Hour
	partPrefix    = ".part-"
)

// Errors callers map to HTTP statuses.
var (
	ErrTooLarge = errors.New("upload exceeds the size limit")
	ErrNotFound = errors.New("file not found")
	ErrOutside  = errors.New("path is outside the upload directory")
)

// idPattern is a transfer id: 32 hex digits, then "_" and the client's file
// name made safe (storedName), or (ids from before names were kept) an
// optional short extension.
var idPattern = regexp.MustCompile(`^[0-9a-f]{32}(\.[A-Za-z0-9]{1,10}|_[A-Za-z0-9_-][A-Za-z0-9._-]{0,159})?$`)

// Upload is one stored file.
type Upload struct {
	ID        string `json:"id"` // also the file name in the upload dir
	UserID    string `json:"user_id"`
	Name      string `json:"name"` // the client's file name, for Content-Disposition
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	CreatedAt int64  `json:"created_at"` // unix seconds
	TaskID    string `json:"task_id,omitempty"`
}

// TaskDone reports whether a task's result is stored, so its upload can go.
type TaskDone func(ctx context.Context, taskID string) (bool, error)

// Options configure a Store.
type Options struct {
	Dir     string
	MaxSize int64
	MaxAge  time.Duration // default 24 h
	// Secret signs download URLs; see LoadSecret.
	Secret   []byte
	TaskDone TaskDone
	Logger   zerolog.Logger
	// QuotaUser is how many bytes one user's uploads (all their keys
	// together) may hold, stored and arriving; QuotaAnonymous the same for
	// all anonymous callers together. 0 means no quota.
	QuotaUser      int64
	QuotaAnonymous int64
	// MinFreeDisk is the free space below which uploads are refused
	// (ErrDiskFull); 0 disables the check.
	MinFreeDisk int64
	// FreeDisk replaces statfs (tests).
	FreeDisk func(dir string) (int64, error)
}

// Store is the upload store.
type Store struct {
	dir  string // absolute, symlinks resolved
	pool *redis.Pool
	opts Options
	log  zerolog.Logger
	use  *usage
}

// New opens (and creates) the upload directory.
func New(pool *redis.Pool, opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("files: no upload directory; set -upload-dir")
	}
	if len(opts.Secret) < 16 {
		return nil, errors.New("files: the URL signing secret must be at least 16 bytes")
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("files: create upload directory: %w", err)
	}
	abs, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("files: upload directory: %w", err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("files: upload directory: %w", err)
	}
	s := &Store{dir: real, pool: pool, opts: opts, log: opts.Logger.With().Str("component", "files").Logger(), use: newUsage()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.loadUsage(ctx); err != nil {
		return nil, fmt.Errorf("files: account the existing uploads in %s: %w", real, err)
	}
	return s, nil
}

// Dir is the upload directory (absolute, symlinks resolved).
func (s *Store) Dir() string { return s.dir }

// Path is the file of an upload.
func (s *Store) Path(u *Upload) string { return filepath.Join(s.dir, u.ID) }

// Save streams r to disk for userID ("" for anonymous), refusing more than
// MaxSize bytes, more than userID's quota (ErrQuota) and writing below the
// free-disk floor (ErrDiskFull); nothing is left behind on error.
func (s *Store) Save(ctx context.Context, userID, name string, r io.Reader) (*Upload, error) {
	if err := s.checkDisk(0); err != nil {
		return nil, err
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(raw[:]) + "_" + storedName(name)
	f, err := os.CreateTemp(s.dir, partPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("files: create upload file: %w", err)
	}
	tmp := f.Name()
	budget := &budgetWriter{s: s, owner: userID, w: f}
	fail := func(err error) (*Upload, error) {
		f.Close()
		os.Remove(tmp)
		s.release(userID, budget.reserved)
		return nil, err
	}
	h := sha256.New()
	limit := s.opts.MaxSize
	if limit <= 0 {
		limit = 1<<63 - 1
	}
	n, err := io.Copy(io.MultiWriter(budget, h), &ctxReader{ctx: ctx, r: io.LimitReader(r, limit+1)})
	if errors.Is(err, ErrQuota) || errors.Is(err, ErrDiskFull) {
		return fail(err)
	}
	if err != nil {
		return fail(fmt.Errorf("files: receive upload: %w", err))
	}
	if n > limit {
		return fail(fmt.Errorf("%w of %d bytes", ErrTooLarge, limit))
	}
	if err := f.Close(); err != nil {
		return fail(fmt.Errorf("files: write upload: %w", err))
	}
	u := &Upload{ID: id, UserID: userID, Name: filepath.Base(name), Size: n,
		SHA256: hex.EncodeToString(h.Sum(nil)), CreatedAt: time.Now().Unix()}
	if err := os.Rename(tmp, filepath.Join(s.dir, id)); err != nil {
		return fail(fmt.Errorf("files: store upload: %w", err))
	}
	if err := s.put(ctx, u); err != nil {
		os.Remove(filepath.Join(s.dir, id))
		s.release(userID, budget.reserved)
		return nil, err
	}
	s.stored(id, userID, budget.reserved)
	return u, nil
}

func (s *Store) put(ctx context.Context, u *Upload) error {
	data, _ := json.Marshal(u)
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("files: redis: %w", err)
	}
	defer c.Close()
	ttl := int64((s.opts.MaxAge + time.Hour) / time.Second)
	if _, err := redis.DoContext(c, ctx, "SET", contract.TransferKey(u.ID), data, "EX", ttl); err != nil {
		return fmt.Errorf("files: record upload in redis: %w", err)
	}
	return nil
}

// AttachTask records which task consumes an upload, so the sweeper can
// delete it once that task's result is stored.
func (s *Store) AttachTask(ctx context.Context, u *Upload, taskID string) error {
	u.TaskID = taskID
	return s.put(ctx, u)
}

// Get returns an upload's metadata; ErrNotFound for unknown or malformed ids
// and for uploads whose file is gone.
func (s *Store) Get(ctx context.Context, id string) (*Upload, error) {
	if !idPattern.MatchString(id) {
		return nil, ErrNotFound
	}
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("files: redis: %w", err)
	}
	defer c.Close()
	raw, err := redis.Bytes(redis.DoContext(c, ctx, "GET", contract.TransferKey(id)))
	if errors.Is(err, redis.ErrNil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("files: redis: %w", err)
	}
	var u Upload
	if err := json.Unmarshal(raw, &u); err != nil || u.ID != id {
		return nil, ErrNotFound
	}
	if _, err := os.Stat(filepath.Join(s.dir, id)); err != nil {
		return nil, ErrNotFound
	}
	return &u, nil
}

// Resolve maps a legacy file_path to the upload it names. The path is
// cleaned and its symlinks resolved first; anything that does not end up
// directly inside the upload directory is ErrOutside.
func (s *Store) Resolve(ctx context.Context, path string) (*Upload, error) {
	if path == "" || strings.ContainsRune(path, 0) {
		return nil, ErrOutside
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(s.dir, path)
	}
	clean := filepath.Clean(path)
	real, err := filepath.EvalSymlinks(clean)
	if err != nil {
		// Say "outside" for paths that are outside even unresolved, so
		// probing for files elsewhere learns nothing.
		if filepath.Dir(clean) != s.dir {
			return nil, ErrOutside
		}
		return nil, ErrNotFound
	}
	if filepath.Dir(real) != s.dir {
		return nil, ErrOutside
	}
	return s.Get(ctx, filepath.Base(real))
}

// Delete removes an upload's file and metadata.
func (s *Store) Delete(ctx context.Context, id string) error {
	if !idPattern.MatchString(id) {
		return ErrNotFound
	}
	err := os.Remove(filepath.Join(s.dir, id))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("files: delete upload: %w", err)
	}
	s.forget(id)
	c, cerr := s.pool.GetContext(ctx)
	if cerr != nil {
		return fmt.Errorf("files: redis: %w", cerr)
	}
	defer c.Close()
	if _, err := redis.DoContext(c, ctx, "DEL", contract.TransferKey(id)); err != nil {
		return fmt.Errorf("files: redis: %w", err)
	}
	return nil
}

// storedName is the client's file name as MoRAG's upload handler sanitizes
// it (last path element, <>:"/\\|?* replaced, leading and trailing dots and
// spaces stripped, "uploaded_file" when nothing is left), then narrowed to
// [A-Za-z0-9._-] so the id is safe in a URL path and a shell. Upstream saves
// uploads as <8 hex>_<name>: tasks see the original name in the path
// (document ids, source_path) and its extension (type detection), and so
// do they here.
func storedName(name string) string {
	name = strings.ReplaceAll(name, "\\", "/")
	name = filepath.Base(name)
	if name == "/" || name == "." {
		name = ""
	}
	name = strings.Trim(name, ". ")
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name = b.String()
	if name == "" {
		return "uploaded_file"
	}
	if len(name) > 160 {
		// Keep the extension, as upstream does for over-long names.
		ext := filepath.Ext(name)
		if len(ext) > 20 {
			ext = ""
		}
		name = name[:160-len(ext)] + ext
	}
	return name
}

// ctxReader stops a copy when ctx ends (client gone, shutdown).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
